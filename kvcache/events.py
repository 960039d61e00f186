"""vLLM's KV-cache event wire format: what engines publish over ZMQ, in both encodings.

Frames: `[topic, 8-byte big-endian sequence number, msgpack payload]`. The payload is a batch
`[ts, [event, …], data_parallel_rank]`. Since vLLM PR #42892 (v0.26) each event is a msgpack map tagged
by `"type"`; before it, an array led by the type name with fields in declaration order. The decoder
accepts both (and a batch encoded as a map), because a fleet may run mixed engine versions. Block
hashes are uint64 ints (vLLM's default) or bytes.

This module lives with its consumer (the index) and the simulator imports it to emit.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

BlockHash = int | bytes
TokenId = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
"""A token id as the index packs it (4 bytes): a frame with any other is refused whole, not half-applied."""
MAX_BLOCK_SIZE = 65536
BlockSize = Annotated[int, msgspec.Meta(gt=0, le=MAX_BLOCK_SIZE)]
"""Tokens per block (vLLM's are 1-256; hybrid models' larger): never 0 or negative, which would divide
the index's arithmetic by nothing or make every request's keys empty for that engine."""


class KVCacheEvent(msgspec.Struct, omit_defaults=True, gc=False, tag=True):
    """Base of the tagged event union; the tag is the class name, as in vLLM."""


class BlockStored(KVCacheEvent):
    block_hashes: list[BlockHash]
    parent_block_hash: BlockHash | None
    token_ids: list[TokenId]
    block_size: BlockSize
    lora_id: int | None
    medium: str | None
    lora_name: str | None
    extra_keys: list[tuple[Any, ...] | None] | None = None
    group_idx: int | None = None
    kv_cache_spec_kind: str | None = None
    kv_cache_spec_sliding_window: int | None = None


class BlockRemoved(KVCacheEvent):
    block_hashes: list[BlockHash]
    medium: str | None
    group_idx: int | None = None


class AllBlocksCleared(KVCacheEvent):
    pass


Event = BlockStored | BlockRemoved | AllBlocksCleared


class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    ts: float
    events: list[Event]
    data_parallel_rank: int | None = None


class LegacyBlockStored(BlockStored, array_like=True, tag="BlockStored"):
    """Pre-#42892 array encoding: `["BlockStored", hashes, parent, tokens, block_size, …]`."""


class LegacyBlockRemoved(BlockRemoved, array_like=True, tag="BlockRemoved"):
    pass


class LegacyAllBlocksCleared(AllBlocksCleared, array_like=True, tag="AllBlocksCleared"):
    pass


class LegacyEventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    ts: float
    events: list[LegacyBlockStored | LegacyBlockRemoved | LegacyAllBlocksCleared]
    data_parallel_rank: int | None = None


class EventDecodeError(ValueError):
    """The payload is not a vLLM KV-event batch in either encoding."""


_ENCODER = msgspec.msgpack.Encoder()
_MODERN = msgspec.msgpack.Decoder(EventBatch)
_LEGACY = msgspec.msgpack.Decoder(LegacyEventBatch)
_ANY = msgspec.msgpack.Decoder()
_SEQ_BYTES = 8
REPLAY_END = (-1).to_bytes(_SEQ_BYTES, "big", signed=True)


def encode_batch(batch: EventBatch | LegacyEventBatch) -> bytes:
    return _ENCODER.encode(batch)


def encode_seq(seq: int) -> bytes:
    return seq.to_bytes(_SEQ_BYTES, "big")


def decode_seq(raw: bytes) -> int:
    if len(raw) != _SEQ_BYTES:
        raise EventDecodeError(f"sequence frame has {len(raw)} bytes, want {_SEQ_BYTES}")
    return int.from_bytes(raw, "big", signed=True)


def _from_legacy(ev: LegacyBlockStored | LegacyBlockRemoved | LegacyAllBlocksCleared) -> Event:
    if isinstance(ev, LegacyBlockStored):
        return BlockStored(**{f: getattr(ev, f) for f in BlockStored.__struct_fields__})
    if isinstance(ev, LegacyBlockRemoved):
        return BlockRemoved(**{f: getattr(ev, f) for f in BlockRemoved.__struct_fields__})
    return AllBlocksCleared()


def decode_batch(payload: bytes) -> EventBatch:
    """Decode a batch of either encoding into the modern structs, or raise EventDecodeError."""
    try:
        return _MODERN.decode(payload)
    except (msgspec.MsgspecError, ValueError):
        pass
    try:
        legacy = _LEGACY.decode(payload)
        return EventBatch(legacy.ts, [_from_legacy(e) for e in legacy.events], legacy.data_parallel_rank)
    except (msgspec.MsgspecError, ValueError):
        pass
    try:
        raw = _ANY.decode(payload)
        if isinstance(raw, dict) and isinstance(raw.get("events"), list):
            events = msgspec.convert(raw["events"], list[Event])
            rank = raw.get("data_parallel_rank")
            return EventBatch(float(raw.get("ts", 0.0)), events, rank if isinstance(rank, int) else None)
    except (msgspec.MsgspecError, ValueError, TypeError) as e:
        raise EventDecodeError(f"not a KV-event batch: {e}") from None
    raise EventDecodeError("not a KV-event batch in the map or the legacy array encoding")
