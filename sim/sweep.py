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
import statistics
from collections.abc import Sequence
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


@dataclass(frozen=True)
class Arrival:
    time: float
    input_tokens: int
    output_tokens: int


def simulate(
    profile: GpuProfile,
    arrivals: Sequence[Arrival],
    *,
    concurrency: int | None = None,
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
    seed: int = 0,
) -> list[RequestRecord]:
    """Every arrival through one engine on virtual time, in order; with `concurrency`, at most that many
    outstanding at once and the next one sent when one finishes (a closed-loop client such as
    `vllm bench serve --max-concurrency`). Random prompts (no prefix reuse), exact output lengths. The
    scheduler limits default to vLLM's for the profile's GPU."""
    rng = random.Random(seed)  # noqa: S311 - reproducible load, not secrets
    now = 0.0
    longest = max((a.input_tokens + a.output_tokens for a in arrivals), default=1)
    limits = EngineLimits(
        block_size=BLOCK_SIZE_TOKENS,
        num_blocks=max(1, profile.kv_cache_tokens // BLOCK_SIZE_TOKENS),
        max_num_seqs=max_num_seqs or profile.max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens or profile.max_num_batched_tokens,
        max_model_len=longest + BLOCK_SIZE_TOKENS,
    )
    engine = Engine(limits, profile, list(range(1000, 30000)), clock=lambda: now)
    submitted: list[Request] = []
    gaps: dict[str, list[float]] = {}
    pending = list(reversed(arrivals))
    limit = concurrency or len(arrivals) + 1

    def release() -> None:
        while pending and pending[-1].time <= now and len(engine.running) + len(engine.waiting) < limit:
            a = pending.pop()
            i = len(submitted)
            prompt = [rng.randrange(1000, 30000) for _ in range(a.input_tokens)]
            req = Request(f"r{i}", prompt, a.output_tokens, None, rng=random.Random(i), arrival=max(a.time, now))  # noqa: S311
            submitted.append(req)
            gaps[req.request_id] = []
            engine.submit(req)

    while pending or engine.running or engine.waiting:
        release()
        if not engine.running and not engine.waiting:
            now = pending[-1].time
            continue
        scheduled = engine._schedule()
        if not scheduled:
            break  # a prompt larger than the whole cache: infeasible on this GPU
        now += engine.step_seconds(scheduled)
        before = [(r, r.last_token_at) for r in engine.running]
        engine._advance(scheduled)
        for r, prev in before:
            if prev is not None and r.last_token_at is not None and r.last_token_at > prev:
                gaps[r.request_id].append(r.last_token_at - prev)
    return [
        RequestRecord(r.arrival, r.first_token_at, r.last_token_at, gaps[r.request_id], len(r.output) >= r.max_tokens)
        for r in submitted
    ] + [RequestRecord(a.time, None, None, [], False) for a in reversed(pending)]


def poisson(rps: float, requests: int, input_tokens: int, output_tokens: int, seed: int = 0) -> list[Arrival]:
    rng = random.Random(seed)  # noqa: S311 - reproducible load, not secrets
    t, out = 0.0, []
    for _ in range(requests):
        t += rng.expovariate(rps)
        out.append(Arrival(t, input_tokens, output_tokens))
    return out


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
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
    seed: int = 0,
) -> SweepPoint:
    """Poisson arrivals at `rps` for `requests` requests; the first fifth is warm-up and not measured."""
    records = simulate(
        profile,
        poisson(rps, requests, input_tokens, output_tokens, seed),
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        seed=seed + 1,
    )
    return summarize(rps, records, ttft_s, itl_s, ttft_percentile, itl_percentile)


@dataclass(frozen=True)
class ClosedLoopResult:
    """What `vllm bench serve` reports for a run, computed the same way."""

    request_throughput: float
    output_throughput: float
    """Output tokens per second over the whole run."""
    median_tpot_s: float
    """Per request (last token − first token) / (tokens − 1), the median over requests."""
    median_ttft_s: float
    p99_ttft_s: float


def run_closed_loop(
    profile: GpuProfile, concurrency: int, requests: int, input_tokens: int, output_tokens: int, seed: int = 0
) -> ClosedLoopResult:
    """`requests` requests sent at once, at most `concurrency` outstanding (`--request-rate inf`)."""
    arrivals = [Arrival(0.0, input_tokens, output_tokens)] * requests
    done = [r for r in simulate(profile, arrivals, concurrency=concurrency, seed=seed) if r.completed]
    duration = max(r.last_token_at for r in done)  # type: ignore[type-var]
    tpots = [(r.last_token_at - r.first_token_at) / (output_tokens - 1) for r in done if output_tokens > 1]  # type: ignore[operator]
    ttfts = [r.first_token_at - r.arrival for r in done]  # type: ignore[operator]
    return ClosedLoopResult(
        request_throughput=len(done) / duration,
        output_throughput=len(done) * output_tokens / duration,
        median_tpot_s=statistics.median(tpots) if tpots else 0.0,
        median_ttft_s=statistics.median(ttfts),
        p99_ttft_s=_percentile(ttfts, 99),
    )


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
