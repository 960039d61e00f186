"""Routing under load: headway's routers against the anchors, in one process tree, same seeds, cold engines.

    headway bench routing [--workload shared-prefix|multi-turn|no-sharing|mooncake-conversation|
                                      mooncake-synthetic|all] [--engines 8] [--scale 20]
                          [--router-replicas 1] [--kv-pressure R] [--time-scale 0.035]
                          [--stage-seconds 12] [--llmd-stages 10,40,60,80] [--routers NAME,...] [--seed 1]
                          [--smoke]

For each router: N simulated H100 engines (`headway sim`, started cold), the router, and an open-loop
load generator running the stages; then the next router on fresh engines with the same schedule.

- Production conditions: `--router-replicas N` runs every router as N independent instances behind a
  client-side round-robin split (a plain L4 balancer): N headway gateways sharing one index through Redis
  (fed by one `headway kvcache` indexer), N vllm-router / sglang-router processes, N copies of each
  re-implemented anchor with its own state (those that read KV events get every engine's events through a
  fan-out). `--kv-pressure R` sizes the engines' KV caches so the run's working set (the distinct prompt
  blocks it sends) is R times the cluster's capacity, so eviction decides hit rates (the trace workloads
  default to 2). The Mooncake trace workloads replay real prefix structure and arrivals (bench/_workloads.py).
- Engines hash blocks as vLLM does with `--prefix-caching-hash-algo sha256_cbor` (as llm-d deploys them,
  so a router that recomputes vLLM's keys could match them). vllm-router's kv_aware hashes the events'
  token ids itself but keeps only events on vLLM's default empty topic, which its engines get; its
  placement lookups by result are recorded with its row (hits show it sees the events).

- Scale: token counts and per-pod KV capacity are the llm-d 73-capacity run's divided by `--scale`
  (see bench/_workloads.py); the engines run at `--time-scale` (slower than real time) so the streamed
  tokens fit this machine's cores; stage rates are llm-d's stage QPS × `--qps-factor` in engine time, so
  the same stages land at the same engine load whatever the time scale.
- Load generator: an asyncio client in this process (aiperf's definitions: TTFT = request sent → first
  streamed token; ITL = (last token − first token) / (tokens − 1) per request; output tok/s = the stage's
  requests' output tokens over the time from the stage's start to its last answer). It is used instead
  of aiperf because the stages, workloads and the oracle need the exact prompt sequence, and it measures
  every router identically.
- Hit rate and load imbalance come from the engines' own counters (`vllm:prefix_cache_*`,
  counted when the engine schedules a request) over each stage's window; imbalance = max / mean of the
  prompt tokens each pod admitted. The oracle bound is computed per stage on the same prompts.
- Routers: headway presets (`headway gateway --strategy`), the llm-d / KubeAI / AIBrix policies
  re-implemented in bench/anchors/ and run behind the same headway proxy (only the decision differs),
  the real vllm-router (cache_aware; kv_aware fed by the engines' KV events through a ZMQ relay, because
  vllm-router dials publishers and engines bound to 127.0.0.1 connect) and sglang-router (cache_aware);
  and headway-kv-aware-envoy-epp: the same kv-aware decisions made by headway's Endpoint Picker behind a
  real Envoy (`devenv/envoy.py`), to compare a Gateway setup's decisions with the standalone gateway's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import zmq

from bench._machine import RESULTS, write_result
from bench._workloads import (
    TRACE_SCALE,
    TRACES,
    WORKLOADS,
    Request,
    Words,
    distinct_blocks,
    hit_rate,
    kv_blocks_per_pod,
    oracle_hits,
    requests,
    trace_mean_rate,
)
from headway.devenv import procs
from headway.devenv.engines import gateway_argv, kv_events_config, sim_argv
from headway.devenv.envoy import EnvoyProcess, bootstrap, envoy_binary
from headway.devenv.services import RedisServer
from headway.devenv.tinymodel import tiny_model_dir

REPO = Path(__file__).resolve().parent.parent
BENCH_VENV = REPO / ".venv-bench" / "bin"
ANCHORS = Path(__file__).resolve().parent / "anchors"
LLMD_STAGES = "10,40,60,80"
TRACE_STAGES = "5,10,20,30,40"
TRACE_REPLICAS = 3
BLOCK_SIZE = 16


@dataclass(frozen=True)
class RouterSpec:
    name: str
    kind: str  # "headway" | "anchor" | "baseline"
    launch: str  # "gateway" | "envoy-epp" | "vllm-router" | "sglang-router"
    args: tuple[str, ...] = ()
    needs_relay: bool = False
    shared_index: bool = False
    """headway's engine-truth index: with several replicas, one indexer writes it to Redis and every
    replica reads it there (as the chart deploys them)."""


ROUTERS: dict[str, RouterSpec] = {
    r.name: r
    for r in (
        RouterSpec("random", "baseline", "gateway", ("--strategy", "random")),
        RouterSpec("round-robin", "baseline", "gateway", ("--strategy", "round-robin")),
        RouterSpec("least-request", "baseline", "gateway", ("--strategy", "least-request")),
        RouterSpec("headway-approx-prefix", "headway", "gateway", ("--strategy", "approx-prefix")),
        RouterSpec("headway-kv-aware", "headway", "gateway", ("--strategy", "kv-aware"), shared_index=True),
        RouterSpec("headway-kv-aware-envoy-epp", "headway", "envoy-epp", ("--strategy", "kv-aware"), shared_index=True),
        RouterSpec(
            "llm-d-precise",
            "anchor",
            "gateway",
            ("--router", f"llm-d-precise={ANCHORS / 'llmd_precise.py'}:make", "--strategy", "llm-d-precise"),
        ),
        RouterSpec(
            "kubeai-chwbl",
            "anchor",
            "gateway",
            ("--router", f"kubeai-chwbl={ANCHORS / 'kubeai_chwbl.py'}:make", "--strategy", "kubeai-chwbl"),
        ),
        RouterSpec(
            "aibrix-prefix-cache",
            "anchor",
            "gateway",
            (
                "--router",
                f"aibrix-prefix-cache={ANCHORS / 'aibrix_prefix_cache.py'}:make",
                "--strategy",
                "aibrix-prefix-cache",
            ),
        ),
        RouterSpec("vllm-router-cache-aware", "anchor", "vllm-router", ("--policy", "cache_aware")),
        RouterSpec("vllm-router-kv-aware", "anchor", "vllm-router", ("--policy", "kv_aware"), needs_relay=True),
        RouterSpec("sglang-router-cache-aware", "anchor", "sglang-router", ("--policy", "cache_aware")),
    )
}


@dataclass
class Sample:
    stage: int
    sent: float
    ttft: float | None = None
    end: float | None = None
    tokens: int = 0
    ok: bool = False


@dataclass
class Fleet:
    work: Path
    ports: list[int]
    pids: list[int] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]


class KvRelay:
    """Forwards each engine's KV-event stream (engine PUB connects to our bound SUB) to a PUB socket we bind
    for a subscriber that dials publishers, frame for frame (zmq.proxy), on 127.0.0.1 only."""

    def __init__(self, count: int) -> None:
        self.ctx = zmq.Context.instance()
        self.inputs = [procs.free_port() for _ in range(count)]
        self.outputs = [procs.free_port() for _ in range(count)]
        self._threads = []
        for i, o in zip(self.inputs, self.outputs, strict=True):
            t = threading.Thread(target=self._proxy, args=(i, o), daemon=True)
            t.start()
            self._threads.append(t)

    def _proxy(self, inp: int, out: int) -> None:
        xsub, xpub = self.ctx.socket(zmq.XSUB), self.ctx.socket(zmq.XPUB)
        xsub.bind(f"tcp://127.0.0.1:{inp}")
        xpub.bind(f"tcp://127.0.0.1:{out}")
        with contextlib.suppress(zmq.ContextTerminated, zmq.ZMQError):
            zmq.proxy(xsub, xpub)


class KvFanout:
    """One bound endpoint the engines publish to, every frame copied to each of several routers' bound SUB
    endpoints (an XPUB that connects to all of them): N copies of a router that reads KV events each see
    every engine's events, the most generous way to deploy one (in llm-d's default, each engine's
    publisher reaches one replica through the Service)."""

    def __init__(self, outputs: list[str]) -> None:
        self.ctx = zmq.Context.instance()
        self.input = f"tcp://127.0.0.1:{procs.free_port()}"
        xsub, xpub = self.ctx.socket(zmq.XSUB), self.ctx.socket(zmq.XPUB)
        xsub.bind(self.input)
        for out in outputs:
            xpub.connect(out)
        threading.Thread(target=self._proxy, args=(xsub, xpub), daemon=True).start()

    @staticmethod
    def _proxy(xsub: zmq.Socket, xpub: zmq.Socket) -> None:
        with contextlib.suppress(zmq.ContextTerminated, zmq.ZMQError):
            zmq.proxy(xsub, xpub)


def _get(url: str, timeout: float = 2.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read().decode() if r.status == 200 else None
    except OSError:
        return None


def _wait(url: str, pid: int, log: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while _get(url) is None:
        if time.monotonic() > deadline or not procs.alive(pid):
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{url} did not come up; log {log}:\n{tail}")
        time.sleep(0.2)


def start_engines(
    fleet: Fleet, args: argparse.Namespace, events: list[str], blocks: int, topic: str | None = None
) -> None:
    for port, endpoint in zip(fleet.ports, events, strict=True):
        argv = sim_argv(
            port,
            "--gpu-profile",
            "H100",
            "--time-scale",
            str(args.time_scale),
            "--block-size",
            str(BLOCK_SIZE),
            "--kv-cache-blocks",
            str(blocks),
            "--max-model-len",
            "8192",
            "--kv-events-config",
            kv_events_config(endpoint, port, topic=topic),
            "--prefix-caching-hash-algo",
            "sha256_cbor",
            "--log-level",
            "warning",
        )
        # vLLM's own keys (sha256_cbor, vLLM's default seed), as llm-d deploys engines: a router that
        # recomputes them can match the engines' events
        env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
        fleet.pids.append(procs.spawn(argv, fleet.work / f"engine-{port}.log", env=env, cwd=fleet.work).pid)
    for port, pid in zip(fleet.ports, fleet.pids, strict=True):
        _wait(f"http://127.0.0.1:{port}/health", pid, fleet.work / f"engine-{port}.log")


@dataclass
class Launched:
    """The router's replicas as started: the URLs the load generator splits over, every process to stop,
    and the KV-event endpoint each engine publishes to."""

    urls: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    """Each replica's Prometheus endpoint (the Rust routers')."""


def _headway(spec: RouterSpec, fleet: Fleet, work: Path, replicas: int, out: Launched) -> None:
    """headway's gateways (or EPPs behind Envoy). One replica indexes the engines' events itself; several
    share one index: the indexer (`headway kvcache`) writes it to Redis, each replica reads it there, as
    the chart deploys them. Routers that keep their own state get every event through a fan-out."""
    engines = len(fleet.ports)
    if replicas == 1:
        bind = f"tcp://127.0.0.1:{procs.free_port()}"
        index_args: list[tuple[str, ...]] = [("--kv-events-bind", bind)]
        out.events = [bind] * engines
    elif spec.shared_index:
        redis = RedisServer(work / "redis").start()
        out.pids.append(redis.pid)
        bind, port = f"tcp://127.0.0.1:{procs.free_port()}", procs.free_port()
        argv = [sys.executable, "-m", "headway", "kvcache", "--bind", bind, "--redis-url", redis.url]
        log = work / "indexer.log"
        pid = procs.spawn([*argv, "--host", "127.0.0.1", "--port", str(port)], log, cwd=work).pid
        out.pids.append(pid)
        _wait(f"http://127.0.0.1:{port}/healthz", pid, log)
        index_args = [("--redis-url", redis.url)] * replicas
        out.events = [bind] * engines
    else:
        binds = [f"tcp://127.0.0.1:{procs.free_port()}" for _ in range(replicas)]
        index_args = [("--kv-events-bind", b) for b in binds]
        out.events = [KvFanout(binds).input] * engines
    for i, extra in enumerate(index_args):
        port, log = procs.free_port(), work / f"router-{spec.name}-{i}.log"
        argv = gateway_argv(port, fleet.urls, *extra, *spec.args)
        if spec.launch == "gateway":
            pid = procs.spawn(argv, log, cwd=work).pid
            out.pids.append(pid)
            _wait(f"http://127.0.0.1:{port}/healthz", pid, log)
            out.urls.append(f"http://127.0.0.1:{port}")
            continue
        # headway's Endpoint Picker behind a real Envoy (the GIE reference data plane: ORIGINAL_DST on
        # the picker's header), the same decisions as the standalone gateway's, Envoy forwarding;
        metrics_port = procs.free_port()
        pid = procs.spawn([*argv, "--mode", "epp", "--metrics-port", str(metrics_port)], log, cwd=work).pid
        out.pids.append(pid)
        _wait(f"http://127.0.0.1:{metrics_port}/healthz", pid, log)
        # response bodies through the picker, as llm-d's reference Envoy configs do: its first chunk is the
        # first-token signal that releases the request's prefill estimate (without it the estimate holds
        # until the answer ends and routing on loaded engines gets worse; measured in the README)
        cfg = bootstrap(listen_port=procs.free_port(), admin_port=procs.free_port(), epp_port=port, response_body=True)
        envoy = EnvoyProcess(work, cfg, name=f"envoy-{spec.name}-{i}").start()
        out.pids.append(envoy.pid)
        out.urls.append(envoy.url)


def _rust_router(
    spec: RouterSpec, fleet: Fleet, work: Path, replicas: int, relay: KvRelay | None, out: Launched
) -> None:
    """vllm-router / sglang-router processes, each with every engine; kv_aware ones all dial the relay's
    per-engine publishers (each subscriber gets every event)."""
    exe = {
        "vllm-router": [str(BENCH_VENV / "vllm-router")],
        "sglang-router": [str(BENCH_VENV / "sglang-router"), "launch"],
    }
    for i in range(replicas):
        port, log, metrics_port = procs.free_port(), work / f"router-{spec.name}-{i}.log", procs.free_port()
        argv = [
            *exe[spec.launch],
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--prometheus-host",
            "127.0.0.1",
            "--prometheus-port",
            str(metrics_port),
            "--worker-urls",
            *fleet.urls,
            *spec.args,
        ]
        if spec.needs_relay:
            assert relay is not None
            for url, relay_out in zip(fleet.urls, relay.outputs, strict=True):
                argv += ["--kv-event-source", f"{url}=tcp://127.0.0.1:{relay_out}"]
            argv += ["--kv-event-block-size", str(BLOCK_SIZE), "--kv-event-model", "tiny"]
        env = {**os.environ, "PYTHONSAFEPATH": "1"}
        pid = procs.spawn(argv, log, env=env, cwd=work).pid
        out.pids.append(pid)
        _wait(f"http://127.0.0.1:{port}/v1/models", pid, log)
        out.urls.append(f"http://127.0.0.1:{port}")
        out.metrics.append(f"http://127.0.0.1:{metrics_port}/metrics")


def kv_lookups(metrics_urls: list[str]) -> dict[str, float]:
    """vllm-router kv_aware's placement lookups by result, over its replicas: hits show its recomputed
    keys match the engines' events (else its decisions fall back to load alone and its row measures
    nothing)."""
    out: dict[str, float] = {}
    for url in metrics_urls:
        for line in (_get(url, timeout=10) or "").splitlines():
            if line.startswith("vllm_router_kv_placement_lookups_total{"):
                result = line.split('result="', 1)[1].split('"', 1)[0] if 'result="' in line else "all"
                out[result] = out.get(result, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def engine_counters(urls: list[str]) -> list[dict[str, float]]:
    """Per engine: prefix-cache hits and queries (counted when a request is scheduled) and prompt tokens
    computed, summed over label sets."""
    wanted = {
        "vllm:prefix_cache_hits_total": "hits",
        "vllm:prefix_cache_queries_total": "queries",
        "vllm:prompt_tokens_total": "prompt_tokens",
    }
    out = []
    for url in urls:
        counts = dict.fromkeys(wanted.values(), 0.0)
        for line in (_get(f"{url}/metrics", timeout=10) or "").splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in wanted:
                counts[wanted[name]] += float(line.rsplit(" ", 1)[1])
        out.append(counts)
    return out


async def _one(session: aiohttp.ClientSession, url: str, req: Request, s: Sample) -> None:
    body = {
        "model": "tiny",
        "prompt": req.prompt,
        "max_tokens": req.output_tokens,
        "ignore_eos": True,
        "stream": True,
    }
    try:
        async with session.post(f"{url}/v1/completions", json=body) as r:
            if r.status != 200:
                await r.read()
                return
            async for line in r.content:
                if line.startswith(b"data: {"):
                    if b'"error"' in line[:40]:
                        return
                    now = time.perf_counter()
                    if s.ttft is None:
                        s.ttft = now - s.sent
                    s.tokens += 1
                    s.end = now
        s.ok = s.tokens >= req.output_tokens
    except (aiohttp.ClientError, TimeoutError):
        return


Schedule = list[list[tuple[float, Request]]]
"""Per stage, each request with its send time in seconds from the stage's start."""


def schedule(
    stream: Iterator[Request], rates: list[float], stage_s: float, seed: int, trace_rate: float | None = None
) -> Schedule:
    """Open-loop arrivals, the same for every router: Poisson at each stage's rate, or a trace's own gaps
    scaled so its mean rate (`trace_rate`, per trace second) lands on the stage's (burstiness kept)."""
    out: Schedule = []
    pending: Request | None = None
    for k, rate in enumerate(rates):
        rng = random.Random(seed * 1000 + k)
        stage: list[tuple[float, Request]] = []
        t = 0.0
        while True:
            req, pending = pending or next(stream), None
            t += rng.expovariate(rate) if req.gap_s is None else req.gap_s * (trace_rate or rate) / rate
            if t >= stage_s:
                pending = req  # the next stage's first request
                break
            stage.append((t, req))
        out.append(stage)
    return out


async def drive(
    urls: list[str],
    plan: Schedule,
    rates: list[float],
    stage_s: float,
    engines: list[str],
    drain_s: float,
    progress: Callable[[str], None],
) -> tuple[list[Sample], list[tuple[float, float]], list[list[dict[str, float]]]]:
    """Send the schedule, the requests split round-robin over the router's replicas (a plain L4 balancer
    in front of them); returns the samples, each stage's (start, end) and engine counters at every stage
    boundary."""
    replicas = itertools.cycle(urls)
    samples: list[Sample] = []
    tasks: list[asyncio.Task[None]] = []
    windows: list[tuple[float, float]] = []
    counters = [await asyncio.to_thread(engine_counters, engines)]
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for k, (rate, stage) in enumerate(zip(rates, plan, strict=True)):
            start = time.perf_counter()
            for t, req in stage:
                delay = start + t - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                s = Sample(k, time.perf_counter())
                samples.append(s)
                tasks.append(asyncio.create_task(_one(session, next(replicas), req, s)))
            await asyncio.sleep(max(0.0, start + stage_s - time.perf_counter()))
            windows.append((start, time.perf_counter()))
            counters.append(await asyncio.to_thread(engine_counters, engines))
            done = sum(1 for s in samples if s.ok)
            progress(f"stage {k + 1}/{len(rates)} at {rate:.1f} qps: {len(samples)} sent, {done} done")
        _, pending = await asyncio.wait(tasks, timeout=drain_s) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    counters.append(await asyncio.to_thread(engine_counters, engines))
    return samples, windows, counters


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def stage_stats(
    samples: list[Sample],
    windows: list[tuple[float, float]],
    counters: list[list[dict[str, float]]],
    rates: list[float],
) -> list[dict[str, Any]]:
    out = []
    for k, rate in enumerate(rates):
        mine = [s for s in samples if s.stage == k]
        ok = [s for s in mine if s.ok]
        ttfts = [s.ttft for s in ok if s.ttft is not None]
        itls = [(s.end - s.sent - s.ttft) / (s.tokens - 1) for s in ok if s.end and s.ttft and s.tokens > 1]
        last = max((s.end for s in ok if s.end), default=windows[k][1])
        before, after = counters[k], counters[k + 1]
        hits = sum(a["hits"] - b["hits"] for a, b in zip(after, before, strict=True))
        queries = sum(a["queries"] - b["queries"] for a, b in zip(after, before, strict=True))
        per_pod = [a["queries"] - b["queries"] for a, b in zip(after, before, strict=True)]
        mean = statistics.fmean(per_pod) if per_pod else 0.0
        out.append(
            {
                "offered_qps": rate,
                "sent": len(mine),
                "ttft_p50_s": _pct(ttfts, 50),
                "ttft_p90_s": _pct(ttfts, 90),
                "ttft_p99_s": _pct(ttfts, 99),
                "itl_p50_s": _pct(itls, 50),
                "itl_p90_s": _pct(itls, 90),
                "output_tok_s": sum(s.tokens for s in ok) / max(1e-9, last - windows[k][0]),
                "success_rate": len(ok) / len(mine) if mine else 0.0,
                "hit_rate": hits / queries if queries else 0.0,
                "imbalance": max(per_pod) / mean if mean else 0.0,
            }
        )
    return out


def run_router(
    spec: RouterSpec, plan: Schedule, blocks: int, args: argparse.Namespace, work: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    fleet = Fleet(work / spec.name, [procs.free_port() for _ in range(args.engines)])
    fleet.work.mkdir(parents=True, exist_ok=True)
    relay = KvRelay(args.engines) if spec.needs_relay else None
    launched = Launched()
    try:
        if spec.launch in ("gateway", "envoy-epp"):
            _headway(spec, fleet, fleet.work, args.router_replicas, launched)
            start_engines(fleet, args, launched.events, blocks)
        else:
            nowhere = [f"tcp://127.0.0.1:{procs.free_port()}"] * args.engines
            # vllm-router (0.1.17) keeps only event frames whose topic equals its static source's, which
            # is always "" (vLLM's default topic): with headway's kv@… topic it would drop every event
            topic = "" if spec.needs_relay else None
            start_engines(
                fleet, args, [f"tcp://127.0.0.1:{i}" for i in relay.inputs] if relay else nowhere, blocks, topic
            )
            _rust_router(spec, fleet, fleet.work, args.router_replicas, relay, launched)
        time.sleep(1.0)  # a metrics scrape of every engine before the first request
        samples, windows, counters = asyncio.run(
            drive(
                launched.urls,
                plan,
                args.rates,
                args.stage_seconds,
                fleet.urls,
                args.drain_seconds,
                lambda m: log(f"  {spec.name}: {m}"),
            )
        )
        first, last = counters[0], counters[-1]
        hits = sum(a["hits"] - b["hits"] for a, b in zip(last, first, strict=True))
        queries = sum(a["queries"] - b["queries"] for a, b in zip(last, first, strict=True))
        out = {
            "kind": spec.kind,
            "hit_rate": hits / queries if queries else 0.0,
            "stages": stage_stats(samples, windows, counters, args.rates),
            "sent_per_stage": [sum(1 for s in samples if s.stage == k) for k in range(len(args.rates))],
        }
        if spec.needs_relay:
            out["kv_placement_lookups"] = kv_lookups(launched.metrics)
        return out
    finally:
        for pid in [*fleet.pids, *launched.pids]:
            procs.stop(pid, grace_s=3)


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for dist in ("headway", "aiohttp", "tokenizers"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    for dist, exe in (("vllm-router", "vllm-router"), ("sglang-router", "sglang-router")):
        pip_meta = list(
            (REPO / ".venv-bench" / "lib").glob(f"python*/site-packages/{dist.replace('-', '_')}-*.dist-info")
        )
        if pip_meta:
            out[dist] = pip_meta[0].name.split("-")[1].removesuffix(".dist-info")
        elif (BENCH_VENV / exe).exists():
            out[dist] = "unknown"
    return out


def summary_table(doc: dict[str, Any]) -> str:
    lines = [
        f"### {doc['workload']} (oracle hit rate {doc['oracle_hit_rate']:.3f})",
        "",
        "| router | kind | qps | TTFT p50 s | TTFT p90 s | TTFT p99 s | ITL p50 s | out tok/s | success "
        "| hit rate | imbalance |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(v: float | None, digits: int = 3) -> str:
        return "–" if v is None else f"{v:.{digits}f}"

    for name, r in doc["routers"].items():
        for st in r["stages"]:
            lines.append(
                f"| {name} | {r['kind']} | {st['offered_qps']:.1f} | {f(st['ttft_p50_s'])} | {f(st['ttft_p90_s'])} | "
                f"{f(st['ttft_p99_s'])} | {f(st['itl_p50_s'])} | {st['output_tok_s']:.0f} | "
                f"{st['success_rate']:.3f} | {st['hit_rate']:.3f} | {st['imbalance']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5))
    for name, r in doc["routers"].items():
        qps = [s["offered_qps"] for s in r["stages"]]
        style = "-" if r["kind"] == "headway" else ("--" if r["kind"] == "anchor" else ":")
        a.plot(qps, [s["ttft_p90_s"] or float("nan") for s in r["stages"]], style, marker="o", label=name)
        b.plot(qps, [s["output_tok_s"] for s in r["stages"]], style, marker="o", label=name)
    a.set(xlabel="offered QPS", ylabel="TTFT p90 (s)", yscale="log", title=f"{doc['workload']}: TTFT p90")
    b.set(xlabel="offered QPS", ylabel="output tokens/s", title=f"{doc['workload']}: throughput")
    a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def targets(doc: dict[str, Any]) -> dict[str, Any]:
    """The ratios the benchmark exists to watch (computed, never asserted here)."""
    routers = doc["routers"]
    ours = routers.get("headway-kv-aware")
    anchors = {n: r for n, r in routers.items() if r["kind"] == "anchor"}
    if not ours:
        return {}
    out: dict[str, Any] = {}
    per_stage = []
    for k, st in enumerate(ours["stages"]):
        best_ttft = min(
            (r["stages"][k]["ttft_p90_s"] for r in anchors.values() if r["stages"][k]["ttft_p90_s"] is not None),
            default=None,
        )
        best_tok = max((r["stages"][k]["output_tok_s"] for r in anchors.values()), default=None)
        per_stage.append(
            {
                "offered_qps": st["offered_qps"],
                "ttft_p90_vs_best_anchor": (st["ttft_p90_s"] / best_ttft) if best_ttft and st["ttft_p90_s"] else None,
                "output_tok_s_vs_best_anchor": (st["output_tok_s"] / best_tok) if best_tok else None,
            }
        )
    out["per_stage"] = per_stage
    out["hit_rate_vs_oracle"] = ours["hit_rate"] / doc["oracle_hit_rate"] if doc["oracle_hit_rate"] else None
    out["hit_rate_vs_oracle_per_stage"] = [
        s["hit_rate"] / o if o else None for s, o in zip(ours["stages"], doc["oracle_hit_rate_per_stage"], strict=True)
    ]
    lr = routers.get("least-request")
    if lr:
        out["ttft_p90_vs_least_request"] = [
            (a["ttft_p90_s"] / b["ttft_p90_s"]) if a["ttft_p90_s"] and b["ttft_p90_s"] else None
            for a, b in zip(ours["stages"], lr["stages"], strict=True)
        ]
    return out


def kv_sizing(workload: str, prompts: list[list[int]], plan: Schedule, args: argparse.Namespace) -> dict[str, Any]:
    """Each engine's KV blocks: llm-d's capacity scaled (the working set ~73% of it), or, under
    `--kv-pressure` (the trace workloads' default: 2), what makes the run's working set — the distinct
    prompt blocks it sends — that many times the cluster's capacity, so eviction decides hit rates. Never
    less than twice the largest request, which must fit."""
    working_set = len(distinct_blocks(prompts, BLOCK_SIZE))
    largest = max(
        (len(ids) + req.output_tokens) // BLOCK_SIZE + 1 for ids, req in zip(prompts, _requests(plan), strict=True)
    )
    pressure = args.kv_pressure if args.kv_pressure is not None else (2.0 if workload in TRACES else None)
    if pressure is None:
        blocks = kv_blocks_per_pod(args.scale, BLOCK_SIZE)
    else:
        blocks = max(2 * largest, math.ceil(working_set / (pressure * args.engines)))
    return {
        "kv_blocks_per_engine": blocks,
        "kv_pressure_requested": pressure,
        "working_set_blocks": working_set,
        "working_set_over_capacity": working_set / (blocks * args.engines),
        "largest_request_blocks": largest,
    }


def _requests(plan: Schedule) -> list[Request]:
    return [req for stage in plan for _, req in stage]


def for_workload(workload: str, args: argparse.Namespace) -> argparse.Namespace:
    """The options with this workload's defaults filled in: its stage rates and router replicas."""
    trace = workload in TRACES
    stages = args.llmd_stages or (TRACE_STAGES if trace else LLMD_STAGES)
    return argparse.Namespace(
        **{
            **vars(args),
            "rates": [float(x) * args.qps_factor * args.time_scale for x in stages.split(",")],
            "router_replicas": args.router_replicas or (TRACE_REPLICAS if trace else 1),
        }
    )


def run_workload(workload: str, args: argparse.Namespace, words: Words, work: Path) -> dict[str, Any]:
    def log(m: str) -> None:
        print(m, file=sys.stderr, flush=True)

    args = for_workload(workload, args)

    trace_rate = trace_mean_rate(workload) if workload in TRACES else None
    stream = requests(workload, words, scale=args.scale, seed=args.seed)
    plan = schedule(stream, args.rates, args.stage_seconds, args.seed, trace_rate)
    # The oracle sees exactly the prompts the run sends (the same schedule for every router).
    prompts = [words.ids(r.prompt) for r in _requests(plan)]
    sizing = kv_sizing(workload, prompts, plan, args)
    log(
        f"{workload}: {len(args.routers)} routers × {args.router_replicas} replicas × {len(args.rates)} stages of "
        f"{args.stage_seconds:g}s, {len(prompts)} requests, working set {sizing['working_set_over_capacity']:.2f}× "
        f"the KV capacity ({sizing['kv_blocks_per_engine']} blocks per engine)"
    )
    results = {}
    for name in args.routers:
        t0 = time.monotonic()
        results[name] = run_router(ROUTERS[name], plan, sizing["kv_blocks_per_engine"], args, work / workload, log)
        log(f"  {name}: done in {time.monotonic() - t0:.0f}s")
    pairs = oracle_hits(prompts, BLOCK_SIZE)
    bounds = list(itertools.accumulate((len(stage) for stage in plan), initial=0))
    oracle_stages = [hit_rate(pairs[a:b]) for a, b in itertools.pairwise(bounds)]
    trace = None
    if workload in TRACES:
        trace = {
            "file": f"../shared/traces/{TRACES[workload]}",
            "source": "Mooncake FAST'25 release (kvcache-ai/Mooncake, Apache-2.0; Qin et al., FAST'25)",
            "token_scale": TRACE_SCALE,
            "rows_replayed": len(prompts),
            "trace_mean_rate_per_s": trace_rate,
        }
    doc = {
        "workload": workload,
        "versions": versions(),
        "seeds": [args.seed],
        "engines": args.engines,
        "router_replicas": args.router_replicas,
        "gpu_profile": "H100",
        "scale": TRACE_SCALE if trace else args.scale,
        "trace": trace,
        "time_scale": args.time_scale,
        **sizing,
        "block_size": BLOCK_SIZE,
        "stage_seconds": args.stage_seconds,
        "load_generator": "asyncio open-loop client in bench/routing.py (Poisson or trace arrivals; aiperf's "
        "TTFT/ITL definitions); requests split round-robin over the router's replicas",
        "oracle_hit_rate": hit_rate(pairs),
        "oracle_hit_rate_per_stage": oracle_stages,
        "oracle_definition": "perfect knowledge and unbounded KV capacity (an upper bound; under KV pressure "
        "no router reaches it)",
        "load_average_1m_at_end": os.getloadavg()[0],
        "routers": results,
    }
    doc["targets"] = targets(doc)
    return doc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="headway bench routing", description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", default="all", choices=[*WORKLOADS, "all"])
    p.add_argument("--engines", type=int, default=8)
    p.add_argument(
        "--router-replicas",
        type=int,
        default=None,
        help="Run each router as this many independent instances, the load split round-robin over them "
        f"(default: {TRACE_REPLICAS} for the trace workloads, 1 for the others).",
    )
    p.add_argument("--scale", type=int, default=20, help="Divide llm-d's token counts and KV capacity by this.")
    p.add_argument(
        "--kv-pressure",
        type=float,
        default=None,
        help="Size the engines' KV caches so the run's working set is this many times the cluster's capacity "
        "(trace workloads' default: 2; others: llm-d's capacity scaled).",
    )
    p.add_argument("--time-scale", type=float, default=0.035, help="Engines run this many times real time.")
    p.add_argument(
        "--qps-factor",
        type=float,
        default=19.0,
        help="Engine-time QPS per llm-d stage QPS (wall-clock QPS = this × --time-scale × llm-d QPS).",
    )
    p.add_argument(
        "--llmd-stages",
        default=None,
        help=f"llm-d stage QPS to run (theirs: 3 … 60; default {LLMD_STAGES}, for the trace workloads "
        f"{TRACE_STAGES}: their prompts share less, so engines saturate sooner).",
    )
    p.add_argument("--stage-seconds", type=float, default=12.0)
    p.add_argument("--drain-seconds", type=float, default=60.0, help="Wait this long for the last answers.")
    p.add_argument("--routers", default=",".join(ROUTERS), help=f"Comma-separated, of: {', '.join(ROUTERS)}.")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS, help="Where the JSON, markdown and plots go.")
    p.add_argument("--keep-logs", type=Path, default=None, help="Keep engine and router logs in this directory.")
    p.add_argument("--smoke", action="store_true", help="A one-minute version: 4 engines, 3 routers, 2 short stages.")
    args = p.parse_args(argv)
    if args.smoke:
        args.engines, args.stage_seconds, args.llmd_stages, args.drain_seconds = 4, 6.0, "10,30", 20.0
        args.time_scale = 0.1
        if args.routers == ",".join(ROUTERS):
            args.routers = "round-robin,headway-kv-aware,llm-d-precise"
        if args.workload == "all":
            args.workload = "shared-prefix"
    try:
        for stages in (args.llmd_stages, LLMD_STAGES, TRACE_STAGES):
            if stages is not None:
                [float(x) for x in stages.split(",")]
    except ValueError:
        p.error(f"--llmd-stages: expected comma-separated numbers, got {args.llmd_stages!r}")
    args.routers = [r.strip() for r in args.routers.split(",") if r.strip()]
    unknown = [r for r in args.routers if r not in ROUTERS]
    if unknown:
        p.error(f"unknown routers {unknown}; known: {', '.join(ROUTERS)}")
    replicas_ok = args.router_replicas is None or args.router_replicas >= 1
    if args.engines < 2 or args.stage_seconds <= 0 or args.time_scale <= 0 or not replicas_ok:
        p.error("--engines must be ≥ 2, --router-replicas ≥ 1; --stage-seconds and --time-scale > 0")
    if args.kv_pressure is not None and args.kv_pressure <= 0:
        p.error("--kv-pressure must be > 0")
    missing = [
        r
        for r in args.routers
        if ROUTERS[r].launch not in ("gateway", "envoy-epp") and not (BENCH_VENV / ROUTERS[r].launch).exists()
    ]
    if any(ROUTERS[r].launch == "envoy-epp" for r in args.routers):
        try:
            envoy_binary()
        except FileNotFoundError as e:
            p.error(str(e))
    if missing:
        p.error(f"{', '.join(missing)} need hack/install-bench-tools.sh (make bench-routing runs it)")
    return args


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    args = parse_args(argv)
    words = Words(tiny_model_dir())
    import tempfile

    docs = {}
    with (
        contextlib.nullcontext(str(args.keep_logs))
        if args.keep_logs
        else tempfile.TemporaryDirectory(prefix="headway-bench-routing-")
    ) as tmp:
        for workload in WORKLOADS if args.workload == "all" else (args.workload,):
            doc = run_workload(workload, args, words, Path(tmp))
            docs[workload] = doc
            path = write_result(f"routing-{workload}", doc, benchmark="routing", directory=args.out)
            path.with_suffix(".md").write_text(summary_table(doc))
            if not args.smoke:
                plot(doc, path.with_suffix(".png"))
            print(summary_table(doc))
            print(json.dumps(doc["targets"], indent=2))
            print(f"wrote {path}", file=sys.stderr)
    return docs


if __name__ == "__main__":
    main()
