"""ZMQ publisher of KV events with vLLM's socket rules, framing and replay.

- PUB binds when the endpoint has a wildcard (`*`, `::`) or is ipc/inproc, and connects otherwise.
- Each batch is sent as `[topic, seq as 8-byte big-endian, msgpack]`, seq counting from 0.
- The last `buffer_steps` batches are kept; a ROUTER at `replay_endpoint` answers a request frame holding
  a start seq with one `(seq, payload)` message per buffered batch from there, then `(-1, b"")`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque

import zmq
import zmq.asyncio

from headway.kvcache.events import (
    REPLAY_END,
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    Event,
    EventBatch,
    LegacyAllBlocksCleared,
    LegacyBlockRemoved,
    LegacyBlockStored,
    LegacyEventBatch,
    decode_seq,
    encode_batch,
    encode_seq,
)

log = logging.getLogger(__name__)


def binds(endpoint: str) -> bool:
    """vLLM's rule: a wildcard host or a local transport means bind; a concrete host means connect."""
    return "*" in endpoint or "::" in endpoint or endpoint.startswith(("ipc://", "inproc://"))


def _legacy(ev: Event) -> LegacyBlockStored | LegacyBlockRemoved | LegacyAllBlocksCleared:
    if isinstance(ev, BlockStored):
        return LegacyBlockStored(**{f: getattr(ev, f) for f in BlockStored.__struct_fields__})
    if isinstance(ev, BlockRemoved):
        return LegacyBlockRemoved(**{f: getattr(ev, f) for f in BlockRemoved.__struct_fields__})
    assert isinstance(ev, AllBlocksCleared)
    return LegacyAllBlocksCleared()


class KvEventPublisher:
    def __init__(
        self,
        endpoint: str,
        topic: str,
        *,
        replay_endpoint: str | None = None,
        buffer_steps: int = 10_000,
        hwm: int = 100_000,
        legacy_format: bool = False,
    ) -> None:
        self._ctx = zmq.asyncio.Context()
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.setsockopt(zmq.SNDHWM, hwm)
        self._pub.setsockopt(zmq.LINGER, 0)
        (self._pub.bind if binds(endpoint) else self._pub.connect)(endpoint)
        self._topic = topic.encode()
        self._seq = 0
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer_steps)
        self._legacy = legacy_format
        self._replay_endpoint = replay_endpoint
        self.dropped = 0

    def publish(self, events: list[Event]) -> None:
        if self._legacy:
            payload = encode_batch(LegacyEventBatch(time.time(), [_legacy(e) for e in events], 0))
        else:
            payload = encode_batch(EventBatch(time.time(), events, 0))
        seq = self._seq
        self._seq += 1
        self._buffer.append((seq, payload))
        try:
            self._pub.send_multipart((self._topic, encode_seq(seq), payload), flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.dropped += 1

    async def serve_replay(self) -> None:
        """Answer replay requests until cancelled (no-op without a replay endpoint)."""
        if not self._replay_endpoint:
            return
        router = self._ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.bind(self._replay_endpoint)
        try:
            while True:
                frames = await router.recv_multipart()
                identity, start_raw = frames[0], frames[-1]
                try:
                    start = decode_seq(start_raw)
                except ValueError:
                    log.warning("replay request with a malformed start seq (%d bytes)", len(start_raw))
                    continue
                for seq, payload in list(self._buffer):
                    if seq >= start:
                        await router.send_multipart((identity, b"", encode_seq(seq), payload))
                await router.send_multipart((identity, b"", REPLAY_END, b""))
        finally:
            router.close(linger=0)

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._pub.close(linger=0)
        self._ctx.term()
