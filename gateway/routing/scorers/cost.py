"""Prefer cheaper GPUs: score = cheapest / price, over the endpoints' price per replica-hour.

The price is the variant's `costPerGpuHourUsd` × `gpusPerReplica` from its ModelPool (the same prices
the autoscaler's cost model uses), attached to each endpoint by discovery. An endpoint without a price
scores 1.0 (neutral); when no endpoint has one, every endpoint scores 1.0. A free endpoint (price 0)
scores 1.0 and, being the cheapest, makes every priced one score 0.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from headway.gateway.endpoints import Endpoint
from headway.gateway.routing.deps import PluginDeps
from headway.gateway.routing.types import CycleState, RoutingRequest, Scorer

TYPE = "cost-scorer"


class Params(BaseModel, frozen=True, extra="forbid"):
    pass


class CostScorer(Scorer):
    TYPE = TYPE

    def score(self, request: RoutingRequest, endpoints: Sequence[Endpoint], state: CycleState) -> dict[str, float]:
        prices = [e.cost_per_hour_usd for e in endpoints if e.cost_per_hour_usd is not None]
        lo = min(prices, default=None)
        out = {}
        for e in endpoints:
            price = e.cost_per_hour_usd
            out[e.id] = 1.0 if price is None or lo is None or price <= 0 else lo / price
        return out


def make(params: Params, deps: PluginDeps) -> CostScorer:
    return CostScorer()
