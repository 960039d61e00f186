"""Label, annotation and resource names: the one place these strings are spelled."""

GROUP = "inference.headway.dev"

POOL_LABEL = f"{GROUP}/pool"
"""On every child of a ModelPool: the pool's name."""

VARIANT_LABEL = f"{GROUP}/variant"
"""On every per-variant child: the variant's name."""

ENGINE_LABEL = f"{GROUP}/engine"
"""On engine pods; value is the engine kind (`vllm`). The dev runner starts processes for these pods."""

ENGINE_RUNTIME_ANNOTATION = f"{GROUP}/engine-runtime"
"""Optional per-pod choice, for the dev runner only, of what serves a `vllm` engine pod: `sim` or `vllm`."""

CONTROL_PLANE_LABEL = f"{GROUP}/control-plane"
CONTROL_PLANE_VALUE = "true"
"""Pods of headway's own control plane (operator, gateway, indexer, autoscaler) carry this label."""

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "headway-operator"

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
"""The NVIDIA GPU feature discovery label that names a node's GPU model."""

# Condition types and reasons of a ModelPool's status.
CONDITION_READY = "Ready"
CONDITION_PROGRESSING = "Progressing"
CONDITION_DEGRADED = "Degraded"
REASON_ALL_READY = "AllReplicasReady"
REASON_SCALED_TO_ZERO = "ScaledToZero"
REASON_REPLICAS_STARTING = "ReplicasStarting"
REASON_STABLE = "Stable"
REASON_UNSCHEDULABLE = "Unschedulable"
REASON_AS_EXPECTED = "AsExpected"
REASON_INVALID_SPEC = "InvalidSpec"

# Metric names of the operator (the strings dashboards and tests read).
METRIC_OPERATOR_RECONCILES = "headway_operator_reconciles_total"
METRIC_OPERATOR_RECONCILE_ERRORS = "headway_operator_reconcile_errors_total"
METRIC_OPERATOR_RECONCILE_DURATION = "headway_operator_reconcile_duration_seconds"
METRIC_OPERATOR_STATUS_UPDATES = "headway_operator_status_updates_total"
METRIC_OPERATOR_POOLS = "headway_operator_pools"
METRIC_OPERATOR_DESIRED_REPLICAS = "headway_operator_desired_replicas"
METRIC_OPERATOR_READY_REPLICAS = "headway_operator_ready_replicas"
METRIC_OPERATOR_ADMISSION_REVIEWS = "headway_operator_admission_reviews_total"

# Metric names of the KV-cache index.
METRIC_KVCACHE_EVENTS = "headway_kvcache_events_total"
METRIC_KVCACHE_BLOCKS = "headway_kvcache_blocks_total"
METRIC_KVCACHE_GAPS = "headway_kvcache_sequence_gaps_total"
METRIC_KVCACHE_DECODE_ERRORS = "headway_kvcache_decode_errors_total"
METRIC_KVCACHE_LAG = "headway_kvcache_event_lag_seconds"
METRIC_KVCACHE_KEYS = "headway_kvcache_index_keys"
METRIC_KVCACHE_LOOKUP = "headway_kvcache_lookup_duration_seconds"
METRIC_KVCACHE_REPLAYS = "headway_kvcache_replays_total"

# Metric names of the gateway.
METRIC_GATEWAY_REQUESTS = "headway_gateway_requests_total"
METRIC_GATEWAY_REQUEST_DURATION = "headway_gateway_request_duration_seconds"
METRIC_GATEWAY_ROUTING_DURATION = "headway_gateway_routing_decision_duration_seconds"
METRIC_GATEWAY_RETRIES = "headway_gateway_retries_total"
METRIC_GATEWAY_PICKS = "headway_gateway_endpoint_picks_total"
METRIC_GATEWAY_PREDICTED_HIT_TOKENS = "headway_gateway_predicted_prefix_hit_tokens_total"
METRIC_GATEWAY_IN_FLIGHT = "headway_gateway_in_flight_requests"
METRIC_GATEWAY_HELD = "headway_gateway_held_requests_total"
METRIC_GATEWAY_ADMITTED = "headway_gateway_admitted_requests"
METRIC_GATEWAY_REQUEST_SHAPE = "headway_gateway_request_shapes_total"
METRIC_GATEWAY_SERVED = "headway_gateway_served_by_total"
METRIC_GATEWAY_SHARED_LOOKUPS = "headway_gateway_shared_index_lookups_total"
"""Lookups in the Redis-shared index by result: ok, timeout (routed on local state this once), down."""
METRIC_MODEL_ROUTE_DECISIONS = "headway_model_route_decisions_total"
METRIC_MODEL_ROUTE_REJECTIONS = "headway_model_route_rejections_total"
METRIC_MODEL_ROUTE_DURATION = "headway_model_route_decision_duration_seconds"
METRIC_MODEL_ROUTE_FEEDBACK = "headway_model_route_feedback_total"
METRIC_MODEL_ROUTE_REWARD = "headway_model_route_mean_reward"
"""Completed requests by model and (input, output) token bucket; see headway.api.shape."""

# Metric names of the autoscaler.
METRIC_AUTOSCALER_DESIRED_REPLICAS = "headway_autoscaler_desired_replicas"
METRIC_AUTOSCALER_CURRENT_REPLICAS = "headway_autoscaler_current_replicas"
METRIC_AUTOSCALER_SLO_ATTAINMENT = "headway_autoscaler_slo_attainment"
METRIC_AUTOSCALER_COST_PER_HOUR = "headway_autoscaler_cost_per_hour_usd"
METRIC_AUTOSCALER_DECISIONS = "headway_autoscaler_decisions_total"
METRIC_AUTOSCALER_DEMAND_RPS = "headway_autoscaler_demand_requests_per_second"
METRIC_AUTOSCALER_PROVISIONING = "headway_autoscaler_provisioning_seconds"

# Labels the autoscaler expects on engine and gateway series in Prometheus (set by relabelling the pod's
# namespace and its pool/variant labels at scrape time).
PROMETHEUS_NAMESPACE_LABEL = "namespace"
PROMETHEUS_POOL_LABEL = "pool"
PROMETHEUS_VARIANT_LABEL = "variant"

# The autoscaler's condition (in status.autoscaling.conditions) and its annotation-free state.
CONDITION_SCALING_ACTIVE = "ScalingActive"
REASON_METRICS_AVAILABLE = "MetricsAvailable"
"""ScalingActive=True: the last decision was taken on fresh metrics."""
REASON_METRICS_STALE = "MetricsStale"
"""ScalingActive=False: the metrics source failed or is stale, so the pool holds its size."""
AUTOSCALER_LEASE = "headway-autoscaler"

# Gateway API Inference Extension: the InferencePool the operator creates per ModelPool.
INFERENCE_POOL_GROUP = "inference.networking.k8s.io"
INFERENCE_POOL_VERSION = "v1"
INFERENCE_POOL_PLURAL = "inferencepools"
INFERENCE_POOL_KIND = "InferencePool"
INFERENCE_POOL_CRD = f"{INFERENCE_POOL_PLURAL}.{INFERENCE_POOL_GROUP}"
