"""Session fixtures that start real components: the local cluster, the runner, Redis, Prometheus."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from kubernetes import client as k8s

from headway.devenv import procs
from headway.devenv.cluster import LocalCluster
from headway.devenv.runner import spawn_runner
from headway.devenv.services import PrometheusServer, RedisServer

T = TypeVar("T")
TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test gets the marker of its folder (unit, e2e, conformance)."""
    for item in items:
        rel = Path(str(item.fspath)).relative_to(TESTS)
        item.add_marker(getattr(pytest.mark, rel.parts[0]))


def eventually(
    check: Callable[[], T | None],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.1,
    explain: Callable[[], str] | None = None,
) -> T:
    """Poll `check` until it returns something truthy; fail naming what was awaited and the last value,
    plus what `explain` reports of the system at that moment (a timeout alone rarely says why)."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    detail = f"\n{explain()}" if explain else ""
    raise AssertionError(f"{what}: not true after {timeout_s}s (last: {last!r}){detail}")


async def eventually_async(check: Callable[[], object], *, what: str, timeout_s: float = 10) -> None:
    """`eventually` inside an event loop: poll without blocking the loop the system under test runs on."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true after {timeout_s}s")
        await asyncio.sleep(0.02)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("cluster"))
    c.up()
    pids = dict(c.state.pids) if c.state else {}
    yield c
    c.down()
    left = {name: pid for name, pid in pids.items() if procs.alive(pid)}
    assert not left, f"cluster components still running after down: {left}"


@pytest.fixture(scope="session")
def core(cluster: LocalCluster) -> k8s.CoreV1Api:
    return k8s.CoreV1Api(cluster.api_client())


@pytest.fixture(scope="session")
def apps(cluster: LocalCluster) -> k8s.AppsV1Api:
    return k8s.AppsV1Api(cluster.api_client())


@pytest.fixture(scope="session")
def runner(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The dev runner as its own process, as a developer runs it. Yields its state directory."""
    state = tmp_path_factory.mktemp("runner")
    proc = spawn_runner(cluster.kubeconfig, state, env=os.environ)
    yield state
    procs.stop(proc.pid, grace_s=30.0)
    leftovers = procs.group_members(proc.pid)
    assert not leftovers, f"runner left processes behind: {leftovers}"


@pytest.fixture
def namespace(core: k8s.CoreV1Api) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    eventually(lambda: _has_default_sa(core, name), timeout_s=30, what=f"default ServiceAccount in {name}")
    yield name
    core.delete_namespace(name)


def _has_default_sa(core: k8s.CoreV1Api, ns: str) -> bool:
    return any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(ns).items)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def prometheus_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., PrometheusServer]]:
    started: list[PrometheusServer] = []

    def start(scrape_configs: list[dict], **kw: object) -> PrometheusServer:
        server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), scrape_configs, **kw).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for s in started:
        s.stop()


def run_cli(*args: str, env: dict[str, str] | None = None, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headway", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout_s,
        check=False,
    )
