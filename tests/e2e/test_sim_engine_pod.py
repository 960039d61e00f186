"""A vLLM engine pod spec runs as the simulator under the runner, unchanged, and serves on its pod IP."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from kubernetes import client as k8s

from headway.devenv.tinymodel import tiny_model_dir
from tests.conftest import eventually
from tests.e2e.kube import deployment, event_reasons, is_ready, pods_of


def test_vllm_pod_spec_is_served_by_the_simulator(
    core: k8s.CoreV1Api, apps: k8s.AppsV1Api, runner: Path, namespace: str
) -> None:
    command = [
        "vllm",
        "serve",
        str(tiny_model_dir()),
        "--served-model-name",
        "tiny",
        "--port",
        "8000",
        "--max-model-len",
        "2048",
        "--gpu-memory-utilization",
        "0.9",
    ]
    apps.create_namespaced_deployment(
        namespace, deployment("sim", command, gpus=2, product="NVIDIA-A100-SXM4-80GB", probe_path="/health")
    )
    pod = eventually(
        lambda: next((p for p in pods_of(core, namespace, "sim") if is_ready(p)), None),
        timeout_s=60,
        what="simulated engine pod Ready",
    )
    req = urllib.request.Request(
        f"http://{pod.status.pod_ip}:8000/v1/completions",
        json.dumps({"model": "tiny", "prompt": "hello", "max_tokens": 3}).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        out = json.loads(r.read())
    assert out["usage"]["completion_tokens"] <= 3 and out["model"] == "tiny"
    started = [m for reason, m in event_reasons(core, namespace, pod.metadata.name) if reason == "Started"]
    assert started and "-m headway sim" in started[0] and f"--host {pod.status.pod_ip}" in started[0]
