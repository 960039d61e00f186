"""`headway profile`: sweep the simulator's latency model, or a running engine, into a capacity profile.

For each GPU type, tensor-parallel size and (input, output) token bucket, the request rate is doubled
until the SLO breaks, then bisected: the highest rate at which the SLO's share of requests (attainment,
99% by default) met both the TTFT target and the ITL target (each request's ITL at the percentile) is
the bucket's capacity. Rates beyond it are swept too (to 2×), so that the profile also says
how latency and attainment fall apart under overload, which the autoscaler benchmark replays.

With `--engine-url` the same sweep drives a running OpenAI-compatible engine (vLLM or the simulator)
with streamed completions at Poisson arrival times, measuring TTFT and every inter-token gap on the
client; the result is the profile of that engine's GPU type (`--gpus` names it).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import aiohttp
import typer

from headway.autoscaler.capacity import BucketCapacity, CapacityProfile, GpuCapacity, LatencyPoint, Slo
from headway.sim.profiles import PRESETS, GpuProfile
from headway.sim.sweep import RequestRecord, SweepPoint, run_load, summarize

DEFAULT_INPUTS = (256, 1024, 2048, 4096)
DEFAULT_OUTPUTS = (64, 256)
_MIN_RPS = 0.05
_MAX_RPS = 512.0
_SPAN_S = 60.0
"""Seconds of arrivals per trial (at least `_MIN_REQUESTS`): long enough to reach steady state."""
_MIN_REQUESTS = 300
_MAX_REQUESTS = 1500
_BISECT_STEPS = 4
_OVERLOAD = (1.5, 2.0)


Measure = Callable[[float, int, int], SweepPoint]
"""(rate, input tokens, output tokens) → what that load level gave."""


def simulator(profile: GpuProfile, slo: Slo) -> Measure:
    def measure(rps: float, i: int, o: int) -> SweepPoint:
        requests = int(min(_MAX_REQUESTS, max(_MIN_REQUESTS, rps * _SPAN_S)))
        return run_load(
            profile,
            rps,
            i,
            o,
            ttft_s=slo.ttft_s,
            itl_s=slo.itl_s,
            ttft_percentile=slo.ttft_percentile,
            itl_percentile=slo.itl_percentile,
            requests=requests,
        )

    return measure


async def _engine_load(url: str, model: str, rps: float, i: int, o: int, requests: int) -> list[RequestRecord]:
    rng = random.Random(i * 7919 + o)  # noqa: S311 - reproducible load, not secrets
    prompt = " ".join(rng.choice(("alpha", "beta", "gamma", "delta")) for _ in range(i))
    body = {"model": model, "prompt": prompt, "max_tokens": o, "ignore_eos": True, "stream": True}

    async def one(s: aiohttp.ClientSession, delay: float) -> RequestRecord:
        await asyncio.sleep(delay)
        t0 = time.monotonic()
        times: list[float] = []
        try:
            async with s.post(f"{url.rstrip('/')}/v1/completions", json=body) as r:
                async for line in r.content:
                    if line.startswith(b"data: {"):
                        times.append(time.monotonic())
        except aiohttp.ClientError:
            pass
        gaps = [b - a for a, b in itertools.pairwise(times)]
        return RequestRecord(t0, times[0] if times else None, times[-1] if times else None, gaps, len(times) >= o)

    t, delays = 0.0, []
    for _ in range(requests):
        t += rng.expovariate(rps)
        delays.append(t)
    timeout = aiohttp.ClientTimeout(total=600, sock_read=120)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as s:
        return list(await asyncio.gather(*(one(s, d) for d in delays)))


def engine(url: str, model: str, slo: Slo, requests: int) -> Measure:
    def measure(rps: float, i: int, o: int) -> SweepPoint:
        records = asyncio.run(_engine_load(url, model, rps, i, o, requests))
        return summarize(rps, records, slo.ttft_s, slo.itl_s, slo.ttft_percentile, slo.itl_percentile)

    return measure


def _point(measure: Measure, rps: float, i: int, o: int) -> LatencyPoint:
    p = measure(rps, i, o)
    finite = 1e6
    return LatencyPoint(
        rps=round(rps, 4),
        ttft_s=round(min(p.ttft_s, finite), 6),
        itl_s=round(min(p.itl_s, finite), 6),
        attainment=round(p.attainment, 4),
        throughput_rps=round(p.throughput_rps, 4),
    )


def _meets(p: LatencyPoint, slo: Slo) -> bool:
    return (p.attainment or 0.0) >= slo.attainment


def sweep_bucket(
    profile: GpuProfile | Measure, i: int, o: int, slo: Slo, *, min_rps: float = _MIN_RPS
) -> BucketCapacity:
    """Capacity of one bucket: 0 when even a trickle (`min_rps`) misses the SLO. `profile` is a simulator
    GPU profile or any measuring function (a running engine)."""
    measure = simulator(profile, slo) if isinstance(profile, GpuProfile) else profile
    points: dict[float, LatencyPoint] = {}

    def at(rps: float) -> LatencyPoint:
        if rps not in points:
            points[rps] = _point(measure, rps, i, o)
        return points[rps]

    if not _meets(at(min_rps), slo):
        return BucketCapacity(input_tokens=i, output_tokens=o, max_rps=0.0, points=[points[min_rps]])
    good, bad = min_rps, min_rps * 2
    while bad < _MAX_RPS and _meets(at(bad), slo):
        good, bad = bad, bad * 2
    for _ in range(_BISECT_STEPS):
        mid = math.sqrt(good * bad)
        good, bad = (mid, bad) if _meets(at(mid), slo) else (good, mid)
    for f in _OVERLOAD:
        at(good * f)
    return BucketCapacity(
        input_tokens=i, output_tokens=o, max_rps=round(good, 4), points=sorted(points.values(), key=lambda p: p.rps)
    )


def build_profile(
    gpus: list[str], tensor_parallel: list[int], inputs: list[int], outputs: list[int], slo: Slo, model: str
) -> CapacityProfile:
    """Sweeps of the simulator's latency model, one entry per GPU preset and tensor-parallel size."""
    entries = []
    for name in gpus:
        for tp in tensor_parallel:
            prof = PRESETS[name].scaled(tp) if tp > 1 else PRESETS[name]
            buckets = [sweep_bucket(prof, i, o, slo) for i in inputs for o in outputs]
            entries.append(
                GpuCapacity(
                    gpu=name,
                    tensor_parallel=tp,
                    cost_per_hour_usd=prof.cost_per_hour_usd,
                    buckets=buckets,
                    simulator=prof.model_dump(),
                )
            )
    return CapacityProfile(
        model=model, source="headway simulator latency model (sim/profiles.py)", slo=slo, gpus=entries
    )


def _ints(value: str, flag: str) -> list[int]:
    try:
        out = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{flag} takes comma-separated whole numbers, got {value!r}") from None
    if not out or any(x < 1 for x in out):
        raise typer.BadParameter(f"{flag} takes comma-separated whole numbers ≥ 1, got {value!r}")
    return out


def profile(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the profile JSON.")],
    gpus: Annotated[str, typer.Option(help=f"GPU presets to sweep, of {', '.join(PRESETS)}.")] = ",".join(PRESETS),
    tensor_parallel: Annotated[str, typer.Option(help="Tensor-parallel sizes, comma-separated.")] = "1",
    inputs: Annotated[str, typer.Option(help="Input-length buckets (tokens).")] = ",".join(map(str, DEFAULT_INPUTS)),
    outputs: Annotated[str, typer.Option(help="Output-length buckets (tokens).")] = ",".join(map(str, DEFAULT_OUTPUTS)),
    ttft_s: Annotated[float, typer.Option(help="TTFT target (seconds).")] = 1.0,
    ttft_percentile: Annotated[float, typer.Option(help="Percentile of the TTFT target.")] = 90,
    itl_s: Annotated[float, typer.Option(help="Inter-token latency target (seconds).")] = 0.1,
    itl_percentile: Annotated[float, typer.Option(help="Percentile of the ITL target.")] = 90,
    attainment: Annotated[float, typer.Option(help="Share of requests that must meet both targets.")] = 0.99,
    model: Annotated[str, typer.Option(help="Model name recorded in the profile (and sent to --engine-url).")] = (
        "llama-3-8b"
    ),
    engine_url: Annotated[
        str | None, typer.Option(help="Sweep this running engine instead of the simulator; --gpus names its GPU.")
    ] = None,
    cost_per_hour_usd: Annotated[
        float | None, typer.Option(help="With --engine-url: price of the engine's GPU (default: the preset's).")
    ] = None,
    requests_per_trial: Annotated[int, typer.Option(min=5, help="With --engine-url: requests per load level.")] = 60,
    min_rps: Annotated[float, typer.Option(help="With --engine-url: the first (lowest) rate tried.")] = 0.5,
) -> None:
    """Sweep the simulator's latency model (or a running engine) into a capacity profile: max req/s within
    the SLO per GPU and token bucket."""
    names = [g.strip().upper() for g in gpus.split(",") if g.strip()]
    unknown = [g for g in names if g not in PRESETS]
    if engine_url is not None:
        if len(names) != 1:
            raise typer.BadParameter("--gpus: name exactly one GPU type with --engine-url")
        if not engine_url.startswith(("http://", "https://")):
            raise typer.BadParameter(f"--engine-url: not an http(s) URL: {engine_url!r}")
        if not min_rps > 0:
            raise typer.BadParameter("--min-rps must be > 0")
    elif unknown or not names:
        raise typer.BadParameter(f"--gpus: unknown {unknown or gpus!r}; known: {', '.join(PRESETS)}")
    for flag, v in (("--ttft-s", ttft_s), ("--itl-s", itl_s)):
        if not v > 0:
            raise typer.BadParameter(f"{flag} must be > 0")
    for flag, v in (("--ttft-percentile", ttft_percentile), ("--itl-percentile", itl_percentile)):
        if not 0 < v < 100:
            raise typer.BadParameter(f"{flag} must be within (0, 100)")
    if not 0 < attainment <= 1:
        raise typer.BadParameter("--attainment must be within (0, 1]")
    slo = Slo(
        ttft_s=ttft_s,
        ttft_percentile=ttft_percentile,
        itl_s=itl_s,
        itl_percentile=itl_percentile,
        attainment=attainment,
    )
    ins, outs, tps = _ints(inputs, "--inputs"), _ints(outputs, "--outputs"), _ints(tensor_parallel, "--tensor-parallel")
    if engine_url is not None:
        measure = engine(engine_url, model, slo, requests_per_trial)
        price = (
            cost_per_hour_usd
            if cost_per_hour_usd is not None
            else getattr(PRESETS.get(names[0]), "cost_per_hour_usd", 0.0)
        )
        buckets = [sweep_bucket(measure, i, o, slo, min_rps=min_rps) for i in ins for o in outs]
        gpu = GpuCapacity(gpu=names[0], tensor_parallel=tps[0], cost_per_hour_usd=price, buckets=buckets)
        result = CapacityProfile(model=model, source=f"engine at {engine_url}", slo=slo, gpus=[gpu])
    else:
        result = build_profile(names, tps, ins, outs, slo, model)
    result.dump(output)
    for g in result.gpus:
        caps = ", ".join(f"{b.input_tokens}x{b.output_tokens}={b.max_rps:g}" for b in g.buckets)
        typer.echo(f"{g.gpu} tp={g.tensor_parallel}: req/s {caps}")
    typer.echo(f"wrote {output}")
