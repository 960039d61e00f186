"""Routing under load: headway's routers against the anchors, in one process tree, same seeds, cold engines.

    headway bench routing [--workload shared-prefix|multi-turn|no-sharing|all] [--engines 8] [--scale 20]
                          [--time-scale 0.035] [--stage-seconds 12] [--llmd-stages 10,40,60,80]
                          [--routers NAME,...] [--seed 1] [--smoke]

For each router: N simulated H100 engines (`headway sim`, started cold), the router, and an open-loop
Poisson load generator running the stages; then the next router on fresh engines with the same seeds.

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
from bench._workloads import WORKLOADS, Request, Words, hit_rate, kv_blocks_per_pod, oracle_hits, requests
from headway.devenv import procs
from headway.devenv.engines import gateway_argv, kv_events_config, sim_argv
from headway.devenv.envoy import EnvoyProcess, bootstrap, envoy_binary
from headway.devenv.tinymodel import tiny_model_dir

REPO = Path(__file__).resolve().parent.parent
BENCH_VENV = REPO / ".venv-bench" / "bin"
ANCHORS = Path(__file__).resolve().parent / "anchors"
LLMD_STAGE_QPS = (3, 10, 20, 30, 40, 50, 60)
BLOCK_SIZE = 16


@dataclass(frozen=True)
class RouterSpec:
    name: str
    kind: str  # "headway" | "anchor" | "baseline"
    launch: str  # "gateway" | "envoy-epp" | "vllm-router" | "sglang-router"
    args: tuple[str, ...] = ()
    needs_relay: bool = False


ROUTERS: dict[str, RouterSpec] = {
    r.name: r
    for r in (
        RouterSpec("random", "baseline", "gateway", ("--strategy", "random")),
        RouterSpec("round-robin", "baseline", "gateway", ("--strategy", "round-robin")),
        RouterSpec("least-request", "baseline", "gateway", ("--strategy", "least-request")),
        RouterSpec("headway-approx-prefix", "headway", "gateway", ("--strategy", "approx-prefix")),
        RouterSpec("headway-kv-aware", "headway", "gateway", ("--strategy", "kv-aware")),
        RouterSpec("headway-kv-aware-envoy-epp", "headway", "envoy-epp", ("--strategy", "kv-aware")),
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


def start_engines(fleet: Fleet, args: argparse.Namespace, events: list[str]) -> None:
    blocks = kv_blocks_per_pod(args.scale, BLOCK_SIZE)
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
            kv_events_config(endpoint, port),
            "--log-level",
            "warning",
        )
        fleet.pids.append(procs.spawn(argv, fleet.work / f"engine-{port}.log", cwd=fleet.work).pid)
    for port, pid in zip(fleet.ports, fleet.pids, strict=True):
        _wait(f"http://127.0.0.1:{port}/health", pid, fleet.work / f"engine-{port}.log")


def start_router(spec: RouterSpec, fleet: Fleet, work: Path, relay: KvRelay | None) -> tuple[str, list[int], list[str]]:
    """Start the router; returns (url, its pids, the KV-event endpoint each engine should publish to)."""
    port = procs.free_port()
    log = work / f"router-{spec.name}.log"
    if spec.launch in ("gateway", "envoy-epp"):
        bind = f"tcp://127.0.0.1:{procs.free_port()}"
        argv = gateway_argv(port, fleet.urls, "--kv-events-bind", bind, *spec.args)
        if spec.launch == "gateway":
            pid = procs.spawn(argv, log, cwd=work).pid
            _wait(f"http://127.0.0.1:{port}/healthz", pid, log)
            return f"http://127.0.0.1:{port}", [pid], [bind] * len(fleet.ports)
        # headway's Endpoint Picker behind a real Envoy (the GIE reference data plane: ORIGINAL_DST on
        # the picker's header), the same decisions as the standalone gateway's, Envoy forwarding
        metrics_port = procs.free_port()
        pid = procs.spawn([*argv, "--mode", "epp", "--metrics-port", str(metrics_port)], log, cwd=work).pid
        _wait(f"http://127.0.0.1:{metrics_port}/healthz", pid, log)
        cfg = bootstrap(listen_port=procs.free_port(), admin_port=procs.free_port(), epp_port=port)
        envoy = EnvoyProcess(work, cfg, name=f"envoy-{spec.name}").start()
        return envoy.url, [pid, envoy.pid], [bind] * len(fleet.ports)
    exe = {
        "vllm-router": [str(BENCH_VENV / "vllm-router")],
        "sglang-router": [str(BENCH_VENV / "sglang-router"), "launch"],
    }
    argv = [
        *exe[spec.launch],
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--prometheus-host",
        "127.0.0.1",
        "--prometheus-port",
        str(procs.free_port()),
        "--worker-urls",
        *fleet.urls,
        *spec.args,
    ]
    nowhere = [f"tcp://127.0.0.1:{procs.free_port()}"] * len(fleet.ports)
    if spec.needs_relay:
        assert relay is not None
        for url, out in zip(fleet.urls, relay.outputs, strict=True):
            argv += ["--kv-event-source", f"{url}=tcp://127.0.0.1:{out}"]
        argv += ["--kv-event-block-size", str(BLOCK_SIZE), "--kv-event-model", "tiny"]
        nowhere = [f"tcp://127.0.0.1:{i}" for i in relay.inputs]
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    pid = procs.spawn(argv, log, env=env, cwd=work).pid
    _wait(f"http://127.0.0.1:{port}/v1/models", pid, log)
    return f"http://127.0.0.1:{port}", [pid], nowhere


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


async def drive(
    url: str,
    stream: Iterator[Request],
    rates: list[float],
    stage_s: float,
    seed: int,
    engines: list[str],
    drain_s: float,
    progress: Callable[[str], None],
) -> tuple[list[Sample], list[tuple[float, float]], list[list[dict[str, float]]]]:
    """Open-loop Poisson stages; returns the samples, each stage's (start, end) and engine counters at
    every stage boundary."""
    samples: list[Sample] = []
    tasks: list[asyncio.Task[None]] = []
    windows: list[tuple[float, float]] = []
    counters = [await asyncio.to_thread(engine_counters, engines)]
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for k, rate in enumerate(rates):
            rng = random.Random(seed * 1000 + k)
            start = time.perf_counter()
            t = 0.0
            while True:
                t += rng.expovariate(rate)
                if t >= stage_s:
                    break
                delay = start + t - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                s = Sample(k, time.perf_counter())
                samples.append(s)
                tasks.append(asyncio.create_task(_one(session, url, next(stream), s)))
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
    spec: RouterSpec, workload: str, args: argparse.Namespace, words: Words, work: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    fleet = Fleet(work / spec.name, [procs.free_port() for _ in range(args.engines)])
    fleet.work.mkdir(parents=True, exist_ok=True)
    relay = KvRelay(args.engines) if spec.needs_relay else None
    router_pids: list[int] = []
    try:
        if spec.launch in ("gateway", "envoy-epp"):
            url, router_pids, events = start_router(spec, fleet, fleet.work, relay)
            start_engines(fleet, args, events)
        else:
            events = [f"tcp://127.0.0.1:{i}" for i in relay.inputs] if relay else None
            start_engines(fleet, args, events or [f"tcp://127.0.0.1:{procs.free_port()}"] * args.engines)
            url, router_pids, _ = start_router(spec, fleet, fleet.work, relay)
        time.sleep(1.0)  # a metrics scrape of every engine before the first request
        stream = requests(workload, words, scale=args.scale, seed=args.seed)
        samples, windows, counters = asyncio.run(
            drive(
                url,
                stream,
                args.rates,
                args.stage_seconds,
                args.seed,
                fleet.urls,
                args.drain_seconds,
                lambda m: log(f"  {spec.name}: {m}"),
            )
        )
        first, last = counters[0], counters[-1]
        hits = sum(a["hits"] - b["hits"] for a, b in zip(last, first, strict=True))
        queries = sum(a["queries"] - b["queries"] for a, b in zip(last, first, strict=True))
        return {
            "kind": spec.kind,
            "hit_rate": hits / queries if queries else 0.0,
            "stages": stage_stats(samples, windows, counters, args.rates),
            "sent_per_stage": [sum(1 for s in samples if s.stage == k) for k in range(len(args.rates))],
        }
    finally:
        for pid in [*fleet.pids, *router_pids]:
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


def run_workload(workload: str, args: argparse.Namespace, words: Words, work: Path) -> dict[str, Any]:
    def log(m: str) -> None:
        print(m, file=sys.stderr, flush=True)

    log(f"{workload}: {len(args.routers)} routers × {len(args.rates)} stages of {args.stage_seconds:g}s")
    results = {}
    for name in args.routers:
        t0 = time.monotonic()
        results[name] = run_router(ROUTERS[name], workload, args, words, work / workload, log)
        log(f"  {name}: done in {time.monotonic() - t0:.0f}s")
    # The oracle sees exactly the prompts the run sent (the same seeded stream and arrivals for every router).
    per_stage = next(iter(results.values()))["sent_per_stage"]
    stream = requests(workload, words, scale=args.scale, seed=args.seed)
    pairs = oracle_hits([words.ids(r.prompt) for r in itertools.islice(stream, sum(per_stage))], BLOCK_SIZE)
    bounds = list(itertools.accumulate(per_stage, initial=0))
    oracle_stages = [hit_rate(pairs[a:b]) for a, b in itertools.pairwise(bounds)]
    doc = {
        "workload": workload,
        "versions": versions(),
        "seeds": [args.seed],
        "engines": args.engines,
        "gpu_profile": "H100",
        "scale": args.scale,
        "time_scale": args.time_scale,
        "kv_blocks_per_engine": kv_blocks_per_pod(args.scale, BLOCK_SIZE),
        "block_size": BLOCK_SIZE,
        "stage_seconds": args.stage_seconds,
        "load_generator": "asyncio open-loop Poisson client in bench/routing.py (aiperf's TTFT/ITL definitions)",
        "oracle_hit_rate": hit_rate(pairs),
        "oracle_hit_rate_per_stage": oracle_stages,
        "load_average_1m_at_end": os.getloadavg()[0],
        "routers": results,
    }
    doc["targets"] = targets(doc)
    return doc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="headway bench routing", description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", default="all", choices=[*WORKLOADS, "all"])
    p.add_argument("--engines", type=int, default=8)
    p.add_argument("--scale", type=int, default=20, help="Divide llm-d's token counts and KV capacity by this.")
    p.add_argument("--time-scale", type=float, default=0.035, help="Engines run this many times real time.")
    p.add_argument(
        "--qps-factor",
        type=float,
        default=19.0,
        help="Engine-time QPS per llm-d stage QPS (wall-clock QPS = this × --time-scale × llm-d QPS).",
    )
    p.add_argument("--llmd-stages", default="10,40,60,80", help="llm-d stage QPS to run (theirs: 3 … 60).")
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
        args.rates = [float(x) * args.qps_factor * args.time_scale for x in args.llmd_stages.split(",")]
    except ValueError:
        p.error(f"--llmd-stages: expected comma-separated numbers, got {args.llmd_stages!r}")
    args.routers = [r.strip() for r in args.routers.split(",") if r.strip()]
    unknown = [r for r in args.routers if r not in ROUTERS]
    if unknown:
        p.error(f"unknown routers {unknown}; known: {', '.join(ROUTERS)}")
    if args.engines < 2 or args.stage_seconds <= 0 or args.time_scale <= 0:
        p.error("--engines must be ≥ 2; --stage-seconds and --time-scale > 0")
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
