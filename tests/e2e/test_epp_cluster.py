"""On the local cluster: a ModelPool's simulated engine pods, headway's Endpoint Picker discovering them
(as its own ServiceAccount, with deploy/rbac/epp.yaml's namespaced rights), a real Envoy in front asking
it over ext_proc. Every request of a shared-prefix workload reaches the pod the picker chose (Envoy's
report and the engines' own counters), and kv-aware beats round-robin on the engines' prefix-hit rate."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from headway.api import POOL_LABEL
from headway.devenv import procs
from headway.devenv.cluster import LocalCluster
from headway.devenv.controlplane import RBAC_DIR, OperatorProcess, pool_manifest, service_account_kubeconfig
from headway.devenv.envoy import EnvoyProcess, bootstrap
from headway.devenv.tinymodel import tiny_model_dir
from tests.conftest import eventually
from tests.e2e.fleet import SERVED_KEY, metric_value, send_via_envoy, shared_prefix_prompts, wait_http

GROUP, VERSION, PLURAL = "inference.headway.dev", "v1alpha1", "modelpools"
REPLICAS = 3


def _grant_epp_rights(crd: LocalCluster, namespace: str) -> None:
    """deploy/rbac/epp.yaml's Role and RoleBinding, in the pool's namespace (as the chart renders them in
    its release namespace), for the headway-epp ServiceAccount."""
    rbac = k8s.RbacAuthorizationV1Api(crd.api_client())
    for doc in yaml.safe_load_all((RBAC_DIR / "epp.yaml").read_text()):
        if doc["kind"] == "Role":
            doc["metadata"]["namespace"] = namespace
            rbac.create_namespaced_role(namespace, doc)
        elif doc["kind"] == "RoleBinding":
            doc["metadata"]["namespace"] = namespace
            rbac.create_namespaced_role_binding(namespace, doc)


def _ready_pods(core: k8s.CoreV1Api, namespace: str) -> list[str]:
    return sorted(
        f"{p.status.pod_ip}:8000"
        for p in core.list_namespaced_pod(namespace).items
        if not p.metadata.deletion_timestamp
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    )


@pytest.fixture
def envoy_epp(
    crd: LocalCluster, operator: OperatorProcess, runner: Path, core: k8s.CoreV1Api, namespace: str, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    """(Envoy's URL, the picker's metrics URL) in front of a ready 3-replica pool."""
    custom = k8s.CustomObjectsApi(crd.api_client())
    variant = {"name": "h100", "gpuProduct": "NVIDIA-H100-80GB-HBM3", "replicas": REPLICAS, "maxReplicas": 4}
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, pool_manifest("tiny", [variant], source=str(tiny_model_dir()))
    )
    _grant_epp_rights(crd, namespace)
    kubeconfig = service_account_kubeconfig(crd, tmp_path / "epp.kubeconfig", "headway-epp")
    port, metrics_port = procs.free_port(), procs.free_port()
    argv = [sys.executable, "-m", "headway", "gateway", "--mode", "epp", "--discovery", "kubernetes"]
    argv += ["--namespace", namespace, "--port", str(port), "--metrics-port", str(metrics_port)]
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    pid = procs.spawn(argv, tmp_path / "epp.log", env=env, cwd=tmp_path).pid
    metrics = f"http://127.0.0.1:{metrics_port}"
    wait_http(f"{metrics}/healthz")  # 200 once discovery has listed the pools and pods
    eventually(lambda: len(_ready_pods(core, namespace)) == REPLICAS, timeout_s=90, what="3 ready engine pods")
    cfg = bootstrap(listen_port=procs.free_port(), admin_port=procs.free_port(), epp_port=port)
    envoy = EnvoyProcess(tmp_path, cfg).start()
    yield envoy.url, metrics
    envoy.stop()
    procs.stop(pid)
    assert "Traceback" not in (tmp_path / "epp.log").read_text()


def test_requests_through_envoy_reach_the_pod_the_picker_chose_and_kv_aware_wins(
    envoy_epp: tuple[str, str], core: k8s.CoreV1Api, namespace: str
) -> None:
    url, metrics = envoy_epp
    pods = _ready_pods(core, namespace)
    eventually(
        lambda: asyncio.run(send_via_envoy(url, ["warm"], "kv-aware", 3))[0][0] in pods, timeout_s=30, what="routing"
    )

    def counters() -> dict[str, tuple[float, float, float]]:
        out = {}
        for pod in pods:
            base = f"http://{pod}"
            out[pod] = (
                metric_value(base, "vllm:request_success_total", finished_reason="length"),
                metric_value(base, "vllm:prefix_cache_hits_total"),
                metric_value(base, "vllm:prefix_cache_queries_total"),
            )
        return out

    rates, pairs = {}, []
    for strategy, seed in (("round-robin", 3), ("kv-aware", 4)):
        before = counters()
        sent = asyncio.run(send_via_envoy(url, shared_prefix_prompts(strategy, seed, questions=6), strategy, 3))
        after = counters()
        pairs += sent
        delta = {p: tuple(a - b for a, b in zip(after[p], before[p], strict=True)) for p in pods}
        assert {p: d[0] for p, d in delta.items()} == {p: sum(1 for c, _ in sent if c == p) for p in pods}
        rates[strategy] = sum(d[1] for d in delta.values()) / sum(d[2] for d in delta.values())
    assert all(chosen == served for chosen, served in pairs), [p for p in pairs if p[0] != p[1]][:5]
    assert {c for c, _ in pairs} <= set(pods)
    print(f"engine prefix-cache hit rate through Envoy, picker on the cluster: {rates}")
    assert rates["kv-aware"] > rates["round-robin"]
    assert metric_value(metrics, "headway_gateway_served_by_total", outcome="chosen") >= len(pairs)


def test_a_model_route_picks_pool_and_pod_in_one_decision_through_envoy(
    crd: LocalCluster, operator: OperatorProcess, runner: Path, core: k8s.CoreV1Api, namespace: str, tmp_path: Path
) -> None:
    """Two pools and a ModelRoute behind one picker: a request for the route's model reaches a pod of the
    pool its rule names, with the served model in the body Envoy forwards, and its answer names the
    model the client asked for."""
    from tests.e2e.test_model_route import route_manifest

    custom = k8s.CustomObjectsApi(crd.api_client())
    variant = {"name": "h100", "gpuProduct": "NVIDIA-H100-80GB-HBM3", "replicas": 1}
    for name in ("small", "large"):
        body = pool_manifest(name, [variant], source=str(tiny_model_dir()), model=f"{name}-model")
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modelroutes", route_manifest(guard=None))
    _grant_epp_rights(crd, namespace)
    kubeconfig = service_account_kubeconfig(crd, tmp_path / "epp.kubeconfig", "headway-epp")
    port, metrics_port = procs.free_port(), procs.free_port()
    argv = [sys.executable, "-m", "headway", "gateway", "--mode", "epp", "--discovery", "kubernetes"]
    argv += ["--namespace", namespace, "--port", str(port), "--metrics-port", str(metrics_port)]
    pid = procs.spawn(argv, tmp_path / "epp.log", env={**os.environ, "KUBECONFIG": str(kubeconfig)}, cwd=tmp_path).pid
    envoy = None
    try:
        wait_http(f"http://127.0.0.1:{metrics_port}/healthz")
        eventually(lambda: len(_ready_pods(core, namespace)) == 2, timeout_s=90, what="2 ready engine pods")
        cfg = bootstrap(listen_port=procs.free_port(), admin_port=procs.free_port(), epp_port=port, response_body=True)
        envoy = EnvoyProcess(tmp_path, cfg).start()
        pool_of = {
            f"{p.status.pod_ip}:8000": p.metadata.labels[POOL_LABEL]
            for p in core.list_namespaced_pod(namespace, label_selector=POOL_LABEL).items
        }

        def ask(prompt: str, stream: bool) -> tuple[int, dict[str, str], bytes]:
            body = {"model": "auto", "messages": [{"role": "user", "content": prompt}], "max_tokens": 3}
            if stream:
                body["stream"] = True
            req = urllib.request.Request(
                f"{envoy.url}/v1/chat/completions",
                json.dumps(body).encode(),
                {"Content-Type": "application/json", "x-headway-debug": "1"},
            )
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return r.status, dict(r.headers), r.read()
            except urllib.error.HTTPError as e:
                return e.code, dict(e.headers), e.read()

        eventually(lambda: ask("factor x^2 - 9", False)[0] == 200, timeout_s=30, what="a routed answer")
        for prompt, pool in (("what is the derivative of x cubed", "large"), ("how long do I bake bread", "small")):
            for stream in (False, True):
                status, headers, raw = ask(prompt, stream)
                assert status == 200, raw
                assert headers["x-headway-pool"] == pool and headers["x-headway-served-model"] == f"{pool}-model"
                assert pool_of[headers[SERVED_KEY]] == pool  # Envoy's own report of where it went
                text = raw.decode()
                assert '"model":"auto"' in text and f"{pool}-model" not in text, text[:300]
    finally:
        if envoy is not None:
            envoy.stop()
        procs.stop(pid)
    assert "Traceback" not in (tmp_path / "epp.log").read_text()
