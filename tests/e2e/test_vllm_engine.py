"""Real vLLM on CPU, started by the runner for a GPU pod, answers completions on the pod's IP."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from kubernetes import client as k8s

from headway.api import ENGINE_RUNTIME_ANNOTATION
from headway.devenv.paths import REPO_ROOT
from headway.devenv.tinymodel import tiny_model_dir
from tests.conftest import eventually
from tests.e2e.kube import deployment, event_reasons, is_ready, pods_of

VLLM_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def test_real_vllm_pod_serves_a_completion(
    core: k8s.CoreV1Api, apps: k8s.AppsV1Api, runner: Path, namespace: str
) -> None:
    assert VLLM_PYTHON.exists(), "real vLLM is not installed: run `make vllm`"
    command = [
        "vllm",
        "serve",
        str(tiny_model_dir()),
        "--served-model-name",
        "tiny",
        "--port",
        "8000",
        "--load-format",
        "dummy",
        "--max-model-len",
        "2048",
        "--enable-prefix-caching",
    ]
    dep = deployment(
        "vllm",
        command,
        gpus=1,
        product="NVIDIA-L4",
        probe_path="/health",
        annotations={ENGINE_RUNTIME_ANNOTATION: "vllm"},
    )
    apps.create_namespaced_deployment(namespace, dep)
    pod = eventually(
        lambda: next((p for p in pods_of(core, namespace, "vllm") if is_ready(p)), None),
        timeout_s=420,
        interval_s=1.0,
        what=f"vLLM pod Ready (log under {runner / 'logs' / namespace})",
    )
    base = f"http://{pod.status.pod_ip}:8000"

    out = _post(f"{base}/v1/completions", {"model": "tiny", "prompt": "Explain the prefix cache", "max_tokens": 8})
    assert out["object"] == "text_completion"
    assert out["usage"]["completion_tokens"] == 8
    assert out["choices"][0]["finish_reason"] == "length"

    hello = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    chat = _post(f"{base}/v1/chat/completions", hello)
    # The chat template wraps the 1-token message in header and end-of-turn tokens.
    assert chat["usage"]["prompt_tokens"] > 5
    assert chat["choices"][0]["message"]["role"] == "assistant"

    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        metrics = r.read().decode()
    assert 'vllm:prompt_tokens_total{engine="0",model_name="tiny"}' in metrics
    assert any(
        reason == "Started" and "vllm.entrypoints" in msg
        for reason, msg in event_reasons(core, namespace, pod.metadata.name)
    )
