"""Keep endpoints with fresh metrics that are not ejected.

If none is fresh, keep every endpoint that is not ejected: routing on stale numbers beats refusing the
request. Ejected endpoints (a connection failure or a 5xx in the last seconds) are never kept.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from pydantic import BaseModel, Field

from headway.gateway.endpoints import Endpoint
from headway.gateway.routing.deps import PluginDeps
from headway.gateway.routing.types import CycleState, Filter, RoutingRequest

TYPE = "routable-filter"


class Params(BaseModel, frozen=True, extra="forbid"):
    stale_after_s: float | None = Field(None, gt=0, description="Metrics age limit (default: the gateway's).")


class RoutableFilter(Filter):
    TYPE = TYPE

    def __init__(self, stale_after_s: float) -> None:
        self.stale_after_s = stale_after_s

    def filter(self, request: RoutingRequest, endpoints: Sequence[Endpoint], state: CycleState) -> list[Endpoint]:
        now = time.monotonic()
        fresh = [e for e in endpoints if e.routable(now, self.stale_after_s)]
        return fresh or [e for e in endpoints if now >= e.ejected_until]


def make(params: Params, deps: PluginDeps) -> RoutableFilter:
    return RoutableFilter(params.stale_after_s or deps.stale_after_s)
