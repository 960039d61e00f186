"""Re-implementations of other autoscalers' replica formulas, one file each, for the autoscaler benchmark.

Each policy sees what its original sees (a per-pod metric averaged over the ready pods, or a proxy's
in-flight count) and returns desired replicas for one Deployment of one GPU type. Defaults are the
originals' own, cited in each file.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PodMetrics:
    """What a metrics-driven autoscaler reads at one sync, over the ready pods of its Deployment."""

    ready: int
    kv_cache_usage_avg: float
    """vllm:kv_cache_usage_perc averaged over ready pods (0..1)."""
    waiting_avg: float
    """vllm:num_requests_waiting averaged over ready pods."""
    active_requests_total: float
    """Requests in flight at the proxy (KubeAI's signal): running + waiting + held."""
