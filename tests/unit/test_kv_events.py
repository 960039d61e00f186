"""vLLM's KV-event wire format: both encodings decode to the same events; garbage fails cleanly."""

from __future__ import annotations

import contextlib

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from headway.kvcache.events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EventBatch,
    EventDecodeError,
    LegacyEventBatch,
    decode_batch,
    encode_batch,
)
from headway.sim.kv_publisher import _legacy, binds

u64 = st.integers(min_value=0, max_value=2**64 - 1)
stored = st.builds(
    lambda hashes, parent, bs, lora: BlockStored(
        block_hashes=hashes,
        parent_block_hash=parent,
        token_ids=list(range(len(hashes) * bs)),
        block_size=bs,
        lora_id=None,
        medium="GPU",
        lora_name=lora,
        extra_keys=[(lora,) if lora else None for _ in hashes],
        group_idx=0,
        kv_cache_spec_kind="full_attention",
    ),
    st.lists(u64, min_size=1, max_size=4),
    st.none() | u64,
    st.sampled_from([1, 16, 128]),
    st.none() | st.just("a"),
)
removed = st.builds(lambda hs: BlockRemoved(block_hashes=hs, medium="GPU", group_idx=0), st.lists(u64, min_size=1))
events = st.lists(stored | removed | st.just(AllBlocksCleared()), max_size=6)


@given(events, st.floats(min_value=0, max_value=2e9, allow_nan=False))
def test_map_and_legacy_encodings_decode_to_the_same_events(evs: list, ts: float) -> None:
    modern = decode_batch(encode_batch(EventBatch(ts, evs, 0)))
    legacy = decode_batch(encode_batch(LegacyEventBatch(ts, [_legacy(e) for e in evs], 0)))
    assert modern.events == evs == legacy.events
    assert modern.ts == legacy.ts == ts


def test_map_encoding_is_vllms_tagged_map() -> None:
    ev = BlockStored(
        block_hashes=[2**63 + 5],
        parent_block_hash=None,
        token_ids=[1, 2],
        block_size=2,
        lora_id=None,
        medium="GPU",
        lora_name=None,
        extra_keys=[None],
        group_idx=0,
        kv_cache_spec_kind="full_attention",
    )
    raw = msgspec.msgpack.decode(encode_batch(EventBatch(1.5, [ev], 0)))
    assert raw[0] == 1.5 and raw[2] == 0
    assert raw[1][0] == {
        "type": "BlockStored",
        "block_hashes": [2**63 + 5],
        "parent_block_hash": None,
        "token_ids": [1, 2],
        "block_size": 2,
        "lora_id": None,
        "medium": "GPU",
        "lora_name": None,
        "extra_keys": [None],
        "group_idx": 0,
        "kv_cache_spec_kind": "full_attention",
    }
    legacy = msgspec.msgpack.decode(encode_batch(LegacyEventBatch(1.5, [_legacy(ev)], 0)))
    assert legacy[1][0][:5] == ["BlockStored", [2**63 + 5], None, [1, 2], 2]


def test_a_batch_encoded_as_a_map_is_accepted_too() -> None:
    payload = msgspec.msgpack.encode({"ts": 2.0, "events": [{"type": "AllBlocksCleared"}], "data_parallel_rank": 0})
    assert decode_batch(payload).events == [AllBlocksCleared()]


@given(st.binary(max_size=512))
def test_garbage_raises_only_the_decoders_error(raw: bytes) -> None:
    with contextlib.suppress(EventDecodeError):
        decode_batch(raw)


def test_publisher_binds_only_on_wildcards_and_local_transports() -> None:
    assert binds("tcp://*:5557") and binds("ipc:///tmp/kv") and binds("tcp://[::]:5557")
    assert not binds("tcp://127.0.0.1:5557") and not binds("tcp://indexer.ns.svc:5557")
