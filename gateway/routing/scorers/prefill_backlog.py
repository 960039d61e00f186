"""Prefer the endpoint with the shortest predicted time to first token, counted in tokens of prefill.

cost = the uncached prompt tokens of this gateway's requests already waiting there for a first token
       + this request's own uncached tokens there (prompt − the cached prefix the prefix scorer found);
score = (min_cost + 1) / (cost + 1): relative, so a hit on an engine with a little more queued work still
wins, while one behind a long backlog loses.

A cache hit only shortens TTFT if the engine is not busy prefilling other prompts; queue length and
in-flight counts cannot tell a decoding request (cheap for a newcomer) from a prefilling one (which
stalls it), so this term prices both the hit and the backlog in the same unit. Requires `cached-tokens`
(prefix-cache-scorer before it in the profile; the pipeline refuses any other order).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from headway.gateway.endpoints import Endpoint
from headway.gateway.routing.deps import PluginDeps
from headway.gateway.routing.types import CACHED_TOKENS, CycleState, RoutingRequest, Scorer, uncached_tokens

TYPE = "prefill-backlog-scorer"


class Params(BaseModel, frozen=True, extra="forbid"):
    pass


class PrefillBacklogScorer(Scorer):
    TYPE = TYPE
    requires = frozenset({CACHED_TOKENS})

    def score(self, request: RoutingRequest, endpoints: Sequence[Endpoint], state: CycleState) -> dict[str, float]:
        cached = state.cached_tokens
        cost = {e.id: e.prefill_backlog + uncached_tokens(request, cached, e.id) for e in endpoints}
        lo = min(cost.values(), default=0)
        return {k: (lo + 1) / (c + 1) for k, c in cost.items()}


def make(params: Params, deps: PluginDeps) -> PrefillBacklogScorer:
    return PrefillBacklogScorer()
