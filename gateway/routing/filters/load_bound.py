"""Bounded loads: drop endpoints whose load exceeds ceil(bound × mean) + 1.

load = this gateway's in-flight requests + the engine's waiting queue. A popular prefix therefore cannot
pile every request onto one engine. With fewer than two endpoints, or when every endpoint is over the
bound, nothing is dropped (the filter never empties the set).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, Field

from headway.gateway.endpoints import Endpoint
from headway.gateway.routing.deps import PluginDeps
from headway.gateway.routing.types import CycleState, Filter, RoutingRequest

TYPE = "load-bound-filter"


class Params(BaseModel, frozen=True, extra="forbid"):
    bound: float | None = Field(None, ge=1.0, description="× mean load (default: the gateway's load_bound).")


class LoadBoundFilter(Filter):
    TYPE = TYPE

    def __init__(self, bound: float) -> None:
        self.bound = bound

    def filter(self, request: RoutingRequest, endpoints: Sequence[Endpoint], state: CycleState) -> list[Endpoint]:
        if len(endpoints) < 2:
            return list(endpoints)
        mean = sum(e.in_flight + e.waiting for e in endpoints) / len(endpoints)
        cap = math.ceil(self.bound * mean) + 1
        kept = [e for e in endpoints if e.in_flight + e.waiting <= cap]
        return kept or list(endpoints)


def make(params: Params, deps: PluginDeps) -> LoadBoundFilter:
    return LoadBoundFilter(params.bound or deps.load_bound)
