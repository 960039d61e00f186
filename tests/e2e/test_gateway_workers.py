"""`headway gateway --workers 2`: two processes share the port, one hub feeds both the engines' KV events
and each other's speculative entries, /metrics sums every process, and a worker that dies is replaced."""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from headway.devenv import procs
from tests.conftest import eventually
from tests.e2e.fleet import metric_value, start_engines, start_gateway


@dataclass
class Setup:
    gateway: str
    pid: int
    log: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("workers")
    ports = [procs.free_port() for _ in range(3)]
    events = f"tcp://127.0.0.1:{procs.free_port()}"
    gw, gpid = start_gateway(work, ports, "--workers", "2", "--kv-events-bind", events)
    engines = start_engines(work, ports, events)
    yield Setup(gw, gpid, work / "gateway.log")
    for pid in [*engines, gpid]:
        procs.stop(pid)
    assert "Traceback" not in (work / "gateway.log").read_text()


def _complete(gateway: str, prompt: str) -> tuple[int, str, str]:
    """(status, endpoint, worker pid); a fresh connection each time, so the kernel picks a worker anew."""
    body = json.dumps({"model": "tiny", "prompt": prompt, "max_tokens": 2}).encode()
    req = urllib.request.Request(
        f"{gateway}/v1/completions", body, {"Content-Type": "application/json", "x-headway-debug": "1"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
            return r.status, r.headers["x-headway-endpoint"], r.headers["x-headway-worker"]
    except urllib.error.HTTPError as e:
        return e.code, "", ""
    except OSError:
        return 0, "", ""


def test_every_worker_sends_a_prefix_to_the_pod_that_holds_it(setup: Setup) -> None:
    prompt = "A system prompt every tenant of group seven shares, about pools and caches. " * 20
    status, home, _ = _complete(setup.gateway, prompt)
    assert status == 200

    def both_workers() -> set[str] | None:
        workers = {_complete(setup.gateway, "hello")[2] for _ in range(20)}
        return workers if len(workers) >= 2 else None

    eventually(both_workers, timeout_s=30, what="requests served by both workers")
    results = [_complete(setup.gateway, prompt) for _ in range(16)]
    workers = {w for _, _, w in results}
    assert len(workers) == 2, f"both workers routed the prompt: {workers}"
    assert {pod for _, pod, _ in results} == {home}, f"the prefix stays on {home}: {results}"
    assert {s for s, _, _ in results} == {200}


def test_metrics_from_any_worker_count_every_process(setup: Setup) -> None:
    before = metric_value(setup.gateway, "headway_gateway_requests_total", strategy="kv-aware", code="200")
    sent = 12
    for i in range(sent):
        assert _complete(setup.gateway, f"count me {i}")[0] == 200
    for _ in range(4):  # whichever worker answers the scrape, the sum is the same
        after = metric_value(setup.gateway, "headway_gateway_requests_total", strategy="kv-aware", code="200")
        assert after - before == sent
    assert metric_value(setup.gateway, "headway_kvcache_index_keys") > 0, "the hub's index size is exposed"


def test_a_killed_worker_is_replaced_and_serving_goes_on(setup: Setup) -> None:
    victim = int(_complete(setup.gateway, "who serves")[2])
    os.kill(victim, signal.SIGKILL)

    def new_worker() -> set[str] | None:
        workers = {w for s, _, w in (_complete(setup.gateway, "after") for _ in range(10)) if s == 200}
        return workers if len(workers) == 2 and str(victim) not in workers else None

    eventually(new_worker, timeout_s=30, what="two live workers again, the killed one replaced")
    assert "starting another" in setup.log.read_text()
