"""headway's control plane on the local cluster: CRD and RBAC installed, the operator run as its own
least-privilege ServiceAccount (a token from the real API server), as it runs in a cluster."""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import utils as k8s_utils

from headway.api.crd import KINDS
from headway.api.labels import GROUP
from headway.devenv import procs
from headway.devenv.cluster import LocalCluster
from headway.devenv.kubeconfig import read_server_and_ca, write_kubeconfig
from headway.devenv.paths import REPO_ROOT

CRD_DIR = REPO_ROOT / "deploy" / "crds"
RBAC_DIR = REPO_ROOT / "deploy" / "rbac"


def apply_yaml(api: k8s.ApiClient, path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            try:
                k8s_utils.create_from_dict(api, doc)
            except k8s_utils.FailToCreateError as e:
                if not all(getattr(x, "status", None) == 409 for x in e.api_exceptions):
                    raise


def install_crd_and_rbac(cluster: LocalCluster) -> None:
    api = cluster.api_client()
    core = k8s.CoreV1Api(api)
    try:
        core.create_namespace({"metadata": {"name": "headway-system"}})
    except k8s.ApiException as e:
        if e.status != 409:
            raise
    for path in sorted(CRD_DIR.glob("*.yaml")):
        apply_yaml(api, path)
    for path in sorted(RBAC_DIR.glob("*.yaml")):
        apply_yaml(api, path)
    ext = k8s.ApiextensionsV1Api(api)
    deadline = time.monotonic() + 30
    waiting = [f"{plural}.{GROUP}" for plural in KINDS]
    while waiting and time.monotonic() < deadline:
        crd = ext.read_custom_resource_definition(waiting[0])
        if any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or []):
            waiting.pop(0)
        else:
            time.sleep(0.2)
    if waiting:
        raise AssertionError(f"CRD {waiting[0]} not Established")


def service_account_kubeconfig(cluster: LocalCluster, path: Path, account: str = "headway-operator") -> Path:
    core = k8s.CoreV1Api(cluster.api_client())
    req = k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=86400))
    token = core.create_namespaced_service_account_token(account, "headway-system", req).status.token
    server, ca = read_server_and_ca(cluster.kubeconfig)
    return write_kubeconfig(
        path, server=server, ca=ca, user=f"system:serviceaccount:headway-system:{account}", token=token
    )


@dataclass
class OperatorProcess:
    """The operator as its own process. It serves the ModelRoute admission webhook on `webhook_port`
    (https://127.0.0.1:<port>, which the local API server reaches), so routes are checked as in a cluster;
    a restart keeps the port, and the operator points the webhook configuration at its new certificate."""

    kubeconfig: Path
    log: Path
    metrics_port: int
    liveness_port: int
    extra_args: tuple[str, ...] = ()
    webhook_port: int = field(default_factory=procs.free_port)
    pid: int = 0

    def start(self) -> OperatorProcess:
        argv = [
            sys.executable,
            "-m",
            "headway",
            "operator",
            "--metrics-port",
            str(self.metrics_port),
            "--liveness",
            f"http://127.0.0.1:{self.liveness_port}/healthz",
            "--resync-interval-s",
            "30",
            "--webhook-port",
            str(self.webhook_port),
            *self.extra_args,
        ]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        self.pid = procs.spawn(argv, self.log, env=env, cwd=self.log.parent).pid
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not procs.alive(self.pid):
                raise AssertionError(f"operator exited: {self.log.read_text()[-3000:]}")
            if self.healthy():
                return self
            time.sleep(0.2)
        raise AssertionError(f"operator not healthy: {self.log.read_text()[-3000:]}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def kill(self) -> None:
        procs.stop(self.pid, grace_s=0.01)

    def stop(self) -> None:
        procs.stop(self.pid, grace_s=10)


def pool_manifest(
    name: str,
    variants: list[dict[str, Any]],
    *,
    source: str,
    engine_args: list[str] | None = None,
    autoscaling: dict[str, Any] | None = None,
    model: str = "tiny",
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"name": model, "source": source, "maxModelLen": 2048, "engineArgs": engine_args or []},
        "variants": variants,
    }
    if autoscaling:
        spec["autoscaling"] = autoscaling
    return {
        "apiVersion": "inference.headway.dev/v1alpha1",
        "kind": "ModelPool",
        "metadata": {"name": name},
        "spec": spec,
    }


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
