"""A missed KV-event batch is fetched from the engine's replay socket and applied in order.

The lost batch is a fault injection (`drop_one_frame`): a healthy ZMQ link on one machine does not lose
messages on demand. Everything else is real: the simulator's publisher and replay socket, the decoder,
the index."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from pathlib import Path

import zmq
from prometheus_client import CollectorRegistry

from headway.devenv import procs
from headway.devenv.engines import kv_events_config, sim_argv
from headway.kvcache.index import InMemoryIndex
from headway.kvcache.metrics import KvCacheMetrics
from headway.kvcache.subscriber import KvEventIngest
from tests.conftest import eventually
from tests.e2e.fleet import wait_http


def drop_one_frame(frames: list[list[bytes]], index: int) -> list[list[bytes]]:
    return frames[:index] + frames[index + 1 :]


def test_gap_is_filled_from_the_engine_replay_socket(tmp_path: Path) -> None:
    port, ev_port, replay_port = procs.free_port(), procs.free_port(), procs.free_port()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"kv@")
    sub.setsockopt(zmq.RCVTIMEO, 100)
    sub.bind(f"tcp://127.0.0.1:{ev_port}")
    frames: list[list[bytes]] = []
    stop = threading.Event()

    def collect() -> None:
        while not stop.is_set():
            try:
                frames.append(sub.recv_multipart())
            except zmq.Again:
                continue

    t = threading.Thread(target=collect, daemon=True)
    t.start()
    kv = kv_events_config(f"tcp://127.0.0.1:{ev_port}", port, replay_endpoint=f"tcp://127.0.0.1:{replay_port}")
    pid = procs.spawn(
        sim_argv(port, "--block-size", "16", "--kv-events-config", kv), tmp_path / "sim.log", cwd=tmp_path
    ).pid
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        for i in range(4):
            body = json.dumps(
                {"model": "tiny", "prompt": f"Prompt {i} about replayed events. " * 12, "max_tokens": 1}
            ).encode()
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/completions", body, {"Content-Type": "application/json"}
            )
            urllib.request.urlopen(req, timeout=30).read()
        eventually(lambda: len(frames) >= 4, timeout_s=10, what="4 event batches")
        stop.set()
        t.join()

        def ingest_all(fs: list[list[bytes]]) -> KvEventIngest:
            ingest = KvEventIngest(InMemoryIndex(), KvCacheMetrics(CollectorRegistry()), replay_port=replay_port)

            async def run() -> None:
                for f in fs:
                    ingest.receive(*f)
                while ingest._tasks:
                    await asyncio.gather(*list(ingest._tasks))

            asyncio.run(run())
            return ingest

        full, repaired = ingest_all(frames), ingest_all(drop_one_frame(frames, 1))
        assert repaired.index.entries() == full.index.entries() and len(full.index) > 0
        assert repaired.metrics.replays.labels("ok")._value.get() == 1
        assert repaired.metrics.gaps._value.get() == 0
    finally:
        procs.stop(pid)
        sub.close(linger=0)
        ctx.term()
