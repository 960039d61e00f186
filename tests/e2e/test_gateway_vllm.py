"""Two real vLLM CPU engines: their KV events populate the gateway's index, and a repeated long prompt
goes to the engine that holds it, as that engine's own prefix-hit counter confirms."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from headway.devenv import procs
from headway.devenv.engines import VLLM_CPU_ENV, VLLM_PYTHON, kv_events_config, vllm_argv
from tests.conftest import eventually
from tests.e2e.fleet import metric_value, start_gateway, wait_http


@pytest.fixture
def vllm_pair(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    assert VLLM_PYTHON.exists(), "real vLLM is not installed: run `make vllm`"
    ports = [procs.free_port(), procs.free_port()]
    events = f"tcp://127.0.0.1:{procs.free_port()}"
    gateway, gw = start_gateway(tmp_path, ports, "--kv-events-bind", events, "--speculative-ttl-s", "0")
    env = {**os.environ, **VLLM_CPU_ENV}
    pids = []
    for port in ports:
        kv = kv_events_config(events, port)
        argv = vllm_argv(port, "--max-model-len", "2048", "--enable-prefix-caching", "--kv-events-config", kv)
        pids.append(procs.spawn(argv, tmp_path / f"vllm-{port}.log", env=env, cwd=tmp_path).pid)
    engines = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for url in [f"{e}/health" for e in engines]:
            wait_http(url, timeout_s=600)
        yield gateway, engines
    finally:
        for pid in [*pids, gw]:
            procs.stop(pid, grace_s=20)


def _complete(gateway: str, prompt: str) -> str:
    body = json.dumps({"model": "tiny", "prompt": prompt, "max_tokens": 2}).encode()
    req = urllib.request.Request(
        f"{gateway}/v1/completions", body, {"Content-Type": "application/json", "x-headway-debug": "1"}
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        r.read()
        return r.headers["x-headway-endpoint"]


def test_repeated_long_prompt_goes_to_the_engine_that_holds_it(vllm_pair: tuple[str, list[str]]) -> None:
    gateway, engines = vllm_pair
    prompt = "The gateway routes each request to the engine that holds its prefix. " * 40  # 960 tokens, 7 blocks
    eventually(lambda: metric_value(gateway, "headway_kvcache_index_keys") >= 0, timeout_s=10, what="gateway metrics")
    first = _complete(gateway, prompt)
    holder = next(e for e in engines if e.endswith(first))
    other = next(e for e in engines if e != holder)
    eventually(
        lambda: metric_value(gateway, "headway_kvcache_blocks_total") >= 7,
        timeout_s=30,
        what="the engine's BlockStored events indexed by the gateway",
    )
    hits = {e: metric_value(e, "vllm:prefix_cache_hits_total") for e in engines}
    for _ in range(3):
        assert _complete(gateway, prompt) == first
    assert metric_value(holder, "vllm:prefix_cache_hits_total") - hits[holder] == 3 * 7 * 128
    assert metric_value(other, "vllm:prefix_cache_hits_total") == hits[other]
