"""`make demo`: the local cluster with GPU nodes, the runner, and a real vLLM engine pod serving traffic.

Everything it starts is recorded in one state directory so `make demo-down` removes it all.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from headway.api import ENGINE_LABEL, ENGINE_RUNTIME_ANNOTATION, GPU_PRODUCT_LABEL, GPU_RESOURCE
from headway.devenv import procs
from headway.devenv.cluster import LocalCluster
from headway.devenv.paths import state_dir
from headway.devenv.tinymodel import tiny_model_dir

NAMESPACE = "headway-demo"
APP = "tiny-llm"
SERVED_NAME = "tiny"


def demo_dir() -> Path:
    return state_dir() / "demo"


def engine_deployment(model_dir: Path, runtime: str, product: str) -> dict[str, Any]:
    labels = {"app": APP, ENGINE_LABEL: "vllm"}
    container = {
        "name": "vllm",
        "image": "vllm/vllm-openai:latest",
        "command": ["vllm", "serve", str(model_dir)],
        "args": [
            "--served-model-name",
            SERVED_NAME,
            "--port",
            "8000",
            "--load-format",
            "dummy",
            "--max-model-len",
            "2048",
            "--enable-prefix-caching",
        ],
        "ports": [{"name": "http", "containerPort": 8000}],
        "resources": {"limits": {GPU_RESOURCE: "1"}},
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 2},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": APP, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": APP}},
            "template": {
                "metadata": {"labels": labels, "annotations": {ENGINE_RUNTIME_ANNOTATION: runtime}},
                "spec": {"nodeSelector": {GPU_PRODUCT_LABEL: product}, "containers": [container]},
            },
        },
    }


@dataclass
class DemoSummary:
    kubeconfig: Path
    cluster_startup_s: float
    nodes_by_product: dict[str, int]
    engine_pod: str
    engine_node: str
    engine_url: str
    engine_ready_s: float
    requests: int
    latency_p50_s: float
    latency_max_s: float
    prompt_tokens: int
    completion_tokens: int


def _completion(url: str, prompt: str) -> tuple[float, dict[str, Any]]:
    body = json.dumps({"model": SERVED_NAME, "prompt": prompt, "max_tokens": 16}).encode()
    req = urllib.request.Request(f"{url}/v1/completions", body, {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        out = json.loads(r.read())
    return time.perf_counter() - t0, out


def demo_up(
    *, runtime: str = "vllm", product: str = "NVIDIA-L4", requests: int = 20, progress: Any = print
) -> DemoSummary:
    d = demo_dir()
    d.mkdir(parents=True, exist_ok=True)
    progress("local cluster")
    cluster = LocalCluster(d / "cluster")
    kubeconfig = cluster.up(on_progress=lambda s: progress(f"local cluster: {s}"))
    runner_pid_file = d / "runner.pid"
    if not (runner_pid_file.exists() and procs.alive(int(runner_pid_file.read_text()))):
        progress("engine runner")
        proc = procs.spawn(
            [
                sys.executable,
                "-m",
                "headway",
                "dev",
                "runner",
                "--kubeconfig",
                str(kubeconfig),
                "--state",
                str(d / "runner"),
            ],
            d / "runner.log",
        )
        runner_pid_file.write_text(str(proc.pid))
    api = cluster.api_client()
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    try:
        core.create_namespace({"metadata": {"name": NAMESPACE}})
    except ApiException as e:
        if e.status != 409:
            raise
    dep = engine_deployment(tiny_model_dir(), runtime, product)
    try:
        apps.create_namespaced_deployment(NAMESPACE, dep)
    except ApiException as e:
        if e.status != 409:
            raise
        apps.replace_namespaced_deployment(APP, NAMESPACE, dep)
    t0, pod = time.monotonic(), None
    while time.monotonic() - t0 < 600:
        pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"app={APP}").items
        pod = next(
            (p for p in pods if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])), None
        )
        if pod:
            break
        progress(f"engine pod starting ({runtime} on {product}, {time.monotonic() - t0:.0f}s)")
        time.sleep(1)
    if pod is None:
        raise RuntimeError(f"engine pod not Ready after 600s; see {d / 'runner' / 'logs' / NAMESPACE}")
    ready_s = time.monotonic() - t0
    url = f"http://{pod.status.pod_ip}:8000"
    latencies, prompt_tokens, completion_tokens = [], 0, 0
    system = "You are a concise assistant for the headway inference gateway. " * 8
    for i in range(requests):
        progress(f"traffic: request {i + 1}/{requests}")
        dt, out = _completion(url, f"{system} Question {i % 4}: what does the prefix cache do?")
        latencies.append(dt)
        prompt_tokens += out["usage"]["prompt_tokens"]
        completion_tokens += out["usage"]["completion_tokens"]
    nodes: dict[str, int] = {}
    for n in core.list_node().items:
        key = (n.metadata.labels or {}).get(GPU_PRODUCT_LABEL, "cpu-only")
        nodes[key] = nodes.get(key, 0) + 1
    return DemoSummary(
        kubeconfig=kubeconfig,
        cluster_startup_s=cluster.state.startup_s if cluster.state else 0.0,
        nodes_by_product=nodes,
        engine_pod=pod.metadata.name,
        engine_node=pod.spec.node_name,
        engine_url=url,
        engine_ready_s=round(ready_s, 1),
        requests=requests,
        latency_p50_s=round(statistics.median(latencies), 4),
        latency_max_s=round(max(latencies), 4),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )


def demo_down() -> None:
    d = demo_dir()
    pid_file = d / "runner.pid"
    if pid_file.exists():
        procs.stop(int(pid_file.read_text()), grace_s=30.0)
    LocalCluster(d / "cluster").down()
    shutil.rmtree(d, ignore_errors=True)
