"""On the local cluster with the operator: the gateway (as its ServiceAccount) discovers a pool's pods by
watching, follows a scale-up and a scale-down, and no request fails on the way."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from kubernetes import client as k8s

from headway.devenv.cluster import LocalCluster
from headway.devenv.controlplane import OperatorProcess, pool_manifest
from headway.devenv.tinymodel import tiny_model_dir
from tests.conftest import eventually
from tests.e2e.kube import discovering_gateway

GROUP, VERSION, PLURAL = "inference.headway.dev", "v1alpha1", "modelpools"


@pytest.fixture
def gateway(crd: LocalCluster, namespace: str, tmp_path: Path) -> Iterator[str]:
    with discovering_gateway(crd, namespace, tmp_path) as url:
        yield url
    assert "Traceback" not in (tmp_path / "gateway.log").read_text()


def _models(gateway: str) -> list[str]:
    try:
        with urllib.request.urlopen(f"{gateway}/v1/models", timeout=2) as r:
            return [m["id"] for m in json.loads(r.read())["data"]]
    except OSError:
        return []


class Load:
    """Two clients sending short completions until stopped; records every status and serving pod."""

    def __init__(self, gateway: str) -> None:
        self.gateway, self.statuses, self.pods = gateway, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as s:

            async def worker(w: int) -> None:
                i = 0
                while not self._stop.is_set() and i < 5000:
                    i += 1
                    body = {"model": "tiny", "prompt": f"w{w} r{i}", "max_tokens": 2}
                    async with s.post(
                        f"{self.gateway}/v1/completions",
                        json=body,
                        headers={"x-headway-strategy": "round-robin", "x-headway-debug": "1"},
                    ) as r:
                        await r.read()
                        self.statuses.append(r.status)
                        self.pods.append(r.headers.get("x-headway-endpoint"))

            await asyncio.gather(worker(0), worker(1))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def test_gateway_follows_scale_up_and_down_without_errors(
    crd: LocalCluster, operator: OperatorProcess, runner: Path, core: k8s.CoreV1Api, namespace: str, gateway: str
) -> None:
    custom = k8s.CustomObjectsApi(crd.api_client())
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        pool_manifest(
            "tiny",
            [{"name": "h100", "gpuProduct": "NVIDIA-H100-80GB-HBM3", "replicas": 1, "maxReplicas": 4}],
            source=str(tiny_model_dir()),
        ),
    )
    eventually(lambda: _models(gateway) == ["tiny"], timeout_s=60, what="gateway lists the pool's model")

    def scale(n: int) -> None:
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            "tiny",
            {"spec": {"variants": [{"name": "h100", "gpuProduct": "NVIDIA-H100-80GB-HBM3", "replicas": n}]}},
        )

    def ready_ips() -> set[str]:
        return {
            p.status.pod_ip
            for p in core.list_namespaced_pod(namespace).items
            if not p.metadata.deletion_timestamp
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        }

    with Load(gateway) as load:
        eventually(lambda: len(load.statuses) > 20, timeout_s=60, what="traffic through one pod")
        scale(3)
        eventually(lambda: len(ready_ips()) == 3, timeout_s=60, what="3 ready pods")
        mark = len(load.pods)
        eventually(
            lambda: len({p for p in load.pods[mark:] if p}) == 3, timeout_s=30, what="traffic reaching all 3 pods"
        )
        scale(1)
        eventually(lambda: len(ready_ips()) == 1, timeout_s=60, what="back to 1 pod")
        mark = len(load.pods)
        eventually(lambda: len(load.pods) > mark + 20, timeout_s=30, what="traffic after the scale-down")
        survivor = ready_ips().pop()
        tail = load.pods[-10:]
    assert set(load.statuses) == {200}, {s: load.statuses.count(s) for s in set(load.statuses)}
    assert all(p and p.startswith(survivor) for p in tail), tail


def _scores(gateway: str) -> dict | None:
    body = json.dumps({"model": "tiny", "prompt": "which terms voted", "max_tokens": 1}).encode()
    req = urllib.request.Request(
        f"{gateway}/v1/completions", body, {"Content-Type": "application/json", "x-headway-debug": "1"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
            return json.loads(r.headers["x-headway-scores"])
    except OSError:
        return None


def test_editing_a_pools_scorer_weights_takes_effect_within_seconds(
    crd: LocalCluster, operator: OperatorProcess, runner: Path, namespace: str, gateway: str
) -> None:
    custom = k8s.CustomObjectsApi(crd.api_client())
    pool = pool_manifest(
        "tiny", [{"name": "h100", "gpuProduct": "NVIDIA-H100-80GB-HBM3", "replicas": 1}], source=str(tiny_model_dir())
    )
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, pool)
    voted = eventually(lambda: _scores(gateway), timeout_s=90, what="a routed request with its scores")
    assert voted, "the default weights vote"
    zero = dict.fromkeys(("prefix", "queue", "kvUtilization", "inFlight", "prefillBacklog", "cost"), 0)
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "tiny", {"spec": {"routing": {"weights": zero}}}
    )
    eventually(lambda: _scores(gateway) == {}, timeout_s=10, what="no scorer votes after every weight is set to 0")
