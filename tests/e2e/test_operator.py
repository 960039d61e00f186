"""The operator end to end on the real local cluster, running as its least-privilege ServiceAccount."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from headway.api import GPU_PRODUCT_LABEL, GPU_RESOURCE, POOL_LABEL, VARIANT_LABEL
from headway.api.labels import INFERENCE_POOL_CRD, INFERENCE_POOL_GROUP, INFERENCE_POOL_PLURAL, INFERENCE_POOL_VERSION
from headway.devenv.binaries import ensure_binaries
from headway.devenv.cluster import LocalCluster
from headway.devenv.controlplane import OperatorProcess, apply_yaml, pool_manifest
from headway.devenv.tinymodel import tiny_model_dir
from tests.conftest import eventually

GROUP, VERSION, PLURAL = "inference.headway.dev", "v1alpha1", "modelpools"
H100, L4 = "NVIDIA-H100-80GB-HBM3", "NVIDIA-L4"


def run_kubectl(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    kubectl = ensure_binaries(build=False).path("kubectl")
    return subprocess.run(
        [kubectl, "--kubeconfig", str(cluster.kubeconfig), *args], capture_output=True, text=True, check=False
    )


def custom(cluster: LocalCluster) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(cluster.api_client())


def get_pool(cluster: LocalCluster, ns: str, name: str) -> dict[str, Any]:
    return custom(cluster).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


def condition(pool: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in (pool.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)


def ready(cluster: LocalCluster, ns: str, name: str) -> dict[str, Any] | None:
    pool = get_pool(cluster, ns, name)
    c = condition(pool, "Ready")
    return (
        pool
        if c and c["status"] == "True" and pool["status"].get("observedGeneration") == pool["metadata"]["generation"]
        else None
    )


def create_pool(cluster: LocalCluster, ns: str, manifest: dict[str, Any]) -> None:
    custom(cluster).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, manifest)


def two_variant_pool(name: str = "tiny") -> dict[str, Any]:
    return pool_manifest(
        name,
        [
            {"name": "h100", "gpuProduct": H100, "replicas": 1, "maxReplicas": 2, "costPerGpuHourUsd": 4.0},
            {
                "name": "l4",
                "gpuProduct": L4,
                "replicas": 1,
                "maxReplicas": 2,
                "gpusPerReplica": 2,
                "costPerGpuHourUsd": 0.8,
            },
        ],
        source=str(tiny_model_dir()),
    )


def test_two_variant_pool_runs_on_matching_gpu_nodes_and_serves(
    crd: LocalCluster,
    operator: OperatorProcess,
    runner: Path,
    core: k8s.CoreV1Api,
    apps: k8s.AppsV1Api,
    namespace: str,
) -> None:
    create_pool(crd, namespace, two_variant_pool())
    pool = eventually(lambda: ready(crd, namespace, "tiny"), timeout_s=90, what="pool Ready")
    assert pool["status"]["replicas"] == "2/2"
    assert {v["name"]: v["readyReplicas"] for v in pool["status"]["variants"]} == {"h100": 1, "l4": 1}

    deps = {d.metadata.name: d for d in apps.list_namespaced_deployment(namespace).items}
    assert set(deps) == {"tiny-h100", "tiny-l4"}
    l4 = deps["tiny-l4"].spec.template.spec
    assert l4.containers[0].resources.limits[GPU_RESOURCE] == "2"
    assert l4.node_selector[GPU_PRODUCT_LABEL] == L4
    assert all(o.kind == "ModelPool" and o.controller for d in deps.values() for o in d.metadata.owner_references)
    args = " ".join(deps["tiny-h100"].spec.template.spec.containers[0].args)
    assert "--enable-prefix-caching" in args and '"topic":"kv@$(POD_IP):8000@tiny"' in args

    pods = core.list_namespaced_pod(namespace, label_selector=POOL_LABEL + "=tiny").items
    for p in pods:
        node = core.read_node(p.spec.node_name)
        want = H100 if p.metadata.labels[VARIANT_LABEL] == "h100" else L4
        assert node.metadata.labels[GPU_PRODUCT_LABEL] == want
    svc = core.read_namespaced_service("tiny", namespace)
    assert svc.spec.selector == {POOL_LABEL: "tiny"}
    # The Service selects exactly the pool's ready pods. (Its EndpointSlice stays empty here: the API server
    # refuses loopback addresses in EndpointSlices, so consumers resolve backends from the selected pods.)
    backends = core.list_namespaced_pod(
        namespace, label_selector=",".join(f"{k}={v}" for k, v in svc.spec.selector.items())
    )
    ips = sorted(p.status.pod_ip for p in backends.items)
    assert ips == sorted(p.status.pod_ip for p in pods) and len(ips) == 2
    body = json.dumps({"model": "tiny", "prompt": "hello", "max_tokens": 2}).encode()
    req = urllib.request.Request(f"http://{ips[0]}:8000/v1/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert json.loads(r.read())["model"] == "tiny"
    assert (
        k8s.PolicyV1Api(core.api_client).read_namespaced_pod_disruption_budget("tiny", namespace).spec.max_unavailable
        == 1
    )


def test_changed_engine_args_roll_and_deleted_child_is_recreated_and_pool_deletion_cleans_up(
    crd: LocalCluster,
    operator: OperatorProcess,
    runner: Path,
    core: k8s.CoreV1Api,
    apps: k8s.AppsV1Api,
    namespace: str,
) -> None:
    create_pool(
        crd,
        namespace,
        pool_manifest("roll", [{"name": "h100", "gpuProduct": H100, "replicas": 1}], source=str(tiny_model_dir())),
    )
    eventually(lambda: ready(crd, namespace, "roll"), timeout_s=60, what="pool Ready")
    before = apps.read_namespaced_deployment("roll-h100", namespace)
    old_pods = {p.metadata.name for p in core.list_namespaced_pod(namespace).items}

    custom(crd).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "roll", {"spec": {"model": {"engineArgs": ["--max-num-seqs", "64"]}}}
    )

    def rolled() -> bool:
        d = apps.read_namespaced_deployment("roll-h100", namespace)
        pods = {p.metadata.name for p in core.list_namespaced_pod(namespace).items if not p.metadata.deletion_timestamp}
        return (
            d.metadata.generation > before.metadata.generation
            and "--max-num-seqs" in d.spec.template.spec.containers[0].args
            and d.status.updated_replicas == 1
            and d.status.ready_replicas == 1
            and not (pods & old_pods)
        )

    eventually(rolled, timeout_s=90, what="rolling update to the new engine args")
    eventually(lambda: ready(crd, namespace, "roll"), timeout_s=60, what="pool Ready after the roll")

    uid = apps.read_namespaced_deployment("roll-h100", namespace).metadata.uid
    apps.delete_namespaced_deployment("roll-h100", namespace)

    def recreated() -> bool:
        try:
            return apps.read_namespaced_deployment("roll-h100", namespace).metadata.uid != uid
        except k8s.ApiException:
            return False

    eventually(recreated, timeout_s=30, what="deleted Deployment recreated")

    apps.patch_namespaced_deployment("roll-h100", namespace, {"spec": {"replicas": 3}})
    eventually(
        lambda: apps.read_namespaced_deployment("roll-h100", namespace).spec.replicas == 1,
        timeout_s=30,
        what="hand-edited replicas repaired",
    )

    custom(crd).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "roll")

    def gone() -> bool:
        return not (
            apps.list_namespaced_deployment(namespace).items
            or core.list_namespaced_service(namespace).items
            or k8s.PolicyV1Api(core.api_client).list_namespaced_pod_disruption_budget(namespace).items
            or core.list_namespaced_pod(namespace).items
        )

    eventually(gone, timeout_s=60, what="every child removed with the pool")


def test_more_gpus_than_exist_is_reported_as_unschedulable_naming_the_variant(
    crd: LocalCluster, operator: OperatorProcess, namespace: str
) -> None:
    # 4 H100 nodes of 8 GPUs: a 5th 8-GPU replica cannot be placed.
    create_pool(
        crd,
        namespace,
        pool_manifest(
            "big",
            [{"name": "huge", "gpuProduct": H100, "gpusPerReplica": 8, "replicas": 5, "maxReplicas": 5}],
            source=str(tiny_model_dir()),
        ),
    )

    def degraded() -> dict[str, Any] | None:
        c = condition(get_pool(crd, namespace, "big"), "Degraded")
        return c if c and c["status"] == "True" else None

    c = eventually(degraded, timeout_s=60, what="Degraded=True")
    assert c["reason"] == "Unschedulable"
    assert "variant huge" in c["message"] and "Insufficient nvidia.com/gpu" in c["message"]
    pool = get_pool(crd, namespace, "big")
    assert condition(pool, "Ready")["status"] == "False"
    assert condition(pool, "Progressing")["reason"] == "Unschedulable"
    huge = pool["status"]["variants"][0]
    assert huge["unschedulableReplicas"] >= 1 and huge["pendingReplicas"] >= 1
    events = (
        k8s.CoreV1Api(crd.api_client())
        .list_namespaced_event(namespace, field_selector="involvedObject.name=big,involvedObject.kind=ModelPool")
        .items
    )
    assert any(e.reason == "Unschedulable" and e.type == "Warning" for e in events)


def test_operator_exposes_metrics_and_health(operator: OperatorProcess) -> None:
    assert operator.healthy()
    text = operator.metrics_text()
    assert "headway_operator_reconciles_total" in text
    assert "headway_operator_reconcile_duration_seconds_bucket" in text
    assert "vllm:" not in text


V = {"name": "a", "gpuProduct": "X"}
INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    # (case, spec override, field path the API server names, what it says about it)
    (
        "min-greater-than-max",
        {"variants": [{**V, "minReplicas": 3, "maxReplicas": 2}]},
        "spec.variants[0].minReplicas",
        "minReplicas must be less than or equal to maxReplicas",
    ),
    (
        "replicas-outside-bounds",
        {"variants": [{**V, "replicas": 9, "maxReplicas": 2}]},
        "spec.variants[0].replicas",
        "replicas must be within [minReplicas, maxReplicas]",
    ),
    ("unknown-strategy", {"routing": {"strategy": "fastest"}}, "spec.routing.strategy", 'Unsupported value: "fastest"'),
    (
        "negative-cost",
        {"variants": [{**V, "costPerGpuHourUsd": -1}]},
        "spec.variants[0].costPerGpuHourUsd",
        "should be greater than or equal to 0",
    ),
    ("empty-variants", {"variants": []}, "spec.variants", "should have at least 1 items"),
    ("duplicate-variants", {"variants": [V, {**V, "gpuProduct": "Y"}]}, "spec.variants[1]", "Duplicate value"),
    (
        "zero-gpus",
        {"variants": [{**V, "gpusPerReplica": 0}]},
        "spec.variants[0].gpusPerReplica",
        "should be greater than or equal to 1",
    ),
    (
        "too-many-gpus",
        {"variants": [{**V, "gpusPerReplica": 16}]},
        "spec.variants[0].gpusPerReplica",
        "should be less than or equal to 8",
    ),
    ("missing-gpu-product", {"variants": [{"name": "a"}]}, "spec.variants[0].gpuProduct", "Required value"),
    ("bad-variant-name", {"variants": [{**V, "name": "Bad_Name"}]}, "spec.variants[0].name", "should match"),
    ("attainment-over-one", {"slo": {"attainment": 1.5}}, "spec.slo.attainment", "should be less than or equal to 1"),
    ("zero-ttft", {"slo": {"ttftSeconds": 0}}, "spec.slo.ttftSeconds", "should be greater than 0"),
    ("missing-model-source", {"model": {"name": "m"}}, "spec.model.source", "Required value"),
    (
        "negative-weight",
        {"routing": {"weights": {"prefix": -1}}},
        "spec.routing.weights.prefix",
        "should be greater than or equal to 0",
    ),
    (
        "no-replicas-without-autoscaling",
        {"variants": [{**V, "replicas": 0}]},
        "spec.variants",
        "with autoscaling off, at least one variant needs replicas > 0",
    ),
    ("unknown-field", {"replicaz": 3}, "spec.replicaz", "unknown field"),
    *(
        (
            f"reserved-engine-arg{arg}",
            {"model": {"name": "m", "source": "org/model", "engineArgs": ["--max-num-seqs", "8", arg]}},
            "spec.model.engineArgs",
            "engineArgs may not set --host, --port, --kv-events-config",
        )
        for arg in ("--port=9000", "--kv_events_config", "-tp")
    ),
]


@pytest.mark.parametrize(("case", "override", "path", "says"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_specs_are_rejected_at_admission_naming_the_field(
    crd: LocalCluster, namespace: str, case: str, override: dict[str, Any], path: str, says: str
) -> None:
    manifest = pool_manifest("bad", [{"name": "a", "gpuProduct": "X", "replicas": 1}], source="org/model")
    manifest["spec"].update(override)
    if "model" in override:
        manifest["spec"]["model"] = override["model"]
    with pytest.raises(k8s.ApiException) as err:
        custom(crd).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, manifest, field_validation="Strict"
        )
    assert err.value.status in (400, 422), err.value.body  # 400: strict decoding; 422: schema or CEL
    message = json.loads(err.value.body)["message"]
    assert (f"{path}:" in message or f'"{path}"' in message) and says in message, message


def _resource_versions(core: k8s.CoreV1Api, apps: k8s.AppsV1Api, ns: str) -> dict[str, str]:
    policy = k8s.PolicyV1Api(core.api_client)
    out = {f"deploy/{d.metadata.name}": f"g{d.metadata.generation}" for d in apps.list_namespaced_deployment(ns).items}
    out |= {f"svc/{s.metadata.name}": s.metadata.resource_version for s in core.list_namespaced_service(ns).items}
    out |= {
        f"pdb/{p.metadata.name}": p.metadata.resource_version
        for p in policy.list_namespaced_pod_disruption_budget(ns).items
    }
    return out


def test_reconciling_twice_changes_nothing(
    crd: LocalCluster,
    operator: OperatorProcess,
    runner: Path,
    core: k8s.CoreV1Api,
    apps: k8s.AppsV1Api,
    namespace: str,
) -> None:
    from headway.operator.config import OperatorConfig
    from headway.operator.kube import Kube
    from headway.operator.reconcile import PoolReconciler

    create_pool(crd, namespace, two_variant_pool("same"))
    eventually(lambda: ready(crd, namespace, "same"), timeout_s=60, what="pool Ready")
    reconciler = PoolReconciler(Kube(crd.api_client(), "headway-operator"), OperatorConfig())

    def settled() -> str | None:
        """The pool's resourceVersion once the running operator is done with it (kopf records the handled
        spec in an annotation right after its handler, which may land after Ready)."""
        rv = get_pool(crd, namespace, "same")["metadata"]["resourceVersion"]
        time.sleep(1.5)
        return rv if get_pool(crd, namespace, "same")["metadata"]["resourceVersion"] == rv else None

    pool_rv = eventually(settled, timeout_s=30, what="the pool left alone by the operator")
    before = _resource_versions(core, apps, namespace)
    for _ in range(2):
        outcome = reconciler.reconcile(get_pool(crd, namespace, "same"))
        assert outcome.created == outcome.updated == outcome.deleted == []
    assert _resource_versions(core, apps, namespace) == before
    assert get_pool(crd, namespace, "same")["metadata"]["resourceVersion"] == pool_rv


def test_operator_killed_mid_reconcile_converges_without_duplicates_or_orphans(
    crd: LocalCluster,
    operator: OperatorProcess,
    runner: Path,
    core: k8s.CoreV1Api,
    apps: k8s.AppsV1Api,
    namespace: str,
) -> None:
    names = [f"k{i}" for i in range(6)]
    for n in names:
        create_pool(crd, namespace, two_variant_pool(n))
    eventually(lambda: apps.list_namespaced_deployment(namespace).items, timeout_s=30, what="first Deployment")
    operator.kill()  # SIGKILL while the batch is being reconciled
    operator.start()
    for n in names:
        eventually(lambda n=n: ready(crd, namespace, n), timeout_s=120, what=f"pool {n} Ready after the restart")
    deps = apps.list_namespaced_deployment(namespace).items
    assert sorted(d.metadata.name for d in deps) == sorted(f"{n}-{v}" for n in names for v in ("h100", "l4"))
    uids = {get_pool(crd, namespace, n)["metadata"]["uid"] for n in names}
    policy = k8s.PolicyV1Api(core.api_client)
    children = [
        *deps,
        *core.list_namespaced_service(namespace).items,
        *policy.list_namespaced_pod_disruption_budget(namespace).items,
    ]
    assert len(children) == len(names) * 4
    assert all(
        [o.uid for o in c.metadata.owner_references] and c.metadata.owner_references[0].uid in uids for c in children
    )
    pods = core.list_namespaced_pod(namespace).items
    assert len([p for p in pods if not p.metadata.deletion_timestamp]) == len(names) * 2


def test_autoscaler_recommendation_in_status_is_applied_within_bounds(
    crd: LocalCluster, operator: OperatorProcess, apps: k8s.AppsV1Api, namespace: str
) -> None:
    create_pool(
        crd,
        namespace,
        pool_manifest(
            "auto",
            [{"name": "h100", "gpuProduct": H100, "minReplicas": 1, "maxReplicas": 3}],
            source=str(tiny_model_dir()),
            autoscaling={"enabled": True},
        ),
    )

    def replicas() -> int | None:
        try:
            return apps.read_namespaced_deployment("auto-h100", namespace).spec.replicas
        except k8s.ApiException:
            return None

    eventually(
        lambda: replicas() == 1,
        timeout_s=30,
        what="starts at minReplicas",
    )

    def recommend(n: int) -> None:
        custom(crd).patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            "auto",
            {"status": {"autoscaling": {"variants": [{"name": "h100", "desiredReplicas": n}]}}},
        )

    recommend(2)
    eventually(
        lambda: replicas() == 2,
        timeout_s=30,
        what="recommendation of 2 applied",
    )
    recommend(10)
    eventually(
        lambda: replicas() == 3,
        timeout_s=30,
        what="recommendation of 10 clamped to maxReplicas 3",
    )


def test_kubectl_shows_model_replicas_readiness_and_age(
    crd: LocalCluster, operator: OperatorProcess, namespace: str
) -> None:
    create_pool(
        crd,
        namespace,
        pool_manifest("cols", [{"name": "h100", "gpuProduct": H100, "replicas": 1}], source=str(tiny_model_dir())),
    )
    eventually(
        lambda: (get_pool(crd, namespace, "cols").get("status") or {}).get("replicas"),
        timeout_s=30,
        what="status written",
    )
    out = run_kubectl(crd, "get", "mp", "-n", namespace)
    header = out.stdout.splitlines()[0].split()
    assert header == ["NAME", "MODEL", "REPLICAS", "READY", "SLO", "AGE"], out.stdout + out.stderr
    assert out.stdout.splitlines()[1].split()[:2] == ["cols", "tiny"]


def test_the_operator_starts_watching_only_once_discovery_serves_modelpools(crd: LocalCluster) -> None:
    """kopf looks resources up once at start: the operator first waits until the API lists ModelPools, and
    gives up (saying so) at its deadline for a resource that is not served."""
    from headway.operator.served import wait_until_served

    api = crd.api_client()
    assert wait_until_served(api, timeout_s=30)
    assert not wait_until_served(api, plural="nopools", timeout_s=1.0, interval_s=0.2)


def _inference_pool(cluster: LocalCluster, ns: str, name: str) -> dict[str, Any] | None:
    try:
        return custom(cluster).get_namespaced_custom_object(
            INFERENCE_POOL_GROUP, INFERENCE_POOL_VERSION, ns, INFERENCE_POOL_PLURAL, name
        )
    except k8s.ApiException as e:
        if e.status == 404:
            return None
        raise


def test_an_inference_pool_follows_the_pool_once_the_cluster_serves_its_api(
    crd: LocalCluster, operator: OperatorProcess, namespace: str
) -> None:
    """Absent API: nothing is created and nothing fails. The GIE CRD (from the pinned module) installed:
    the pool gets its InferencePool within seconds, owned by it and pointing at the Endpoint Picker;
    disabling it in the spec deletes it; deleting the pool removes it with the pool."""
    ext = k8s.ApiextensionsV1Api(crd.api_client())
    served = any(c.metadata.name == INFERENCE_POOL_CRD for c in ext.list_custom_resource_definition().items)
    manifest = pool_manifest(
        "ip", [{"name": "l4", "gpuProduct": L4, "replicas": 1, "maxReplicas": 1}], source=str(tiny_model_dir())
    )
    manifest["spec"]["inferencePool"] = {"endpointPicker": {"service": "headway-epp", "failureMode": "FailOpen"}}
    create_pool(crd, namespace, manifest)
    pool = eventually(lambda: ready(crd, namespace, "ip"), timeout_s=60, what="pool Ready")
    if not served:
        assert "inferencePool" not in pool["status"]
        apply_yaml(crd.api_client(), ensure_binaries(build=False).inference_pool_crd)
    ip = eventually(lambda: _inference_pool(crd, namespace, "ip"), timeout_s=30, what="the InferencePool")
    assert ip["spec"]["selector"]["matchLabels"] == {POOL_LABEL: "ip"}
    assert ip["spec"]["targetPorts"] == [{"number": 8000}]
    assert ip["spec"]["endpointPickerRef"] == {
        "group": "",
        "kind": "Service",
        "name": "headway-epp",
        "port": {"number": 9002},
        "failureMode": "FailOpen",
    }
    assert ip["metadata"]["ownerReferences"][0]["uid"] == pool["metadata"]["uid"]
    eventually(
        lambda: (get_pool(crd, namespace, "ip")["status"].get("inferencePool") or {}).get("name") == "ip",
        timeout_s=15,
        what="the InferencePool in the pool's status",
    )
    patch = {"spec": {"inferencePool": {"enabled": False}}}
    custom(crd).patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "ip", patch)
    eventually(lambda: _inference_pool(crd, namespace, "ip") is None, timeout_s=30, what="InferencePool deleted")
    eventually(
        lambda: "inferencePool" not in get_pool(crd, namespace, "ip")["status"],
        timeout_s=15,
        what="the status without it",
    )
    patch = {"spec": {"inferencePool": {"enabled": True}}}
    custom(crd).patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "ip", patch)
    eventually(lambda: _inference_pool(crd, namespace, "ip"), timeout_s=30, what="InferencePool back")
    custom(crd).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "ip")
    eventually(lambda: _inference_pool(crd, namespace, "ip") is None, timeout_s=60, what="collected with the pool")
