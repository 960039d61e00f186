"""The gateway's Prometheus metrics (names defined in headway.api.labels); never re-exports vllm:*."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from headway.api.labels import (
    METRIC_GATEWAY_ADMITTED,
    METRIC_GATEWAY_HELD,
    METRIC_GATEWAY_IN_FLIGHT,
    METRIC_GATEWAY_PICKS,
    METRIC_GATEWAY_PREDICTED_HIT_TOKENS,
    METRIC_GATEWAY_REQUEST_DURATION,
    METRIC_GATEWAY_REQUEST_SHAPE,
    METRIC_GATEWAY_REQUESTS,
    METRIC_GATEWAY_RETRIES,
    METRIC_GATEWAY_ROUTING_DURATION,
    METRIC_GATEWAY_SERVED,
    METRIC_GATEWAY_SHARED_LOOKUPS,
    METRIC_MODEL_ROUTE_DECISIONS,
    METRIC_MODEL_ROUTE_DURATION,
    METRIC_MODEL_ROUTE_FEEDBACK,
    METRIC_MODEL_ROUTE_REJECTIONS,
    METRIC_MODEL_ROUTE_REWARD,
)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            METRIC_GATEWAY_REQUESTS,
            "Requests by routing strategy and status code.",
            ("strategy", "code"),
            registry=registry,
        )
        self.duration = Histogram(
            METRIC_GATEWAY_REQUEST_DURATION,
            "Request time through the gateway.",
            ("strategy",),
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=registry,
        )
        self.routing = Histogram(
            METRIC_GATEWAY_ROUTING_DURATION,
            "Time to pick an endpoint (tokenize + score).",
            ("strategy",),
            buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05),
            registry=registry,
        )
        self.retries = Counter(
            METRIC_GATEWAY_RETRIES,
            "Requests re-sent to another endpoint before the first byte.",
            ("reason",),
            registry=registry,
        )
        self.picks = Counter(
            METRIC_GATEWAY_PICKS,
            "Routing decisions by strategy and whether a prefix matched.",
            ("strategy", "prefix_hit"),
            registry=registry,
        )
        self.shared_lookups = Counter(
            METRIC_GATEWAY_SHARED_LOOKUPS,
            "Lookups in the Redis-shared KV index by result (ok, timeout, down): a timeout or down routes on "
            "local state alone.",
            ("result",),
            registry=registry,
        )
        self.predicted_hit_tokens = Counter(
            METRIC_GATEWAY_PREDICTED_HIT_TOKENS,
            "Prompt tokens the index predicted cached on the endpoint each request was sent to.",
            registry=registry,
        )
        self.admitted = Gauge(
            METRIC_GATEWAY_ADMITTED,
            "Requests holding an admission slot: from body read to the end of the answer, held ones included.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.held = Counter(
            METRIC_GATEWAY_HELD, "Requests that waited for a ready endpoint, by model.", ("model",), registry=registry
        )
        self.shapes = Counter(
            METRIC_GATEWAY_REQUEST_SHAPE,
            "Completed requests by model and token bucket (prompt, generated): the joint token mix the "
            "autoscaler sizes pools for.",
            ("model", "input_tokens_le", "output_tokens_le"),
            registry=registry,
        )
        self.in_flight = Gauge(
            METRIC_GATEWAY_IN_FLIGHT,
            "Requests in flight through this gateway, by model.",
            ("model",),
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.served = Counter(
            METRIC_GATEWAY_SERVED,
            "Endpoint Picker: who served each picked request, as the data plane reports it (chosen: the first "
            "choice; fallback: another; unreported: the data plane did not say).",
            ("outcome",),
            registry=registry,
        )
        self.model_route_decisions = Counter(
            METRIC_MODEL_ROUTE_DECISIONS,
            "Model-route decisions by route, pool sent to, rule (empty: none matched), reason (rule, default, "
            "guard, overflow) and rollout (acted; shadow or canary-skipped: sent to the default pool).",
            ("route", "pool", "rule", "reason", "rollout"),
            registry=registry,
        )
        self.model_route_rejections = Counter(
            METRIC_MODEL_ROUTE_REJECTIONS,
            "Requests a model route refused, by route, what refused it (guard, rule) and the rule.",
            ("route", "by", "rule"),
            registry=registry,
        )
        self.model_route_duration = Histogram(
            METRIC_MODEL_ROUTE_DURATION,
            "Time to choose a pool (signals, classifier, rules, objective).",
            ("route",),
            buckets=(5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.05),
            registry=registry,
        )
        self.model_route_feedback = Counter(
            METRIC_MODEL_ROUTE_FEEDBACK,
            "Feedback rewards received, by route and the pool that served the request.",
            ("route", "pool"),
            registry=registry,
        )
        self.model_route_reward = Gauge(
            METRIC_MODEL_ROUTE_REWARD,
            "Mean feedback reward of each route's pools since the route was loaded.",
            ("route", "pool"),
            registry=registry,
            multiprocess_mode="liveall",
        )
