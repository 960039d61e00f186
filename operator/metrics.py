"""The operator's Prometheus metrics (names defined in headway.api.labels)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from headway.api.labels import (
    METRIC_OPERATOR_ADMISSION_REVIEWS,
    METRIC_OPERATOR_DESIRED_REPLICAS,
    METRIC_OPERATOR_POOLS,
    METRIC_OPERATOR_READY_REPLICAS,
    METRIC_OPERATOR_RECONCILE_DURATION,
    METRIC_OPERATOR_RECONCILE_ERRORS,
    METRIC_OPERATOR_RECONCILES,
    METRIC_OPERATOR_STATUS_UPDATES,
)

REGISTRY = CollectorRegistry(auto_describe=True)
RECONCILES = Counter(
    METRIC_OPERATOR_RECONCILES, "Pool reconciles by trigger and outcome.", ("trigger", "outcome"), registry=REGISTRY
)
RECONCILE_ERRORS = Counter(
    METRIC_OPERATOR_RECONCILE_ERRORS, "Failed pool reconciles by error kind.", ("kind",), registry=REGISTRY
)
RECONCILE_DURATION = Histogram(
    METRIC_OPERATOR_RECONCILE_DURATION,
    "Time to reconcile one pool.",
    ("trigger",),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
STATUS_UPDATES = Counter(
    METRIC_OPERATOR_STATUS_UPDATES, "Status writes (only when something changed).", registry=REGISTRY
)
POOLS = Gauge(METRIC_OPERATOR_POOLS, "ModelPools this operator reconciles.", registry=REGISTRY)
DESIRED = Gauge(
    METRIC_OPERATOR_DESIRED_REPLICAS,
    "Desired replicas per pool and variant.",
    ("namespace", "pool", "variant", "gpu_product"),
    registry=REGISTRY,
)
READY = Gauge(
    METRIC_OPERATOR_READY_REPLICAS,
    "Ready replicas per pool and variant.",
    ("namespace", "pool", "variant", "gpu_product"),
    registry=REGISTRY,
)
ADMISSION_REVIEWS = Counter(
    METRIC_OPERATOR_ADMISSION_REVIEWS,
    "ModelRoute writes the admission webhook judged, by outcome: admitted, refused, error (could not check).",
    ("outcome",),
    registry=REGISTRY,
)
