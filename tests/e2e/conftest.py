"""e2e fixtures: the operator running as its own ServiceAccount against the session cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from headway.devenv import procs
from headway.devenv.cluster import LocalCluster
from headway.devenv.controlplane import OperatorProcess, install_crd_and_rbac, service_account_kubeconfig


@pytest.fixture(scope="session")
def crd(cluster: LocalCluster) -> LocalCluster:
    install_crd_and_rbac(cluster)
    return cluster


@pytest.fixture(scope="session")
def operator(crd: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    d = tmp_path_factory.mktemp("operator")
    # Every namespace but the shortened demo's and the fault smoke's: each helm-installs an operator of its
    # own for its pools.
    op = OperatorProcess(
        service_account_kubeconfig(crd, d / "kubeconfig"),
        d / "operator.log",
        procs.free_port(),
        procs.free_port(),
        ("--namespace", "!demo-*", "--namespace", "!faults-*"),
    ).start()
    yield op
    op.stop()
    text = op.log.read_text()
    assert "Traceback" not in text, text[-3000:]
