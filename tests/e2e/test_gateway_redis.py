"""Two gateway replicas sharing the KV index through real Redis; Redis dying mid-load fails no request."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import redis
from tokenizers import Tokenizer

from headway.api.labels import METRIC_GATEWAY_SHARED_LOOKUPS
from headway.devenv import procs
from headway.devenv.services import RedisServer
from headway.devenv.tinymodel import tiny_model_dir
from headway.gateway.auth import hash_key
from headway.kvcache.keys import block_keys, root_key
from headway.kvcache.redis_index import RedisLookup
from tests.conftest import eventually
from tests.e2e.fleet import metric_value, start_engines, start_gateway, wait_http


@dataclass
class Replicas:
    a: str  # receives the engines' KV events
    b: str  # does not: knows only what Redis says
    redis: RedisServer


@pytest.fixture(params=["embedded", "standalone"])
def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Replicas]:
    """embedded: replica A indexes the events itself; standalone: `headway kvcache` does, for both."""
    redis = RedisServer(tmp_path / "redis").start()
    ports = [procs.free_port() for _ in range(4)]
    events = f"tcp://127.0.0.1:{procs.free_port()}"
    pids = []
    if request.param == "standalone":
        health = procs.free_port()
        pids.append(
            procs.spawn(
                [
                    sys.executable,
                    "-m",
                    "headway",
                    "kvcache",
                    "--bind",
                    events,
                    "--redis-url",
                    redis.url,
                    "--port",
                    str(health),
                ],
                tmp_path / "kvcache.log",
                cwd=tmp_path,
            ).pid
        )
        wait_http(f"http://127.0.0.1:{health}/healthz")
        a, pa = start_gateway(tmp_path, ports, "--redis-url", redis.url, name="gw-a")
    else:
        a, pa = start_gateway(tmp_path, ports, "--kv-events-bind", events, "--redis-url", redis.url, name="gw-a")
    b, pb = start_gateway(tmp_path, ports, "--redis-url", redis.url, "--speculative-ttl-s", "0", name="gw-b")
    pids += [pa, pb, *start_engines(tmp_path, ports, events)]
    yield Replicas(a, b, redis)
    for pid in pids:
        procs.stop(pid)
    redis.stop()


def _complete(gateway: str, prompt: str) -> str:
    body = json.dumps({"model": "tiny", "prompt": prompt, "max_tokens": 2}).encode()
    req = urllib.request.Request(
        f"{gateway}/v1/completions", body, {"Content-Type": "application/json", "x-headway-debug": "1"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()
        _complete.last_scores = r.headers.get("x-headway-scores")  # type: ignore[attr-defined]
        return r.headers["x-headway-endpoint"]


def _shared_prefix_lands_on_one_pod(r: Replicas, tag: str) -> None:
    prompt = f"Shared system prompt {tag} about caches, pools and routers. " * 20
    keys = block_keys(
        Tokenizer.from_file(str(tiny_model_dir() / "tokenizer.json")).encode(prompt).ids, 16, root_key("tiny")
    )
    # B's first Redis lookup (long enough to have blocks) opens its connection: not what this test measures
    _complete(r.b, f"Warm-up {tag} that shares nothing with the prompt below. " * 4)
    pod = _complete(r.a, prompt)
    db = redis.Redis.from_url(r.redis.url)
    # Wait until the engine's events reached A and A's mirror wrote them: only then is B's choice informed.
    eventually(lambda: db.hexists(f"hw:k:{keys[-1]}", pod), timeout_s=15, what="A's index mirrored into Redis")
    for _ in range(3):
        got = _complete(r.b, prompt)
        assert got == pod, f"B chose {got}, A chose {pod}; B's scores for its pick: {_complete.last_scores}"  # type: ignore[attr-defined]


def test_two_replicas_send_a_prefix_to_the_same_pod(replicas: Replicas) -> None:
    _shared_prefix_lands_on_one_pod(replicas, "first")
    assert metric_value(replicas.b, METRIC_GATEWAY_SHARED_LOOKUPS, result="ok") >= 3


def test_redis_killed_mid_load_fails_no_request_and_sharing_resumes(replicas: Replicas) -> None:
    async def load(n: int) -> list[int]:
        async with aiohttp.ClientSession() as s:

            async def one(i: int) -> int:
                gw = replicas.a if i % 2 else replicas.b
                body = {"model": "tiny", "prompt": f"Load {i % 5}: tell me about prefix caches. " * 10, "max_tokens": 2}
                async with s.post(f"{gw}/v1/completions", json=body) as resp:
                    await resp.read()
                    return resp.status

            statuses = []
            for start in range(0, n, 8):
                statuses += await asyncio.gather(*(one(i) for i in range(start, min(n, start + 8))))
            return statuses

    async def scenario() -> list[int]:
        first = asyncio.create_task(load(64))
        await asyncio.sleep(0.3)
        replicas.redis.stop()  # mid-load
        out = await first
        out += await load(32)  # while Redis is down
        return out

    statuses = asyncio.run(scenario())
    assert statuses == [200] * len(statuses)
    assert metric_value(replicas.b, METRIC_GATEWAY_SHARED_LOOKUPS, result="down") > 0  # counted, not hidden
    replicas.redis.start()  # same port, empty: the indexer writes its state again
    # A replica that found Redis down stops asking for RedisLookup's retry interval; let that pass.
    time.sleep(RedisLookup(replicas.redis.url).retry_after_s + 0.2)
    _shared_prefix_lands_on_one_pod(replicas, "after-restart")


def test_api_keys_are_checked_and_limits_shared_through_redis(tmp_path: Path) -> None:
    redis_srv = RedisServer(tmp_path / "redis").start()
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        f"keys:\n- {{name: team-a, sha256: {hash_key('sk-a')}, rpm: 4}}\n"
        f"- {{name: team-b, sha256: {hash_key('sk-b')}, tpm: 100}}\n"
    )
    port = procs.free_port()
    gw1, p1 = start_gateway(tmp_path, [port], "--api-keys-file", str(keys), "--redis-url", redis_srv.url, name="k1")
    gw2, p2 = start_gateway(tmp_path, [port], "--api-keys-file", str(keys), "--redis-url", redis_srv.url, name="k2")
    engines = start_engines(tmp_path, [port], f"tcp://127.0.0.1:{procs.free_port()}")
    try:

        def call(gw: str, key: str | None, max_tokens: int = 2) -> tuple[int, dict, str | None]:
            headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
            body = json.dumps({"model": "tiny", "prompt": "hello", "max_tokens": max_tokens}).encode()
            req = urllib.request.Request(f"{gw}/v1/completions", body, headers)
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return r.status, json.loads(r.read()), None
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read()), e.headers.get("Retry-After")

        assert call(gw1, None)[0] == 401
        assert call(gw1, "sk-wrong")[1]["error"]["type"] == "invalid_api_key"
        # 4 requests a minute for team-a, counted across both replicas (a window edge may split them).
        statuses = [call(gw, "sk-a")[0] for gw in (gw1, gw2, gw1, gw2, gw1, gw2, gw1, gw2, gw1)]
        assert statuses.count(429) >= 1 and statuses[:4].count(200) >= 3
        _, out, retry = next(c for c in (call(gw2, "sk-a") for _ in range(5)) if c[0] == 429)
        assert "requests per minute" in out["error"]["message"] and retry is not None and 1 <= int(retry) <= 60
        # team-b: 100 tokens a minute; asking for 90 completion tokens twice goes over.
        assert call(gw1, "sk-b", 90)[0] == 200
        assert call(gw2, "sk-b", 90)[0] == 429
    finally:
        for pid in [*engines, p1, p2]:
            procs.stop(pid)
        redis_srv.stop()
