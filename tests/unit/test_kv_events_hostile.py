"""Malformed, truncated and hostile KV-event frames: the subscriber never stops, and what one engine sends
never poisons what the index knows of another (or of itself, once it sends valid events again).

Frames travel over real ZMQ sockets where the socket matters (frame counts, the replay answer)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import zmq
import zmq.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from headway.devenv import procs
from headway.kvcache.events import MAX_BLOCK_SIZE, BlockStored, EventBatch, encode_batch, encode_seq
from headway.kvcache.index import InMemoryIndex
from headway.kvcache.keys import block_keys, root_key
from headway.kvcache.metrics import KvCacheMetrics
from headway.kvcache.subscriber import KvEventIngest, subscribe

MODEL = "m"
GOOD, BAD = "127.0.0.1:8000", "127.0.0.2:8000"
BLOCK = 4
TOKENS = list(range(100, 100 + 3 * BLOCK))


def topic(pod: str) -> bytes:
    return f"kv@{pod}@{MODEL}".encode()


def stored(hashes: list[int], tokens: list[int], block_size: int = BLOCK) -> bytes:
    ev = BlockStored(hashes, None, tokens, block_size, None, "GPU", None)
    return encode_batch(EventBatch(1.0, [ev], 0))


def held(index: InMemoryIndex, pod: str) -> int:
    """Blocks of TOKENS the index says `pod` holds, as the gateway would ask."""
    keys = block_keys(TOKENS, BLOCK, root_key(MODEL))
    return index.longest_prefix(keys, [pod]).get(pod, 0)


def ingest() -> KvEventIngest:
    return KvEventIngest(InMemoryIndex(), KvCacheMetrics(CollectorRegistry()))


# Anything msgpack can carry, nested a little.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
anything = st.recursive(
    scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=8
)
ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
# Events shaped like vLLM's, with hostile values where the index does arithmetic.
event_maps = st.fixed_dictionaries(
    {"type": st.sampled_from(["BlockStored", "BlockRemoved", "AllBlocksCleared", "Bogus"])},
    optional={
        "block_hashes": st.lists(ints | anything, max_size=4),
        "parent_block_hash": ints | anything,
        "token_ids": st.lists(ints, max_size=12) | anything,
        "block_size": st.sampled_from([0, -1, 1, BLOCK, MAX_BLOCK_SIZE + 1, 2**40]) | anything,
        "lora_id": anything,
        "medium": anything,
        "lora_name": anything,
    },
)
legacy_arrays = st.tuples(
    st.sampled_from(["BlockStored", "BlockRemoved", "AllBlocksCleared"]),
    st.lists(ints, max_size=3),
    ints | st.none(),
    st.lists(ints, max_size=12),
    st.sampled_from([0, -1, BLOCK, 2**40]),
).map(list)
# A valid BlockStored with one field made hostile: what reaches the index's arithmetic unless refused.
VALID = {
    "type": "BlockStored",
    "block_hashes": [11, 12, 13],
    "parent_block_hash": None,
    "token_ids": TOKENS,
    "block_size": BLOCK,
    "lora_id": None,
    "medium": "GPU",
    "lora_name": None,
}
HOSTILE = {
    "block_hashes": st.lists(ints | st.binary(max_size=40), max_size=5) | anything,
    "parent_block_hash": ints | anything,
    "token_ids": st.lists(st.sampled_from([0, 1, -1, 2**32 - 1, 2**32, 2**63]), max_size=14) | anything,
    "block_size": st.sampled_from([0, -1, -BLOCK, 1, MAX_BLOCK_SIZE, MAX_BLOCK_SIZE + 1, 2**40]) | anything,
    "lora_name": st.text(max_size=4) | anything,
}
near_valid = st.sampled_from(sorted(HOSTILE)).flatmap(
    lambda field: HOSTILE[field].map(lambda value: {**VALID, field: value})
)
batches = st.tuples(
    st.floats() | anything,
    st.lists(near_valid | near_valid | event_maps | legacy_arrays | anything, max_size=4),
    st.none() | anything,
).map(list)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    raw = msgspec.msgpack.encode(draw(batches | anything))
    cut = draw(st.none() | st.integers(min_value=0, max_value=len(raw)))
    return raw if cut is None else raw[:cut]


# Frames whose envelope is right (topic, sequence, batch) and whose events are near-valid: the ones that
# reach the index unless the decoder refuses them.
enveloped = st.tuples(
    st.just(topic(BAD)),
    st.integers(min_value=1, max_value=2**40).map(encode_seq),
    st.lists(near_valid, min_size=1, max_size=3).map(lambda evs: msgspec.msgpack.encode([1.0, evs, 0])),
)
frames = enveloped | st.tuples(
    st.sampled_from([topic(BAD), b"kv@" + BAD.encode(), b"kv@@m", b"\xff\xfe", b""]),
    st.sampled_from([encode_seq(1), encode_seq(2**62), b"", b"\x00" * 9]) | st.binary(max_size=9),
    payloads() | st.binary(max_size=64),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames, min_size=1, max_size=6))
def test_hostile_frames_never_raise_and_never_poison_the_index(hostile: list[tuple[bytes, bytes, bytes]]) -> None:
    ing = ingest()
    ing.receive(topic(GOOD), encode_seq(1), stored([1, 2, 3], TOKENS))
    before = ing.index.entries()
    for f in hostile:
        ing.receive(*f)
    # what the good engine said still stands, untouched
    assert held(ing.index, GOOD) == 3
    assert {k for k, holders in ing.index.entries() if GOOD in holders} == {k for k, h in before if GOOD in h}
    # block sizes the gateway will compute keys with are ones a valid batch reported
    assert all(0 < bs <= MAX_BLOCK_SIZE for bs in ing.block_sizes.values()), ing.block_sizes
    # and the hostile engine's own next valid batch applies and is found
    ing.receive(topic(BAD), encode_seq(2**63 - 1), stored([7, 8, 9], TOKENS))
    assert held(ing.index, BAD) == 3


def test_values_the_index_cannot_pack_are_refused_whole() -> None:
    ing = ingest()
    for n, (tokens, bs) in enumerate([([-1] * 12, BLOCK), ([2**32] * 12, BLOCK), (TOKENS, 0), (TOKENS, -4)], 1):
        ing.receive(topic(BAD), encode_seq(n), stored([1, 2, 3], tokens, bs))
    assert ing.metrics.decode_errors._value.get() == 4
    assert len(ing.index) == 0 and not ing.block_sizes


async def _until(cond: Any, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():  # noqa: ASYNC110 - the condition is the ingest's state, which signals nothing
            await asyncio.sleep(0.02)


def test_the_subscription_outlives_bad_frames_on_a_real_socket() -> None:
    """Wrong frame counts, garbage and refused batches arrive over ZMQ before a valid batch: the valid one
    lands and the subscription is still running."""
    port = procs.free_port()
    ing = ingest()

    async def run() -> None:
        task = asyncio.create_task(subscribe(f"tcp://127.0.0.1:{port}", ing))
        pub = zmq.asyncio.Context.instance().socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.connect(f"tcp://127.0.0.1:{port}")
        try:
            bad = [
                [topic(BAD)],
                [topic(BAD), encode_seq(1), b"x", b"y"],
                [topic(BAD), b"short", b"\x93\x01"],
                [topic(BAD), encode_seq(2), b"\xc1garbage"],
                [topic(BAD), encode_seq(3), stored([1], [-5] * BLOCK)],
                [topic(BAD), encode_seq(4), stored([1], TOKENS, 0)],
            ]

            async def send_until_received() -> None:
                # a PUB drops what it sends before the subscription reaches it: resend the round until the
                # valid batch at its end has landed
                seq = 10
                while held(ing.index, GOOD) < 3:
                    for f in bad:
                        await pub.send_multipart(f)
                    seq += 1
                    await pub.send_multipart([topic(GOOD), encode_seq(seq), stored([1, 2, 3], TOKENS)])
                    await asyncio.sleep(0.05)

            async with asyncio.timeout(10):
                await send_until_received()
            assert not task.done()
            assert ing.metrics.decode_errors._value.get() >= len(bad)
        finally:
            pub.close(linger=0)
            task.cancel()

    asyncio.run(run())


def test_a_malformed_replay_answer_leaves_no_engine_stuck() -> None:
    """The engine's replay socket answers with a single frame: the replay fails and is counted, and the
    frames held for it (and every later one) still apply."""
    replay_port = procs.free_port()
    ing = KvEventIngest(InMemoryIndex(), KvCacheMetrics(CollectorRegistry()), replay_port=replay_port)

    async def run() -> None:
        router = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.bind(f"tcp://127.0.0.1:{replay_port}")
        try:

            async def answer_badly() -> None:
                ident, *_ = await router.recv_multipart()
                await router.send_multipart([ident, b"only-one-frame"])

            server = asyncio.create_task(answer_badly())
            ing.receive(topic(GOOD), encode_seq(1), stored([1], TOKENS[:BLOCK]))
            ing.receive(topic(GOOD), encode_seq(5), stored([1, 2, 3], TOKENS))  # a gap: replay asked
            await server
            await _until(lambda: not ing._tasks)
            ing.receive(topic(GOOD), encode_seq(6), stored([9], list(range(BLOCK))))
        finally:
            router.close(linger=0)

    asyncio.run(run())
    assert ing.metrics.replays.labels("failed")._value.get() == 1
    assert held(ing.index, GOOD) == 3
    assert ing._last_seq[GOOD.split("@")[0]] == 6
