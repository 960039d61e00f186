"""On the local cluster: two ModelPools and a ModelRoute, the gateway (as its ServiceAccount) choosing the
pool per request. Keyword, length and classifier rules send their prompts to the right pool (counted by
the engines themselves), the guard refuses out-of-domain prompts with an OpenAI error, feedback moves
the bandit, shadow mode changes nothing, and the API server refuses invalid routes naming the field."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from headway.api import POOL_LABEL
from headway.devenv.cluster import LocalCluster
from headway.devenv.controlplane import OperatorProcess, pool_manifest
from headway.devenv.tinymodel import tiny_model_dir
from tests.conftest import eventually
from tests.e2e.kube import discovering_gateway

GROUP, VERSION = "inference.headway.dev", "v1alpha1"
H100 = [{"name": "h100", "gpuProduct": "NVIDIA-H100-80GB-HBM3", "replicas": 1}]
MATH = [
    "solve the equation 3x + 5 = 20 for x",
    "what is the derivative of x squared times sine x",
    "compute the integral of 1/x from 1 to e",
    "factor the polynomial x^2 - 5x + 6",
]
COOKING = [
    "how long should I roast a chicken in the oven",
    "what can I use instead of butter when baking cookies",
    "give me a recipe for tomato soup with basil",
    "how do I make fresh pasta dough by hand",
]


def route_manifest(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": "auto",
        "candidates": [{"pool": "small", "quality": 0.6}, {"pool": "large", "quality": 0.9}],
        "signals": {
            "keywords": [{"name": "code", "patterns": ["```", "def "]}],
            "classifier": {"examples": [{"label": "math", "prompts": MATH}, {"label": "cooking", "prompts": COOKING}]},
        },
        "rules": [
            {"name": "code", "priority": 10, "when": {"keywords": ["code"]}, "candidates": ["large"]},
            {"name": "long", "priority": 5, "when": {"minTokens": 300}, "candidates": ["large"]},
            {"name": "math", "when": {"classes": ["math"]}, "candidates": ["large"]},
            {"name": "cooking", "when": {"classes": ["cooking"]}, "candidates": ["small"]},
        ],
        "guard": {"minSimilarity": 0.1, "message": "math and cooking questions only"},
    }
    spec.update(over)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelRoute", "metadata": {"name": "auto"}, "spec": spec}


@pytest.fixture
def pools(crd: LocalCluster, operator: OperatorProcess, runner: Path, namespace: str) -> k8s.CustomObjectsApi:
    custom = k8s.CustomObjectsApi(crd.api_client())
    for name in ("small", "large"):
        body = pool_manifest(name, H100, source=str(tiny_model_dir()), model=f"{name}-model")
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modelpools", body)
    return custom


@pytest.fixture
def gateway(crd: LocalCluster, namespace: str, tmp_path: Path) -> Iterator[str]:
    with discovering_gateway(crd, namespace, tmp_path, "--route-status-interval-s", "0.5") as url:
        yield url
    assert "Traceback" not in (tmp_path / "gateway.log").read_text()


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def ask(gateway: str, prompt: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    return post(
        f"{gateway}/v1/chat/completions",
        {"model": "auto", "messages": [{"role": "user", "content": prompt}], "max_tokens": 2},
    )


def served_counts(core: k8s.CoreV1Api, namespace: str) -> dict[str, float]:
    """Requests each pool's engines finished, from their own /metrics."""
    out: dict[str, float] = {}
    for pod in core.list_namespaced_pod(namespace, label_selector=POOL_LABEL).items:
        if not pod.status.pod_ip:
            continue
        with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8000/metrics", timeout=5) as r:
            text = r.read().decode()
        n = sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith("vllm:request_success_total"))
        pool = pod.metadata.labels[POOL_LABEL]
        out[pool] = out.get(pool, 0.0) + n
    return out


def ready(gateway: str) -> bool:
    try:
        status, _, _ = ask(gateway, "factor the polynomial x^2 - 9")
    except OSError:
        return False
    return status == 200


def test_rules_guard_feedback_and_shadow(
    pools: k8s.CustomObjectsApi, core: k8s.CoreV1Api, namespace: str, gateway: str
) -> None:
    pools.create_namespaced_custom_object(GROUP, VERSION, namespace, "modelroutes", route_manifest())
    eventually(lambda: ready(gateway), timeout_s=90, what="the route answering through both pools")
    # the gateway lists the virtual model beside the pools' own
    with urllib.request.urlopen(f"{gateway}/v1/models", timeout=5) as r:
        assert {m["id"] for m in json.loads(r.read())["data"]} >= {"auto", "small-model", "large-model"}

    code = "please fix this code that solves the equation 3x + 5 = 20:\n```python\ndef f(x): return 3*x + 5\n```"
    cases = [
        (code, "large", "code"),
        ("how long should I roast a chicken in the oven " * 40, "large", "long"),
        ("what is the derivative of x cubed", "large", "math"),
        ("how long do I bake bread dough", "small", "cooking"),
    ]
    for prompt, pool, rule in cases:
        before = served_counts(core, namespace)
        status, headers, body = ask(gateway, prompt)
        assert status == 200, body
        assert (headers["x-headway-pool"], headers["x-headway-route-rule"]) == (pool, rule), headers
        assert body["model"] == "auto" and headers["x-headway-served-model"] == f"{pool}-model"
        after = served_counts(core, namespace)
        assert after.get(pool, 0) - before.get(pool, 0) == 1, (prompt, before, after)
        other = "small" if pool == "large" else "large"
        assert after.get(other, 0) == before.get(other, 0)

    # the route's status: this replica's traffic, by pool
    def traffic() -> dict[str, Any] | None:
        body = pools.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelroutes", "auto")
        mine = (body.get("status") or {}).get("gateways") or []
        return mine[0] if mine and mine[0]["requests"] >= len(cases) else None

    def every_case_counted() -> dict[str, Any] | None:
        # the readiness probe went through a pool too: a snapshot may hold as many requests before the last case
        gw = traffic()
        small = next((c["requests"] for c in gw["candidates"] if c["pool"] == "small"), 0) if gw else 0
        return gw if small >= 1 else None

    gw = eventually(every_case_counted, timeout_s=20, what="the gateway's traffic in the route's status")
    by_pool = {c["pool"]: c for c in gw["candidates"]}
    assert by_pool["large"]["requests"] >= 3 and by_pool["small"]["requests"] >= 1
    assert sum(c["share"] for c in gw["candidates"]) == pytest.approx(1.0, abs=0.01)
    assert by_pool["large"]["rewardEstimate"] == pytest.approx(0.9)  # its prior: no feedback yet

    # the guard: an out-of-domain prompt is refused with an OpenAI error
    status, _, body = ask(gateway, "who won the football world cup in 1998")
    assert status == 400 and body["error"]["message"] == "math and cooking questions only"
    eventually(
        lambda: (traffic() or {}).get("guardRejections") == 1, timeout_s=20, what="the refusal counted in the status"
    )
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == "messages"

    # feedback: with learning on and no rule, the default choice is the higher prior (large) until its
    # rewards say otherwise
    spec = route_manifest(rules=[], guard=None, learning={"enabled": True, "alpha": 0.0, "priorWeight": 1.0})["spec"]
    pools.patch_namespaced_custom_object(GROUP, VERSION, namespace, "modelroutes", "auto", {"spec": spec})
    eventually(
        lambda: ask(gateway, "who won the world cup")[1].get("x-headway-route-rule") == "",
        timeout_s=20,
        what="the gateway following the route's edit",
    )
    served: list[str] = []
    fb: dict[str, Any] = {}
    for _ in range(10):
        status, headers, _ = ask(gateway, "roast potatoes with rosemary")
        assert status == 200
        served.append(headers["x-headway-pool"])
        if served[-1] == "small":
            break
        fb = {"id": headers["x-headway-request-id"], "reward": 0.0}
        status, _, answer = post(f"{gateway}/v1/feedback", fb)
        assert status == 200 and answer["pool"] == "large", answer
    assert served[0] == "large" and served[-1] == "small", served  # poor rewards moved the choice
    status, _, again = post(f"{gateway}/v1/feedback", fb)
    assert status == 404 and again["error"]["param"] == "id"  # one reward per request
    status, _, bad = post(f"{gateway}/v1/feedback", {"id": "x", "reward": 3})
    assert status == 400 and bad["error"]["param"] == "reward"

    # shadow: decide and record, send everything to the default pool (the first candidate)
    spec = route_manifest(rollout={"mode": "shadow"})["spec"]
    pools.patch_namespaced_custom_object(GROUP, VERSION, namespace, "modelroutes", "auto", {"spec": spec})
    eventually(
        lambda: ask(gateway, "what is the derivative of x cubed")[1].get("x-headway-pool") == "small",
        timeout_s=20,
        what="shadow mode in effect",
    )
    before = served_counts(core, namespace)
    status, headers, _ = ask(gateway, "what is the derivative of x cubed")
    assert status == 200 and headers["x-headway-route-decided"] == "large"
    assert headers["x-headway-route-reason"] == "rule;shadow"
    status, _, _ = ask(gateway, "who won the football world cup in 1998")
    assert status == 200  # the guard's refusal is recorded, not acted on
    after = served_counts(core, namespace)
    assert after["small"] - before["small"] == 2 and after["large"] == before["large"]


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"candidates": []}, "spec.candidates"),
        ({"rules": [{"name": "a"}, {"name": "a"}]}, "spec.rules[1]"),
        ({"rules": [{"name": "a", "candidates": ["nowhere"]}]}, "spec.rules"),
        ({"rules": [{"name": "a", "when": {"classes": ["sports"]}}]}, "spec.rules"),
        ({"rollout": {"mode": "percent", "percent": 150}}, "spec.rollout.percent"),
    ],
)
def test_invalid_routes_are_refused_at_admission_naming_the_field(
    crd: LocalCluster, namespace: str, over: dict[str, Any], field: str
) -> None:
    custom = k8s.CustomObjectsApi(crd.api_client())
    with pytest.raises(k8s.ApiException) as e:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modelroutes", route_manifest(**over))
    assert e.value.status == 422
    assert field in e.value.body, e.value.body


def _ready_condition(custom: k8s.CustomObjectsApi, namespace: str) -> dict[str, Any] | None:
    status = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelroutes", "auto").get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)


def _serving_both(ready: dict[str, Any] | None) -> bool:
    return bool(ready) and ready["status"] == "True" and all(p in ready["message"] for p in ("small", "large"))


def test_the_route_status_says_whether_its_pools_serve_and_how_its_classifier_does(
    pools: k8s.CustomObjectsApi, namespace: str
) -> None:
    pools.create_namespaced_custom_object(GROUP, VERSION, namespace, "modelroutes", route_manifest())
    # Ready turns True as soon as one pool serves; the other pool may still be starting, so wait for both.
    eventually(
        lambda: _serving_both(_ready_condition(pools, namespace)),
        timeout_s=90,
        what="the route Ready, serving through both its pools",
    )
    status = pools.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelroutes", "auto")["status"]
    assert status["classifier"]["labels"] == 2 and status["classifier"]["examples"] == len(MATH) + len(COOKING)
    assert 0 <= status["classifier"]["heldOutAccuracy"] <= 1
    pools.delete_namespaced_custom_object(GROUP, VERSION, namespace, "modelpools", "small")
    eventually(
        lambda: (_ready_condition(pools, namespace) or {}).get("reason") == "PoolsMissing",
        timeout_s=60,
        what="the route saying its pool is gone",
    )
    assert "small" in _ready_condition(pools, namespace)["message"]
