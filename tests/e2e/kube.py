"""Small helpers for e2e tests: manifests of plain workloads and reads of their pods."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from headway.api import ENGINE_LABEL, GPU_PRODUCT_LABEL, GPU_RESOURCE
from headway.devenv import procs
from headway.devenv.cluster import LocalCluster
from headway.devenv.controlplane import service_account_kubeconfig


@contextlib.contextmanager
def discovering_gateway(cluster: LocalCluster, namespace: str, tmp_path: Path, *extra: str) -> Iterator[str]:
    """headway's gateway as its own process and ServiceAccount, discovering the namespace's pools and
    routes; its base URL. Its log is tmp_path/gateway.log."""
    port = procs.free_port()
    kubeconfig = service_account_kubeconfig(cluster, tmp_path / "gateway.kubeconfig", "headway-gateway")
    argv = [sys.executable, "-m", "headway", "gateway", "--discovery", "kubernetes", "--namespace", namespace]
    pid = procs.spawn(
        [*argv, "--port", str(port), *extra],
        tmp_path / "gateway.log",
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        cwd=tmp_path,
    ).pid
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        procs.stop(pid)


def deployment(
    name: str,
    command: list[str],
    *,
    gpus: int = 0,
    product: str | None = None,
    port: int = 8000,
    labels: dict[str, str] | None = None,
    probe_path: str | None = "/",
    annotations: dict[str, str] | None = None,
    service_account: str | None = None,
) -> dict[str, Any]:
    labels = {"app": name, ENGINE_LABEL: "test", **(labels or {})}
    container: dict[str, Any] = {
        "name": "main",
        "image": "example.invalid/test:1",
        "command": command,
        "ports": [{"name": "http", "containerPort": port}],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "resources": {"limits": {GPU_RESOURCE: str(gpus)}} if gpus else {},
    }
    if probe_path:
        container["readinessProbe"] = {"httpGet": {"path": probe_path, "port": "http"}, "periodSeconds": 1}
    spec: dict[str, Any] = {"containers": [container], "terminationGracePeriodSeconds": 5}
    if product:
        spec["nodeSelector"] = {GPU_PRODUCT_LABEL: product}
    if service_account:
        spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": labels, "annotations": annotations or {}}, "spec": spec},
        },
    }


def pods_of(core: k8s.CoreV1Api, ns: str, app: str) -> list[k8s.V1Pod]:
    return core.list_namespaced_pod(ns, label_selector=f"app={app}").items


def condition(pod: k8s.V1Pod, kind: str) -> k8s.V1PodCondition | None:
    return next((c for c in pod.status.conditions or [] if c.type == kind), None)


def is_ready(pod: k8s.V1Pod) -> bool:
    c = condition(pod, "Ready")
    return c is not None and c.status == "True"


def event_reasons(core: k8s.CoreV1Api, ns: str, pod: str) -> list[tuple[str, str]]:
    evs = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={pod}").items
    return [(e.reason, e.message or "") for e in evs]


def namespace_report(core: k8s.CoreV1Api, ns: str, *logs: Path, tail_chars: int = 2500) -> str:
    """What a person debugging a stuck wait would look at first: the namespace's Deployments, its pods
    (phase, node, conditions), its newest events, and the tails of the given component logs."""
    lines = [f"--- namespace {ns}"]
    apps = k8s.AppsV1Api(core.api_client)
    for d in apps.list_namespaced_deployment(ns).items:
        st = d.status
        lines.append(f"deployment {d.metadata.name}: spec {d.spec.replicas} ready {st.ready_replicas} of {st.replicas}")
    for p in core.list_namespaced_pod(ns).items:
        conds = ",".join(f"{c.type}={c.status}" for c in p.status.conditions or [])
        deleting = " deleting" if p.metadata.deletion_timestamp else ""
        lines.append(f"pod {p.metadata.name}: {p.status.phase} on {p.spec.node_name} [{conds}]{deleting}")
    evs = sorted(core.list_namespaced_event(ns).items, key=lambda e: str(e.last_timestamp or e.event_time or ""))
    lines += [f"event {e.involved_object.kind}/{e.involved_object.name} {e.reason}: {e.message}" for e in evs[-15:]]
    for log in logs:
        text = log.read_text(errors="replace") if log.exists() else "(no log)"
        lines.append(f"--- {log.name} (tail)\n{text[-tail_chars:]}")
    return "\n".join(lines)
