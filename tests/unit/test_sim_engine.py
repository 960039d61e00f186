"""The simulated engine on virtual time: prefix hits skip prefill, queues grow, blocks run out and preempt."""

from __future__ import annotations

import asyncio
import random

import pytest

from headway.kvcache.events import BlockRemoved, BlockStored, Event
from headway.sim.blocks import BlockPool, chain_key
from headway.sim.engine import Engine, EngineLimits, EngineObserver, Request, output_plan
from headway.sim.profiles import PRESETS, GpuProfile

PROFILE = GpuProfile(
    name="test",
    step_overhead_s=0.001,
    prefill_s_per_token=0.001,
    decode_s_per_seq=0.0001,
    kv_read_s_per_token=0.0,
    kv_cache_tokens=10_000,
)


class VirtualTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.now += s
        await asyncio.sleep(0)


class Recorder(EngineObserver):
    def __init__(self) -> None:
        self.preempted: list[str] = []
        self.max_waiting = 0
        self.hits: dict[str, int] = {}

    def on_preempt(self, req: Request) -> None:
        self.preempted.append(req.request_id)

    def on_step(self, tokens: int, running: int, waiting: int, usage: float) -> None:
        self.max_waiting = max(self.max_waiting, waiting)

    def on_schedule(self, req: Request, queued_s: float, hit_tokens: int) -> None:
        self.hits[req.request_id] = hit_tokens


def run(
    engine: Engine, vt: VirtualTime, prompts: list[list[int]], max_tokens: int = 4, lora: str | None = None
) -> list[Request]:
    async def main() -> list[Request]:
        task = asyncio.create_task(engine.run())
        reqs = [
            Request(f"r{i}", p, max_tokens, None, lora, random.Random(i), arrival=vt.now) for i, p in enumerate(prompts)
        ]
        for r in reqs:
            engine.submit(r)
        for r in reqs:
            while await r.queue.get() is not None:
                pass
        task.cancel()
        return reqs

    return asyncio.run(main())


def make(
    vt: VirtualTime,
    *,
    blocks: int = 64,
    block_size: int = 16,
    max_num_seqs: int = 8,
    profile: GpuProfile = PROFILE,
    events: list[Event] | None = None,
    observer: EngineObserver | None = None,
) -> Engine:
    limits = EngineLimits(
        block_size=block_size,
        num_blocks=blocks,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=2048,
        max_model_len=4096,
    )
    return Engine(
        limits,
        profile,
        list(range(10, 500)),
        observer=observer,
        emit_events=(events.extend if events is not None else None),
        clock=vt.clock,
        sleep=vt.sleep,
    )


def ttft(r: Request) -> float:
    assert r.first_token_at is not None
    return r.first_token_at - r.arrival


def test_repeated_prompt_hits_cached_blocks_and_skips_their_prefill() -> None:
    vt, rec = VirtualTime(), Recorder()
    engine = make(vt, observer=rec)
    prompt = list(range(100, 100 + 200))  # 12 full blocks of 16 + 8 tokens
    (first,) = run(engine, vt, [prompt])
    (second,) = run(engine, vt, [prompt])
    assert second.cached_tokens == 192 and first.cached_tokens == 0
    assert ttft(second) < ttft(first) / 5  # 8 uncached tokens instead of 200


def test_whole_prompt_cached_still_recomputes_the_last_block() -> None:
    vt = VirtualTime()
    engine = make(vt)
    prompt = list(range(100, 100 + 64))  # exactly 4 blocks
    run(engine, vt, [prompt])
    (again,) = run(engine, vt, [prompt])
    assert again.cached_tokens == 48


def test_lora_name_is_part_of_the_block_key() -> None:
    vt = VirtualTime()
    engine = make(vt)
    prompt = list(range(100, 164))
    run(engine, vt, [prompt])
    (other,) = run(engine, vt, [prompt], lora="adapter-a")
    assert other.cached_tokens == 0


def test_queue_grows_when_more_requests_than_max_num_seqs() -> None:
    vt, rec = VirtualTime(), Recorder()
    engine = make(vt, max_num_seqs=2, observer=rec)
    reqs = run(engine, vt, [[i] * 40 for i in range(20, 26)], max_tokens=8)
    assert rec.max_waiting == 4
    queued = [r.scheduled_at - r.arrival for r in reqs]  # type: ignore[operator]
    assert queued[0] == 0 and queued[-1] > queued[2] > 0


def test_running_out_of_blocks_preempts_and_every_request_still_finishes() -> None:
    vt, rec = VirtualTime(), Recorder()
    engine = make(vt, blocks=10, block_size=16, observer=rec)
    reqs = run(engine, vt, [[i] * 40 for i in range(30, 33)], max_tokens=40)
    assert rec.preempted, "3 requests growing to 5 blocks each cannot fit in 10 blocks"
    assert all(len(r.output) == 40 and r.finish_reason == "length" for r in reqs)
    assert engine.pool.num_free == 10


def test_events_report_stored_blocks_with_tokens_and_lru_eviction_order() -> None:
    vt, events = VirtualTime(), []
    engine = make(vt, blocks=6, block_size=4, events=events)
    a, b = [1, 2, 3, 4, 5, 6, 7, 8, 9], list(range(11, 28))
    run(engine, vt, [a], max_tokens=1)
    stored = [e for e in events if isinstance(e, BlockStored)]
    assert stored[0].token_ids == a[:8] and len(stored[0].block_hashes) == 2 and stored[0].parent_block_hash is None
    # b needs 5 of the 6 blocks: the 3 never used, a's uncached tail, then a's last cached block,
    # because a request's blocks are freed in reverse and so its last blocks are evicted first.
    run(engine, vt, [b], max_tokens=1)
    removed = [h for e in events if isinstance(e, BlockRemoved) for h in e.block_hashes]
    assert removed == [stored[0].block_hashes[1]]


def test_output_is_deterministic_per_seed_and_prompt() -> None:
    prompt = [5, 6, 7]
    r1, s1 = output_plan(prompt, 1, 50, False, 10)
    r2, s2 = output_plan(prompt, 1, 50, False, 10)
    r3, _ = output_plan(prompt, 2, 50, False, 10)
    assert s1 == s2 and [r1.random() for _ in range(5)] == [r2.random() for _ in range(5)]
    assert r3.random() != output_plan(prompt, 1, 50, False, 10)[0].random()
    assert output_plan(prompt, 1, 50, True, 10)[1] is None


def test_gpu_profiles_differ_in_speed_and_capacity() -> None:
    h100, a100, l4 = PRESETS["H100"], PRESETS["A100"], PRESETS["L4"]

    def step(p: GpuProfile, prefill: int, decode: int, context: int) -> float:
        return (
            p.step_overhead_s
            + prefill * p.prefill_s_per_token
            + decode * p.decode_s_per_seq
            + context * p.kv_read_s_per_token
        )

    for shape in [(2048, 0, 0), (0, 64, 64 * 2000)]:
        assert step(h100, *shape) < step(a100, *shape) < step(l4, *shape)
    assert l4.kv_cache_tokens < a100.kv_cache_tokens <= h100.kv_cache_tokens
    assert h100.scaled(2).kv_cache_tokens == 2 * h100.kv_cache_tokens
    assert h100.scaled(2).step_overhead_s < h100.step_overhead_s


def test_block_keys_chain_the_parent() -> None:
    root = b"\x00" * 32
    k1 = chain_key(root, [1, 2], None)
    assert chain_key(k1, [3, 4], None) != chain_key(chain_key(root, [9, 9], None), [3, 4], None)
    assert chain_key(root, [1, 2], ("a",)) != k1


def test_pool_reset_is_refused_while_blocks_are_in_use() -> None:
    events: list[Event] = []
    pool = BlockPool(4, 2, emit=events.append)
    got = pool.allocate(2)
    assert got is not None and not pool.reset()
    pool.free(got)
    assert pool.reset() and type(events[-1]).__name__ == "AllBlocksCleared"


@pytest.mark.parametrize("n", [0, 4, 5])
def test_allocate_never_hands_out_more_than_free(n: int) -> None:
    pool = BlockPool(4, 2)
    got = pool.allocate(n)
    assert (got is None) == (n > 4)
    assert pool.num_free == (4 - n if n <= 4 else 4)
