"""Two gateway replicas sharing the KV index through real Redis; Redis dying mid-load fails no request."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import redis
from tokenizers import Tokenizer

from headway.devenv import procs
from headway.devenv.services import RedisServer
from headway.devenv.tinymodel import tiny_model_dir
from headway.kvcache.keys import block_keys, root_key
from headway.kvcache.redis_index import RedisLookup
from tests.conftest import eventually
from tests.e2e.fleet import start_engines, start_gateway, wait_http


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
    _complete(r.b, f"warm-up {tag}")  # B's first Redis connection is not what this test measures
    pod = _complete(r.a, prompt)
    db = redis.Redis.from_url(r.redis.url)
    # Wait until the engine's events reached A and A's mirror wrote them: only then is B's choice informed.
    eventually(lambda: db.hexists(f"hw:k:{keys[-1]}", pod), timeout_s=15, what="A's index mirrored into Redis")
    for _ in range(3):
        got = _complete(r.b, prompt)
        assert got == pod, f"B chose {got}, A chose {pod}; B's scores for its pick: {_complete.last_scores}"  # type: ignore[attr-defined]


def test_two_replicas_send_a_prefix_to_the_same_pod(replicas: Replicas) -> None:
    _shared_prefix_lands_on_one_pod(replicas, "first")


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
    replicas.redis.start()  # same port, empty: the indexer writes its state again
    # A replica that found Redis down stops asking for RedisLookup's retry interval; let that pass.
    time.sleep(RedisLookup(replicas.redis.url).retry_after_s + 0.2)
    _shared_prefix_lands_on_one_pod(replicas, "after-restart")
