"""ZMQ subscriber of vLLM KV events: binds the indexer endpoint, engines connect (vLLM's rule for a
concrete host), one topic per engine `kv@<pod-ip>:<port>@<model>`.

Events of one engine arrive in order on one socket. A jump in the sequence number is counted as a gap;
a sequence that goes backwards means the engine restarted, so its entries are dropped before the new
ones apply (its cache was lost with the process).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import zmq
import zmq.asyncio

from headway.kvcache.events import (
    REPLAY_END,
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EventDecodeError,
    decode_batch,
    decode_seq,
    encode_seq,
)
from headway.kvcache.index import InMemoryIndex
from headway.kvcache.metrics import KvCacheMetrics

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 << 20
"""The largest frame accepted (vLLM batches are kilobytes to a few megabytes)."""


def parse_topic(topic: str) -> tuple[str, str] | None:
    """`kv@<ip>:<port>@<model>` → (pod id `ip:port`, model); None for other topics."""
    if not topic.startswith("kv@"):
        return None
    pod, sep, model = topic[3:].partition("@")
    return (pod, model) if sep and pod and model else None


@dataclass
class KvEventIngest:
    index: InMemoryIndex
    metrics: KvCacheMetrics
    block_sizes: dict[str, int] = field(default_factory=dict)
    """Block size per pod, as its events report it (the gateway computes request keys with it)."""
    replay_port: int | None = None
    """Engines' replay socket port (vLLM's `replay_endpoint` bound on the pod); None: gaps are only counted."""
    replay_timeout_s: float = 2.0
    _last_seq: dict[str, int] = field(default_factory=dict)
    _replaying: dict[str, list[tuple[bytes, bytes, bytes]]] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def receive(self, topic_raw: bytes, seq_raw: bytes, payload: bytes) -> None:
        """Apply a frame, unless it reveals a gap that the engine's replay socket can fill: then hold this
        engine's frames, fetch the missed batches, and apply everything in sequence order."""
        parsed = parse_topic(topic_raw.decode(errors="replace"))
        if parsed is None:
            return
        pod = parsed[0]
        if pod in self._replaying:
            self._replaying[pod].append((topic_raw, seq_raw, payload))
            return
        last = self._last_seq.get(pod)
        try:
            seq = decode_seq(seq_raw)
        except EventDecodeError:
            self.metrics.decode_errors.inc()
            return
        if self.replay_port and last is not None and seq > last + 1:
            self._replaying[pod] = [(topic_raw, seq_raw, payload)]
            task = asyncio.get_running_loop().create_task(self._replay(pod, topic_raw, last + 1))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        self.apply(topic_raw, seq_raw, payload)

    async def _replay(self, pod: str, topic: bytes, start: int) -> None:
        ip = pod.rsplit(":", 1)[0]
        sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        got: list[tuple[int, bytes, bytes]] = []
        outcome = "ok"
        try:
            sock.connect(f"tcp://{ip}:{self.replay_port}")
            await sock.send_multipart([b"", encode_seq(start)])
            async with asyncio.timeout(self.replay_timeout_s):
                while True:
                    frames = await sock.recv_multipart()
                    if len(frames) < 2:
                        raise EventDecodeError(f"replay answered {len(frames)} frame(s), want [seq, payload]")
                    seq_raw, payload = frames[-2], frames[-1]
                    if seq_raw == REPLAY_END:
                        break
                    got.append((decode_seq(seq_raw), seq_raw, payload))
        except (TimeoutError, zmq.ZMQError, EventDecodeError) as e:
            outcome = "failed"
            log.warning("replay from %s (from seq %d) failed: %s; the gap stays", pod, start, e)
        finally:
            sock.close(linger=0)
            self.metrics.replays.labels(outcome).inc()
        for _, seq_raw, payload in sorted(got):
            self._apply_in_order(topic, seq_raw, payload)
        for frame in self._replaying.pop(pod, []):
            self._apply_in_order(*frame)

    def _apply_in_order(self, topic: bytes, seq_raw: bytes, payload: bytes) -> None:
        """Apply unless already applied (a replayed batch may also arrive live)."""
        pod = (parse_topic(topic.decode(errors="replace")) or ("", ""))[0]
        last = self._last_seq.get(pod)
        if last is None or decode_seq(seq_raw) > last:
            self.apply(topic, seq_raw, payload)

    def apply(self, topic_raw: bytes, seq_raw: bytes, payload: bytes) -> None:
        parsed = parse_topic(topic_raw.decode(errors="replace"))
        if parsed is None:
            return
        pod, model = parsed
        try:
            seq = decode_seq(seq_raw)
            batch = decode_batch(payload)
        except EventDecodeError:
            self.metrics.decode_errors.inc()
            return
        last = self._last_seq.get(pod)
        if last is not None:
            if seq <= last:
                log.info("engine %s restarted its event sequence (%d after %d); dropping its entries", pod, seq, last)
                self.index.clear_pod(pod)
            elif seq > last + 1:
                self.metrics.gaps.inc(seq - last - 1)
        self._last_seq[pod] = seq
        for ev in batch.events:
            if isinstance(ev, BlockStored):
                self.block_sizes[pod] = ev.block_size
                n = self.index.store(
                    pod, model, ev.block_hashes, ev.parent_block_hash, ev.token_ids, ev.block_size, ev.lora_name
                )
                self.metrics.blocks.inc(n)
                self.metrics.events.labels("BlockStored").inc()
            elif isinstance(ev, BlockRemoved):
                self.index.remove(pod, ev.block_hashes)
                self.metrics.events.labels("BlockRemoved").inc()
            elif isinstance(ev, AllBlocksCleared):
                self.index.clear_pod(pod)
                self.metrics.events.labels("AllBlocksCleared").inc()
        self.metrics.lag.observe(max(0.0, time.time() - batch.ts))
        self.metrics.keys.set(len(self.index))

    def forget_pod(self, pod: str) -> None:
        """A pod went away: its blocks went with it."""
        self.index.clear_pod(pod)
        self._last_seq.pop(pod, None)
        self.block_sizes.pop(pod, None)


async def subscribe(endpoint: str, ingest: KvEventIngest) -> None:
    """Receive until cancelled."""
    ctx = zmq.asyncio.Context.instance()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"kv@")
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.setsockopt(zmq.LINGER, 0)
    # a peer sending a larger message is disconnected: one hostile frame cannot take the indexer's memory
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    sock.bind(endpoint)
    log.info("KV-event subscriber bound to %s", endpoint)
    try:
        while True:
            frames = await sock.recv_multipart()
            if len(frames) != 3:
                ingest.metrics.decode_errors.inc()
                continue
            try:
                ingest.receive(*frames)
            except Exception:  # one engine's bad frame must not end every engine's subscription
                ingest.metrics.decode_errors.inc()
                log.exception("KV-event frame on topic %r not applied", frames[0][:200])
    finally:
        sock.close(linger=0)
