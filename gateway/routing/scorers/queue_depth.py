"""Prefer endpoints with shorter waiting queues (the engine's `vllm:num_requests_waiting`).

score = (min_q + 1) / (q + 1): relative, so 3 vs 4 waiting barely matters while 0 vs 4 does. (A min–max
form swings fully on any difference and, near saturation, outvotes the prefix term.) All equal: 1.0 each.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from headway.gateway.endpoints import Endpoint
from headway.gateway.routing.deps import PluginDeps
from headway.gateway.routing.types import CycleState, RoutingRequest, Scorer

TYPE = "queue-depth-scorer"


class Params(BaseModel, frozen=True, extra="forbid"):
    pass


class QueueDepthScorer(Scorer):
    TYPE = TYPE

    def score(self, request: RoutingRequest, endpoints: Sequence[Endpoint], state: CycleState) -> dict[str, float]:
        lo = min((e.waiting for e in endpoints), default=0.0)
        return {e.id: (lo + 1) / (e.waiting + 1) for e in endpoints}


def make(params: Params, deps: PluginDeps) -> QueueDepthScorer:
    return QueueDepthScorer()
