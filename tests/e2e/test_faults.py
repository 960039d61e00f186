"""The fault matrix's smoke (`headway bench faults` runs them all): three faults injected mid-load into
headway as its chart installs it on the session cluster, each row held to its goals."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from bench.faults import SMOKE, Env, run_matrix, setup, table
from headway.devenv.chart import helm
from headway.devenv.cluster import LocalCluster


@pytest.fixture(scope="module")
def env(cluster: LocalCluster, runner: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    suffix = uuid.uuid4().hex[:5]
    ns, pools = f"faults-{suffix}", f"faults-pools-{suffix}"
    e = setup(cluster, tmp_path_factory.mktemp("faults"), namespace=ns, pools_namespace=pools, release=f"f{suffix}")
    yield e
    e.stop()
    core = k8s.CoreV1Api(cluster.api_client())
    core.delete_namespace(pools)
    helm("uninstall", f"f{suffix}", "--namespace", ns, "--wait", kubeconfig=cluster.kubeconfig)
    core.delete_namespace(ns)


def test_three_faults_mid_load_meet_their_goals(env: Env) -> None:
    rows = run_matrix(env, SMOKE, progress=lambda _: None, rate=5.0, before_s=4.0, during_s=8.0, after_s=8.0)
    assert [r.fault for r in rows] == list(SMOKE)
    assert all(r.sent > 0 and r.succeeded > 0 for r in rows), table(rows)
    assert all(all(r.goals.values()) for r in rows), table(rows)
