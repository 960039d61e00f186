"""Local mode, 4 simulated engines, a shared-prefix workload: kv-aware routing beats round-robin on the
engines' own prefix-cache hit rate and on TTFT p90, measured in the same run on cold engines each time."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from headway.devenv import procs
from headway.devenv.engines import gateway_argv
from tests.e2e.fleet import metric_value
from tests.e2e.fleet import start_engines as _start_engines
from tests.e2e.fleet import wait_http as _wait_http


@dataclass
class Fleet:
    engines: list[str]
    gateway: str
    pids: list[int]
    events_endpoint: str


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    ports = [procs.free_port() for _ in range(4)]
    events = f"tcp://127.0.0.1:{procs.free_port()}"
    gw_port = procs.free_port()
    engines = [f"http://127.0.0.1:{p}" for p in ports]
    argv = gateway_argv(gw_port, engines, "--kv-events-bind", events, "--max-body-bytes", str(64 * 1024))
    gw = procs.spawn(argv, tmp_path / "gateway.log", cwd=tmp_path).pid
    _wait_http(f"http://127.0.0.1:{gw_port}/healthz")
    f = Fleet([f"http://127.0.0.1:{p}" for p in ports], f"http://127.0.0.1:{gw_port}", [], events)
    f.pids = _start_engines(tmp_path, ports, events)
    yield f
    for pid in [*f.pids, gw]:
        procs.stop(pid)


def _restart_engines(f: Fleet, work: Path) -> None:
    for pid in f.pids:
        procs.stop(pid)
    f.pids = _start_engines(work, [int(u.rsplit(":", 1)[1]) for u in f.engines], f.events_endpoint)


def workload(seed: int) -> list[str]:
    rng = random.Random(seed)
    groups = [
        f"System {g}: you answer questions about cluster {g} and its pools, routers and caches. " * 12 for g in range(8)
    ]
    prompts = [f"{groups[g]} Question {q} about node {q * 7 + g}?" for g in range(8) for q in range(12)]
    rng.shuffle(prompts)
    return prompts


async def _run(gateway: str, strategy: str, prompts: list[str], concurrency: int = 6) -> list[float]:
    sem, ttfts = asyncio.Semaphore(concurrency), []

    async def one(session: aiohttp.ClientSession, prompt: str) -> None:
        async with sem:
            t0 = time.perf_counter()
            body = {"model": "tiny", "prompt": prompt, "max_tokens": 8, "ignore_eos": True, "stream": True}
            async with session.post(
                f"{gateway}/v1/completions", json=body, headers={"x-headway-strategy": strategy}
            ) as r:
                assert r.status == 200, await r.text()
                first = None
                async for line in r.content:
                    if first is None and line.startswith(b"data: {"):
                        first = time.perf_counter() - t0
                assert first is not None
                ttfts.append(first)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session, p) for p in prompts))
    return ttfts


def _measure(f: Fleet, strategy: str, prompts: list[str]) -> tuple[float, float]:
    hits0 = sum(metric_value(e, "vllm:prefix_cache_hits_total") for e in f.engines)
    queries0 = sum(metric_value(e, "vllm:prefix_cache_queries_total") for e in f.engines)
    ttfts = asyncio.run(_run(f.gateway, strategy, prompts))
    hits = sum(metric_value(e, "vllm:prefix_cache_hits_total") for e in f.engines) - hits0
    queries = sum(metric_value(e, "vllm:prefix_cache_queries_total") for e in f.engines) - queries0
    return hits / queries, statistics.quantiles(ttfts, n=10)[-1]


def test_kv_aware_beats_round_robin_on_engine_hit_rate_and_ttft_p90(fleet: Fleet, tmp_path: Path) -> None:
    prompts = workload(seed=7)
    time.sleep(1.0)  # the gateway's first metrics scrape of the fresh engines
    rr_hit, rr_p90 = _measure(fleet, "round-robin", prompts)
    _restart_engines(fleet, tmp_path)
    time.sleep(1.0)
    kv_hit, kv_p90 = _measure(fleet, "kv-aware", prompts)
    print(
        f"round-robin: hit {rr_hit:.3f} ttft p90 {rr_p90 * 1000:.0f} ms; "
        f"kv-aware: hit {kv_hit:.3f} ttft p90 {kv_p90 * 1000:.0f} ms"
    )
    assert kv_hit > rr_hit
    assert kv_p90 < rr_p90


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, body, {"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        pytest.param(b"{not json", 400, "body", id="malformed-json"),
        pytest.param(b'{"prompt": "x"}', 400, "model", id="missing-model"),
        pytest.param(b'{"model": "tiny", "prompt": 5}', 400, "prompt", id="wrong-type"),
        pytest.param(b'{"model": "other", "prompt": "x"}', 404, "model", id="unknown-model"),
        pytest.param(b'{"model": "tiny", "prompt": "' + b"x" * 70_000 + b'"}', 413, "body", id="oversize"),
    ],
)
def test_bad_requests_get_openai_errors(fleet: Fleet, body: bytes, status: int, param: str) -> None:
    code, out = _post(f"{fleet.gateway}/v1/completions", body)
    assert code == status, out
    assert out["error"]["code"] == status and out["error"]["param"] == param and out["error"]["message"]


def test_the_gateway_counts_each_requests_shape_for_the_autoscaler(fleet: Fleet) -> None:
    """Prompt tokens from the gateway's tokenizer, generated tokens from the response (usage, or one
    stream frame per token), counted in power-of-two buckets per model."""
    long_prompt = "the pool routes by prefix " * 22  # 200 tokens of the tiny model: in the 256 bucket
    cases = [
        ("/v1/completions", {"prompt": "hi", "max_tokens": 40}, "64"),
        ("/v1/completions", {"prompt": long_prompt, "max_tokens": 9, "stream": True}, "16"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 17, "stream": True},
            "32",
        ),
        (
            "/v1/completions",
            {"prompt": "hi", "max_tokens": 100, "stream": True, "stream_options": {"include_usage": True}},
            "128",
        ),
    ]
    for path, body, _ in cases:
        req = urllib.request.Request(
            f"{fleet.gateway}{path}",
            json.dumps({"model": "tiny", "ignore_eos": True, **body}).encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200
            r.read()
    name = "headway_gateway_request_shapes_total"
    assert metric_value(fleet.gateway, name, model="tiny", input_tokens_le="64", output_tokens_le="64") == 1
    assert metric_value(fleet.gateway, name, model="tiny", input_tokens_le="256", output_tokens_le="16") == 1
    assert metric_value(fleet.gateway, name, model="tiny", output_tokens_le="32") == 1
    assert metric_value(fleet.gateway, name, model="tiny", input_tokens_le="64", output_tokens_le="128") == 1


def test_killed_engine_costs_no_failed_non_streaming_request(fleet: Fleet) -> None:
    time.sleep(1.0)
    procs.stop(fleet.pids[0], grace_s=0.01)

    async def burst() -> list[int]:
        async with aiohttp.ClientSession() as s:

            async def one(i: int) -> int:
                body = {"model": "tiny", "prompt": f"retry {i}", "max_tokens": 4}
                async with s.post(
                    f"{fleet.gateway}/v1/completions", json=body, headers={"x-headway-strategy": "round-robin"}
                ) as r:
                    await r.read()
                    return r.status

            return await asyncio.gather(*(one(i) for i in range(24)))

    assert asyncio.run(burst()) == [200] * 24


def test_stream_cut_by_a_dying_engine_ends_with_an_error_event(fleet: Fleet) -> None:
    time.sleep(1.0)

    async def stream() -> list[bytes]:
        body = {"model": "tiny", "prompt": "a long story", "max_tokens": 1500, "ignore_eos": True, "stream": True}
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{fleet.gateway}/v1/completions", json=body, headers={"x-headway-debug": "1"}) as r,
        ):
            victim = r.headers["x-headway-endpoint"]
            lines = []
            async for line in r.content:
                lines.append(line)
                if len(lines) == 10:
                    port = int(victim.rsplit(":", 1)[1])
                    procs.stop(fleet.pids[[int(u.rsplit(":", 1)[1]) for u in fleet.engines].index(port)], grace_s=0.01)
            return lines

    lines = asyncio.run(asyncio.wait_for(stream(), timeout=30))
    data = [ln for ln in lines if ln.startswith(b"data: ")]
    assert data[-1].strip() == b"data: [DONE]"
    assert b'"error"' in data[-2]


def test_request_is_held_while_no_engine_is_up_and_served_when_one_returns(fleet: Fleet, tmp_path: Path) -> None:
    for pid in fleet.pids:
        procs.stop(pid, grace_s=0.01)

    async def held_request() -> int:
        async with aiohttp.ClientSession() as s:

            async def late_start() -> None:
                await asyncio.sleep(2.0)
                fleet.pids = await asyncio.to_thread(
                    _start_engines, tmp_path, [int(u.rsplit(":", 1)[1]) for u in fleet.engines], fleet.events_endpoint
                )

            starter = asyncio.create_task(late_start())
            body = {"model": "tiny", "prompt": "are you back?", "max_tokens": 2}
            async with s.post(f"{fleet.gateway}/v1/completions", json=body) as r:
                await r.read()
                await starter
                return r.status

    assert asyncio.run(held_request()) == 200
    metrics = urllib.request.urlopen(f"{fleet.gateway}/metrics", timeout=5).read().decode()
    assert 'headway_gateway_held_requests_total{model="tiny"} 1.0' in metrics
