"""Pure builders and status logic of the operator, and the CRD generated from the pydantic models."""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import pytest
from pydantic import ValidationError

from headway.api import ENGINE_LABEL, GPU_PRODUCT_LABEL, GPU_RESOURCE, POOL_LABEL, VARIANT_LABEL
from headway.api.crd import render
from headway.api.modelpool import ModelPool, ModelPoolSpec
from headway.api.status import Condition, set_condition
from headway.devenv.paths import REPO_ROOT
from headway.operator.builders import build_children, build_deployment, desired_replicas, engine_args
from headway.operator.config import OperatorConfig
from headway.operator.status import build_status, observe_variant

T0 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
CFG = OperatorConfig(kv_events_endpoint="tcp://indexer.headway-system.svc:5557")
SPEC: dict[str, Any] = {
    "model": {"name": "llama", "source": "meta-llama/Llama-3.1-8B", "maxModelLen": 8192, "engineArgs": ["--x", "1"]},
    "variants": [
        {
            "name": "h100",
            "gpuProduct": "NVIDIA-H100-80GB-HBM3",
            "gpusPerReplica": 2,
            "replicas": 2,
            "maxReplicas": 4,
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "nodeSelector": {"zone": "a"},
        },
        {"name": "l4", "gpuProduct": "NVIDIA-L4", "minReplicas": 1, "maxReplicas": 3},
    ],
}


def pool(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> ModelPool:
    body = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "generation": 3},
        "spec": copy.deepcopy(spec or SPEC),
        "status": status or {},
    }
    return ModelPool.from_body(body)


def test_the_committed_crd_is_the_generated_one() -> None:
    committed = (REPO_ROOT / "deploy" / "crds" / "inference.headway.dev_modelpools.yaml").read_text()
    assert committed == render(), (
        "run: python -m headway.api.crd modelpools > deploy/crds/inference.headway.dev_modelpools.yaml"
    )


def test_builders_are_deterministic() -> None:
    assert json.dumps(build_children(pool(), CFG), sort_keys=True) == json.dumps(
        build_children(pool(), CFG), sort_keys=True
    )


def test_deployment_requests_gpus_on_the_variant_product_with_probes_and_owner() -> None:
    p = pool()
    dep = build_deployment(p, p.spec.variants[0], CFG)
    assert dep["metadata"]["name"] == "p-h100"
    assert dep["metadata"]["ownerReferences"][0] == {
        "apiVersion": "inference.headway.dev/v1alpha1",
        "kind": "ModelPool",
        "name": "p",
        "uid": "u-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    spec = dep["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert c["resources"]["limits"][GPU_RESOURCE] == "2"
    assert spec["nodeSelector"] == {"zone": "a", GPU_PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3"}
    assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert {"key": "dedicated", "operator": "Exists"} in spec["tolerations"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels[POOL_LABEL] == "p" and labels[VARIANT_LABEL] == "h100" and labels[ENGINE_LABEL] == "vllm"
    assert dep["spec"]["selector"]["matchLabels"] == {POOL_LABEL: "p", VARIANT_LABEL: "h100"}
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_engine_args_that_only_resemble_reserved_ones_are_kept() -> None:
    similar = ["--portable", "--hostname=x", "--tokenizer-mode", "auto"]
    spec = {**SPEC, "model": {**SPEC["model"], "engineArgs": similar}}
    assert ModelPoolSpec.model_validate(spec).model.engine_args[0] == "--portable"


def test_engine_args_carry_prefix_caching_kv_events_and_user_args_last() -> None:
    p = pool()
    args = engine_args(p, p.spec.variants[0], CFG)
    assert args[0] == "meta-llama/Llama-3.1-8B" and "--enable-prefix-caching" in args
    kv = json.loads(args[args.index("--kv-events-config") + 1])
    assert kv == {
        "enable_kv_cache_events": True,
        "publisher": "zmq",
        "endpoint": CFG.kv_events_endpoint,
        "topic": "kv@$(POD_IP):8000@llama",
        "replay_endpoint": "tcp://$(POD_IP):5558",
    }
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[args.index("--max-model-len") + 1] == "8192"
    assert args[-2:] == ["--x", "1"]


@pytest.mark.parametrize(
    ("enabled", "recommendation", "variant", "want"),
    [
        pytest.param(False, 7, 0, 2, id="autoscaling-off-uses-replicas"),
        pytest.param(False, None, 1, 1, id="no-replicas-uses-min"),
        pytest.param(True, 3, 0, 3, id="recommendation-applied"),
        pytest.param(True, 9, 0, 4, id="clamped-to-max"),
        pytest.param(True, 0, 1, 1, id="clamped-to-min"),
        pytest.param(True, None, 0, 2, id="no-recommendation-keeps-configured"),
    ],
)
def test_desired_replicas(enabled: bool, recommendation: int | None, variant: int, want: int) -> None:
    spec = {**copy.deepcopy(SPEC), "autoscaling": {"enabled": enabled}}
    name = SPEC["variants"][variant]["name"]
    status = (
        {"autoscaling": {"variants": [{"name": name, "desiredReplicas": recommendation}]}}
        if recommendation is not None
        else {}
    )
    p = pool(spec, status)
    assert desired_replicas(p, p.spec.variants[variant]) == want


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"variants": []}, "at least 1", id="empty-variants"),
        pytest.param({"variants": [SPEC["variants"][1], SPEC["variants"][1]]}, "duplicate variant names", id="dupes"),
        pytest.param(
            {"variants": [{**SPEC["variants"][1], "minReplicas": 5}]}, "minReplicas must be less", id="min>max"
        ),
        pytest.param({"routing": {"strategy": "nope"}}, "kv-aware", id="strategy"),
        *(
            pytest.param(
                {"model": {**SPEC["model"], "engineArgs": ["--max-num-seqs", "8", arg, "1"]}},
                "engineArgs may not set --host, --port",
                id=f"reserved{arg}",
            )
            for arg in ("--port", "--port=9000", "--kv_events_config", "-tp", "--served-model-name=x", "--host")
        ),
    ],
)
def test_the_models_refuse_what_admission_refuses(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelPoolSpec.model_validate({**SPEC, **change})


def _pod(phase: str, unschedulable: str | None = None) -> dict[str, Any]:
    conds = (
        [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable}]
        if unschedulable
        else []
    )
    return {"metadata": {"name": "x"}, "status": {"phase": phase, "conditions": conds}}


def test_status_ready_when_every_variant_has_its_replicas() -> None:
    p = pool()
    obs = [
        observe_variant("h100", "H", 2, {"status": {"readyReplicas": 2, "updatedReplicas": 2}}, [_pod("Running")] * 2),
        observe_variant("l4", "L", 1, {"status": {"readyReplicas": 1, "updatedReplicas": 1}}, [_pod("Running")]),
    ]
    st = build_status(p, obs, T0)
    by = {c.type: c for c in st.conditions or []}
    assert by["Ready"].status == "True" and by["Progressing"].status == "False"
    assert by["Degraded"].status == "False" and st.replicas == "3/3" and st.observed_generation == 3


def test_status_names_the_unschedulable_variant_and_the_scheduler_reason() -> None:
    p = pool()
    msg = "0/18 nodes are available: 4 Insufficient nvidia.com/gpu."
    obs = [
        observe_variant(
            "h100",
            "NVIDIA-H100-80GB-HBM3",
            2,
            {"status": {"readyReplicas": 1}},
            [_pod("Running"), _pod("Pending", msg)],
        ),
        observe_variant("l4", "L", 1, {"status": {"readyReplicas": 1, "updatedReplicas": 1}}, [_pod("Running")]),
    ]
    st = build_status(p, obs, T0)
    by = {c.type: c for c in st.conditions or []}
    assert by["Degraded"].status == "True" and by["Degraded"].reason == "Unschedulable"
    assert "variant h100 (NVIDIA-H100-80GB-HBM3)" in by["Degraded"].message and msg in by["Degraded"].message
    assert by["Ready"].status == "False" and (st.variants or [])[0].unschedulable_replicas == 1


def test_scaled_to_zero_is_not_ready_and_says_why() -> None:
    p = pool()
    st = build_status(p, [observe_variant("h100", "H", 0, None, []), observe_variant("l4", "L", 0, None, [])], T0)
    ready = next(c for c in st.conditions or [] if c.type == "Ready")
    assert ready.status == "False" and ready.reason == "ScaledToZero" and st.replicas == "0/0"


def test_set_condition_moves_the_transition_time_only_when_status_flips() -> None:
    t1, t2, t3 = (T0 + dt.timedelta(seconds=s) for s in (1, 2, 3))
    c1 = set_condition([], Condition(type="Ready", status="False", reason="A", message="", observed_generation=1), t1)
    c2 = set_condition(c1, Condition(type="Ready", status="False", reason="B", message="m", observed_generation=2), t2)
    c3 = set_condition(c2, Condition(type="Ready", status="True", reason="C", message="", observed_generation=2), t3)
    assert c2[0].last_transition_time == t1 and c2[0].reason == "B" and c2[0].observed_generation == 2
    assert c3[0].last_transition_time == t3


def test_the_inference_pool_selects_the_engine_pods_and_names_the_endpoint_picker() -> None:
    p = pool({**SPEC, "inferencePool": {"endpointPicker": {"service": "epp", "port": 9102, "failureMode": "FailOpen"}}})
    cfg = OperatorConfig()
    assert all(c["kind"] != "InferencePool" for c in build_children(p, cfg))  # the API is not served
    ip = build_children(p, cfg, inference_pools=True)[-1]
    assert ip["apiVersion"] == "inference.networking.k8s.io/v1" and ip["kind"] == "InferencePool"
    service = next(c for c in build_children(p, cfg) if c["kind"] == "Service")
    assert ip["spec"]["selector"]["matchLabels"] == service["spec"]["selector"] == {POOL_LABEL: p.name}
    assert ip["spec"]["targetPorts"] == [{"number": cfg.engine_port}]
    assert ip["spec"]["endpointPickerRef"] == {
        "kind": "Service",
        "name": "epp",
        "port": {"number": 9102},
        "failureMode": "FailOpen",
    }
    assert ip["metadata"]["ownerReferences"][0]["uid"] == p.uid
    off = pool({**SPEC, "inferencePool": {"enabled": False}})
    assert all(c["kind"] != "InferencePool" for c in build_children(off, cfg, inference_pools=True))


def test_the_inference_pool_status_counts_the_gateways_that_accepted_it() -> None:
    from headway.operator.status import inference_pool_status

    obj = {
        "metadata": {"name": "tiny"},
        "status": {
            "parents": [
                {"parentRef": {"name": "gw-a"}, "conditions": [{"type": "Accepted", "status": "True"}]},
                {
                    "parentRef": {"name": "gw-b"},
                    "conditions": [{"type": "Accepted", "status": "False", "message": "no listener for h2c"}],
                },
            ]
        },
    }
    s = inference_pool_status(obj)
    assert (s.name, s.gateways, s.accepted) == ("tiny", 2, 1)
    assert s.message == "gw-b: no listener for h2c"
    assert inference_pool_status({"metadata": {"name": "x"}}).gateways == 0
