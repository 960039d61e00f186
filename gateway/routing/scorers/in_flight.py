"""Prefer endpoints with fewer of this gateway's requests in flight (sent, not yet finished).

score = (min + 1) / (n + 1): relative, like the queue term. Unlike the engine's metrics this count is
exact and immediate, so it spreads a burst that arrives between two scrapes. All equal: 1.0 each.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from headway.gateway.endpoints import Endpoint
from headway.gateway.routing.deps import PluginDeps
from headway.gateway.routing.types import CycleState, RoutingRequest, Scorer

TYPE = "in-flight-scorer"


class Params(BaseModel, frozen=True, extra="forbid"):
    pass


class InFlightScorer(Scorer):
    TYPE = TYPE

    def score(self, request: RoutingRequest, endpoints: Sequence[Endpoint], state: CycleState) -> dict[str, float]:
        lo = min((e.in_flight for e in endpoints), default=0)
        return {e.id: (lo + 1) / (e.in_flight + 1) for e in endpoints}


def make(params: Params, deps: PluginDeps) -> InFlightScorer:
    return InFlightScorer()
