"""Start the same engine command line as the simulator or as real vLLM on CPU, with a KV-event subscriber.

Both targets get vLLM's CPU settings: block size 128 (the CPU backend's; the simulator is told so
explicitly), 40 KV blocks (so eviction happens within a test), prefix caching, prompt-token details,
and the `sha256_cbor` block hash with one PYTHONHASHSEED (so the keys of the two can be checked against
one formula).
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from headway.devenv import procs
from headway.devenv.engines import VLLM_CPU_ENV, VLLM_PYTHON, kv_events_config, sim_argv, vllm_argv
from headway.kvcache.events import EventBatch, decode_batch, decode_seq

SERVED = "tiny"
BLOCK_SIZE = 128
NUM_BLOCKS = 40
MAX_MODEL_LEN = 2048
HASH_SEED = "7"


@dataclass
class Received:
    topic: str
    seq: int
    batch: EventBatch


@dataclass
class Subscriber:
    """A ZMQ SUB that binds (engines connect to a concrete host) and records every batch."""

    endpoint: str
    received: list[Received] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Subscriber:
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"kv@")
        self._sock.setsockopt(zmq.RCVTIMEO, 100)
        self._sock.bind(self.endpoint)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                topic, seq, payload = self._sock.recv_multipart()
            except zmq.Again:
                continue
            try:
                self.received.append(Received(topic.decode(), decode_seq(seq), decode_batch(payload)))
            except ValueError as e:
                self.errors.append(str(e))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close(linger=0)
        self._ctx.term()


@dataclass
class EngineUnderTest:
    kind: str
    url: str
    port: int
    topic: str
    replay_endpoint: str
    events: Subscriber
    pid: int
    log: Path

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as r:
            return r.read().decode()


def start_engine(kind: str, model_dir: Path, workdir: Path, timeout_s: float = 420.0) -> EngineUnderTest:
    port, ev_port, replay_port = procs.free_port(), procs.free_port(), procs.free_port()
    topic = f"kv@127.0.0.1:{port}@{SERVED}"
    replay = f"tcp://127.0.0.1:{replay_port}"
    sub = Subscriber(f"tcp://127.0.0.1:{ev_port}").start()
    kv = kv_events_config(f"tcp://127.0.0.1:{ev_port}", port, model=SERVED, replay_endpoint=replay)
    args = [
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--enable-prefix-caching",
        "--enable-prompt-tokens-details",
        "--num-gpu-blocks-override",
        str(NUM_BLOCKS),
        "--kv-events-config",
        kv,
        "--prefix-caching-hash-algo",
        "sha256_cbor",
    ]
    env = {**os.environ, "PYTHONHASHSEED": HASH_SEED}
    if kind == "vllm":
        assert VLLM_PYTHON.exists(), "real vLLM is not installed: run `make vllm`"
        argv = vllm_argv(port, *args, model_dir=model_dir, served=SERVED)
        env.update(VLLM_CPU_ENV)
    else:
        extra = ("--host", "127.0.0.1", *args, "--block-size", str(BLOCK_SIZE))
        argv = sim_argv(port, *extra, model_dir=model_dir, served=SERVED)
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{kind}.log"
    proc = procs.spawn(argv, log, env=env, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sub.stop()
            raise RuntimeError(f"{kind} exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return EngineUnderTest(kind, url, port, topic, replay, sub, proc.pid, log)
        except OSError:
            pass
        time.sleep(0.5)
    procs.stop(proc.pid)
    sub.stop()
    raise RuntimeError(f"{kind} not healthy after {timeout_s}s: {log.read_text()[-3000:]}")


def stop_engine(e: EngineUnderTest) -> None:
    procs.stop(e.pid, grace_s=20)
    e.events.stop()


def post(url: str, body: Any, *, raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def stream_events(url: str, body: dict[str, Any]) -> list[str]:
    """The raw SSE event payloads (after `data: `), checking the framing as it goes."""
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        raw = r.read().decode()
    assert raw.endswith("\n\n"), raw[-50:]
    events = raw[:-2].split("\n\n")
    assert all(e.startswith("data: ") for e in events), events
    return [e[len("data: ") :] for e in events]
