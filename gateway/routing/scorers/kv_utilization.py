"""Prefer endpoints with free KV cache: score = 1 − `vllm:kv_cache_usage_perc` (clamped to [0, 1]).

A full cache preempts or queues new work; an engine that has not reported yet scores 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from headway.gateway.endpoints import Endpoint
from headway.gateway.routing.deps import PluginDeps
from headway.gateway.routing.types import CycleState, RoutingRequest, Scorer

TYPE = "kv-utilization-scorer"


class Params(BaseModel, frozen=True, extra="forbid"):
    pass


class KvUtilizationScorer(Scorer):
    TYPE = TYPE

    def score(self, request: RoutingRequest, endpoints: Sequence[Endpoint], state: CycleState) -> dict[str, float]:
        return {e.id: 1.0 - min(1.0, max(0.0, e.kv_usage)) for e in endpoints}


def make(params: Params, deps: PluginDeps) -> KvUtilizationScorer:
    return KvUtilizationScorer()
