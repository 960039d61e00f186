"""Load sweeps of the simulated engine on virtual time: latency and SLO attainment at a given request rate.

The engine's own scheduler and step-time model run unchanged; only the clock is virtual, advanced by each
step's modelled duration and jumped to the next arrival when the engine is idle. So a sweep of minutes of
traffic takes a fraction of a second and is deterministic for a seed. Prompts are random token ids (no
prefix reuse) and every request generates exactly its output length: the capacity this measures is the
no-cache floor, as Dynamo's and AIBrix's profilers assume.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from headway.sim.engine import Engine, EngineLimits, Request
from headway.sim.profiles import GpuProfile

BLOCK_SIZE_TOKENS = 16


@dataclass(frozen=True)
class SweepPoint:
    rps: float
    ttft_s: float
    """TTFT at the requested percentile."""
    itl_s: float
    """Inter-token latency at the requested percentile, over all token gaps (as vLLM's histogram counts)."""
    attainment: float
    """Share of requests whose TTFT and every-gap percentile ITL both met the targets."""
    throughput_rps: float
    """Requests completed per second over the measured span; below `rps` when the engine saturates."""


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return math.inf
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(pct / 100 * len(values)) - 1))]


def run_load(
    profile: GpuProfile,
    rps: float,
    input_tokens: int,
    output_tokens: int,
    *,
    ttft_s: float,
    itl_s: float,
    ttft_percentile: float = 90,
    itl_percentile: float = 90,
    requests: int = 300,
    max_num_seqs: int = 256,
    max_num_batched_tokens: int = 8192,
    seed: int = 0,
) -> SweepPoint:
    """Poisson arrivals at `rps` for `requests` requests; the first fifth is warm-up and not measured."""
    rng = random.Random(seed)  # noqa: S311 - reproducible load, not secrets
    now = 0.0
    limits = EngineLimits(
        block_size=BLOCK_SIZE_TOKENS,
        num_blocks=max(1, profile.kv_cache_tokens // BLOCK_SIZE_TOKENS),
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        max_model_len=input_tokens + output_tokens + BLOCK_SIZE_TOKENS,
    )
    engine = Engine(limits, profile, list(range(1000, 30000)), clock=lambda: now)
    arrivals, t = [], 0.0
    for i in range(requests):
        t += rng.expovariate(rps)
        prompt = [rng.randrange(1000, 30000) for _ in range(input_tokens)]
        arrivals.append(Request(f"r{i}", prompt, output_tokens, None, rng=random.Random(i), arrival=t))  # noqa: S311
    gaps: dict[str, list[float]] = {r.request_id: [] for r in arrivals}
    pending = list(reversed(arrivals))
    while pending or engine.running or engine.waiting:
        while pending and pending[-1].arrival <= now:
            engine.submit(pending.pop())
        if not engine.running and not engine.waiting:
            now = pending[-1].arrival
            continue
        scheduled = engine._schedule()
        if not scheduled:
            break  # a prompt larger than the whole cache: the bucket is infeasible on this GPU
        now += engine.step_seconds(scheduled)
        before = [(r, r.last_token_at) for r in engine.running]
        engine._advance(scheduled)
        for r, prev in before:
            if prev is not None and r.last_token_at is not None and r.last_token_at > prev:
                gaps[r.request_id].append(r.last_token_at - prev)
    records = [
        RequestRecord(r.arrival, r.first_token_at, r.last_token_at, gaps[r.request_id], len(r.output) >= output_tokens)
        for r in arrivals
    ]
    return summarize(rps, records, ttft_s, itl_s, ttft_percentile, itl_percentile)


@dataclass(frozen=True)
class RequestRecord:
    """One request as a load generator saw it (any clock, seconds)."""

    arrival: float
    first_token_at: float | None
    last_token_at: float | None
    gaps: list[float]
    """Times between consecutive tokens."""
    completed: bool


def summarize(
    rps: float,
    records: list[RequestRecord],
    ttft_s: float,
    itl_s: float,
    ttft_percentile: float,
    itl_percentile: float,
) -> SweepPoint:
    """One load level's result; the first fifth of the requests is warm-up and not counted."""
    measured = records[len(records) // 5 :]
    done = [r for r in measured if r.first_token_at is not None and r.completed]
    if not done:
        return SweepPoint(rps, math.inf, math.inf, 0.0, 0.0)
    ttfts = [r.first_token_at - r.arrival for r in done]  # type: ignore[operator]
    all_gaps = [g for r in done for g in r.gaps]
    ok = sum(
        1 for r, tt in zip(done, ttfts, strict=True) if tt <= ttft_s and _percentile(r.gaps, itl_percentile) <= itl_s
    )
    span = max(r.last_token_at or r.first_token_at for r in done) - min(r.arrival for r in done)  # type: ignore[type-var]
    return SweepPoint(
        rps=rps,
        ttft_s=_percentile(ttfts, ttft_percentile),
        itl_s=_percentile(all_gaps, itl_percentile) if all_gaps else 0.0,
        attainment=ok / len(measured),
        throughput_rps=len(done) / span if span > 0 else 0.0,
    )
