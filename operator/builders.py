"""Pure builders of a ModelPool's children. No I/O, no clock, no randomness: the same pool always yields
the same manifests, so a retried or repeated reconcile addresses, and produces, the same objects."""

from __future__ import annotations

import json
from typing import Any

from headway.api import (
    ENGINE_LABEL,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    POOL_LABEL,
    VARIANT_LABEL,
)
from headway.api.labels import INFERENCE_POOL_GROUP, INFERENCE_POOL_KIND, INFERENCE_POOL_VERSION
from headway.api.modelpool import API_VERSION, KIND, ModelPool, Variant
from headway.operator.config import OperatorConfig


def deployment_name(pool: ModelPool, variant: Variant) -> str:
    return f"{pool.name}-{variant.name}"


def pool_labels(pool: ModelPool) -> dict[str, str]:
    return {POOL_LABEL: pool.name, MANAGED_BY_LABEL: MANAGED_BY_VALUE}


def variant_labels(pool: ModelPool, variant: Variant) -> dict[str, str]:
    return {**pool_labels(pool), VARIANT_LABEL: variant.name, ENGINE_LABEL: "vllm"}


def owner_reference(pool: ModelPool) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": pool.name,
        "uid": pool.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(pool: ModelPool, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": pool.namespace, "labels": labels, "ownerReferences": [owner_reference(pool)]}


def desired_replicas(pool: ModelPool, variant: Variant) -> int:
    """The autoscaler's recommendation when autoscaling is on, clamped to the variant's bounds; otherwise
    the configured replicas. A missing recommendation keeps the configured count."""
    if pool.spec.autoscaling.enabled:
        auto = pool.status.autoscaling
        rec = next((r for r in (auto.variants if auto else None) or () if r.name == variant.name), None)
        if rec is not None:
            return max(variant.min_replicas, min(variant.max_replicas, rec.desired_replicas))
    return variant.configured_replicas


def engine_args(pool: ModelPool, variant: Variant, cfg: OperatorConfig) -> list[str]:
    model = pool.spec.model
    kv_events = {
        "enable_kv_cache_events": True,
        "publisher": "zmq",
        "endpoint": cfg.kv_events_endpoint,
        "topic": f"kv@$(POD_IP):{cfg.engine_port}@{model.name}",
        "replay_endpoint": f"tcp://$(POD_IP):{cfg.kv_replay_port}",
    }
    args = [
        model.source,
        "--served-model-name",
        model.name,
        "--port",
        str(cfg.engine_port),
        "--tensor-parallel-size",
        str(variant.gpus_per_replica),
        "--enable-prefix-caching",
        "--kv-events-config",
        json.dumps(kv_events, separators=(",", ":")),
    ]
    if model.max_model_len:
        args += ["--max-model-len", str(model.max_model_len)]
    if model.tokenizer:
        args += ["--tokenizer", model.tokenizer]
    return [*args, *model.engine_args]


def build_pod_template(pool: ModelPool, variant: Variant, cfg: OperatorConfig) -> dict[str, Any]:
    labels = variant_labels(pool, variant)
    resources: dict[str, Any] = {
        "limits": {GPU_RESOURCE: str(variant.gpus_per_replica)},
        "requests": {GPU_RESOURCE: str(variant.gpus_per_replica)},
    }
    for kind in ("limits", "requests"):
        resources[kind].update(variant.resources.get(kind) or {})
    probe = {"httpGet": {"path": "/health", "port": "http"}}
    container = {
        "name": "vllm",
        "image": pool.spec.model.image,
        "command": ["vllm", "serve"],
        "args": engine_args(pool, variant, cfg),
        "ports": [{"name": "http", "containerPort": cfg.engine_port, "protocol": "TCP"}],
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            *pool.spec.model.env,
        ],
        "resources": resources,
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 3},
        "startupProbe": {**probe, "periodSeconds": 10, "failureThreshold": 180},
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 6},
    }
    tolerations = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}, *variant.tolerations]
    return {
        "metadata": {"labels": labels},
        "spec": {
            "containers": [container],
            "nodeSelector": {**variant.node_selector, GPU_PRODUCT_LABEL: variant.gpu_product},
            "tolerations": tolerations,
            "terminationGracePeriodSeconds": 30,
        },
    }


def build_deployment(pool: ModelPool, variant: Variant, cfg: OperatorConfig) -> dict[str, Any]:
    """One Deployment per variant; rolling updates surge one pod and never drop below the desired count,
    because an engine takes minutes to load and capacity lost mid-rollout is latency for users."""
    labels = variant_labels(pool, variant)
    selector = {POOL_LABEL: pool.name, VARIANT_LABEL: variant.name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(pool, deployment_name(pool, variant), labels),
        "spec": {
            "replicas": desired_replicas(pool, variant),
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": build_pod_template(pool, variant, cfg),
        },
    }


def build_service(pool: ModelPool, cfg: OperatorConfig) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(pool, pool.name, pool_labels(pool)),
        "spec": {
            "selector": {POOL_LABEL: pool.name},
            "ports": [{"name": "http", "port": cfg.engine_port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def build_pdb(pool: ModelPool) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(pool, pool.name, pool_labels(pool)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {POOL_LABEL: pool.name}}},
    }


def build_inference_pool(pool: ModelPool, cfg: OperatorConfig) -> dict[str, Any]:
    """The Gateway API Inference Extension's view of the pool: its engine pods (the same selector as the
    pool's Service), their port, and headway's Endpoint Picker to ask which one serves each request."""
    epp = pool.spec.inference_pool.endpoint_picker
    return {
        "apiVersion": f"{INFERENCE_POOL_GROUP}/{INFERENCE_POOL_VERSION}",
        "kind": INFERENCE_POOL_KIND,
        "metadata": _metadata(pool, pool.name, pool_labels(pool)),
        "spec": {
            "selector": {"matchLabels": {POOL_LABEL: pool.name}},
            "targetPorts": [{"number": cfg.engine_port}],
            "endpointPickerRef": {
                "kind": "Service",
                "name": epp.service,
                "port": {"number": epp.port},
                "failureMode": epp.failure_mode,
            },
        },
    }


def build_children(pool: ModelPool, cfg: OperatorConfig, *, inference_pools: bool = False) -> list[dict[str, Any]]:
    """Every child of the pool; its InferencePool when `inference_pools` (the cluster serves the API) and
    the pool asks for one."""
    children = [*(build_deployment(pool, v, cfg) for v in pool.spec.variants), build_service(pool, cfg)]
    children.append(build_pdb(pool))
    if inference_pools and pool.spec.inference_pool.enabled:
        children.append(build_inference_pool(pool, cfg))
    return children
