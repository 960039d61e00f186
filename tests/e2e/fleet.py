"""Simulated engines and gateways as local processes on 127.0.0.1, for gateway tests without a cluster."""

from __future__ import annotations

import asyncio
import random
import urllib.request
from pathlib import Path

import aiohttp

from headway.devenv import procs
from headway.devenv.engines import gateway_argv, kv_events_config, sim_argv
from headway.gateway.extproc import SERVED_KEY
from tests.conftest import eventually


def wait_http(url: str, timeout_s: float = 60) -> None:
    def up() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    eventually(up, timeout_s=timeout_s, what=f"{url} answering")


def start_engines(work: Path, ports: list[int], events: str) -> list[int]:
    pids = []
    for port in ports:
        argv = sim_argv(
            port,
            "--gpu-profile",
            "L4",
            "--time-scale",
            "2",
            "--block-size",
            "16",
            "--kv-cache-blocks",
            "160",
            "--max-model-len",
            "2048",
            "--kv-events-config",
            kv_events_config(events, port),
            "--log-level",
            "warning",
        )
        pids.append(procs.spawn(argv, work / f"engine-{port}.log", cwd=work).pid)
    for port in ports:
        wait_http(f"http://127.0.0.1:{port}/health")
    return pids


def start_gateway(work: Path, ports: list[int], *args: str, name: str = "gateway") -> tuple[str, int]:
    """A static-discovery gateway over the engines on `ports`; returns (url, pid)."""
    port = procs.free_port()
    argv = gateway_argv(port, [f"http://127.0.0.1:{p}" for p in ports], *args)
    pid = procs.spawn(argv, work / f"{name}.log", cwd=work).pid
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return f"http://127.0.0.1:{port}", pid


def metric_value(url: str, name: str, **labels: str) -> float:
    """One sample from a /metrics page: `name` with at least these labels (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def shared_prefix_prompts(tag: str, seed: int, questions: int, groups: int = 6) -> list[str]:
    """`groups` long system prompts, `questions` short questions on each, shuffled with `seed`: the workload
    on which prefix-aware routing must beat round-robin."""
    rng = random.Random(seed)
    systems = [
        f"{tag} system {g}: you answer questions about fleet {g}, its pools and caches. " * 10 for g in range(groups)
    ]
    prompts = [
        f"{systems[g]} Question {q} about node {q * groups + g}?" for g in range(groups) for q in range(questions)
    ]
    rng.shuffle(prompts)
    return prompts


async def send_via_envoy(url: str, prompts: list[str], strategy: str, concurrency: int) -> list[tuple[str, str]]:
    """Completions through an Envoy that asks headway's EPP; (the endpoint the EPP chose, the endpoint Envoy
    reports it served) per request."""
    sem, out = asyncio.Semaphore(concurrency), []

    async def one(session: aiohttp.ClientSession, prompt: str) -> None:
        async with sem:
            body = {"model": "tiny", "prompt": prompt, "max_tokens": 4, "ignore_eos": True}
            headers = {"x-headway-debug": "1", "x-headway-strategy": strategy}
            async with session.post(f"{url}/v1/completions", json=body, headers=headers) as r:
                assert r.status == 200, await r.text()
                await r.read()
                out.append((r.headers["x-headway-endpoint"], r.headers[SERVED_KEY]))

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session, p) for p in prompts))
    return out
