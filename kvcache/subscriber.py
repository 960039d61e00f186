"""ZMQ subscriber of vLLM KV events: binds the indexer endpoint, engines connect (vLLM's rule for a
concrete host), one topic per engine `kv@<pod-ip>:<port>@<model>`.

Events of one engine arrive in order on one socket. A jump in the sequence number is counted as a gap;
a sequence that goes backwards means the engine restarted, so its entries are dropped before the new
ones apply (its cache was lost with the process).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import zmq
import zmq.asyncio

from headway.kvcache.events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EventDecodeError,
    decode_batch,
    decode_seq,
)
from headway.kvcache.index import InMemoryIndex
from headway.kvcache.metrics import KvCacheMetrics

log = logging.getLogger(__name__)


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
    _last_seq: dict[str, int] = field(default_factory=dict)

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
    sock.bind(endpoint)
    log.info("KV-event subscriber bound to %s", endpoint)
    try:
        while True:
            frames = await sock.recv_multipart()
            if len(frames) != 3:
                ingest.metrics.decode_errors.inc()
                continue
            ingest.apply(*frames)
    finally:
        sock.close(linger=0)
