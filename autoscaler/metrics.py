"""The autoscaler's own Prometheus metrics (names in headway.api.labels)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from headway.api.labels import (
    METRIC_AUTOSCALER_COST_PER_HOUR,
    METRIC_AUTOSCALER_CURRENT_REPLICAS,
    METRIC_AUTOSCALER_DECISIONS,
    METRIC_AUTOSCALER_DEMAND_RPS,
    METRIC_AUTOSCALER_DESIRED_REPLICAS,
    METRIC_AUTOSCALER_PROVISIONING,
    METRIC_AUTOSCALER_SLO_ATTAINMENT,
)


class AutoscalerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.desired = Gauge(
            METRIC_AUTOSCALER_DESIRED_REPLICAS,
            "Replicas recommended per variant.",
            ("pool", "variant"),
            registry=registry,
        )
        self.current = Gauge(
            METRIC_AUTOSCALER_CURRENT_REPLICAS,
            "Replicas asked of each variant now.",
            ("pool", "variant"),
            registry=registry,
        )
        self.attainment = Gauge(
            METRIC_AUTOSCALER_SLO_ATTAINMENT,
            "Share of requests meeting the SLO target.",
            ("pool", "slo"),
            registry=registry,
        )
        self.cost = Gauge(
            METRIC_AUTOSCALER_COST_PER_HOUR, "Price of the recommended mix.", ("pool",), registry=registry
        )
        self.decisions = Counter(
            METRIC_AUTOSCALER_DECISIONS, "Decisions by reason.", ("pool", "reason"), registry=registry
        )
        self.demand = Gauge(METRIC_AUTOSCALER_DEMAND_RPS, "Demand the mix is sized for.", ("pool",), registry=registry)
        self.provisioning = Gauge(
            METRIC_AUTOSCALER_PROVISIONING,
            "Median time a variant's pods took to become Ready, by phase (scheduling, starting, loading, total).",
            ("pool", "variant", "phase"),
            registry=registry,
        )
