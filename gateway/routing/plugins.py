"""The in-tree filters and scorers. Each docstring gives the formula and its edge cases."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

from headway.gateway.endpoints import Endpoint
from headway.gateway.routing.types import RoutingRequest
from headway.kvcache.index import InMemoryIndex

DEFAULT_BLOCK_SIZE = 16


class RoutableFilter:
    """Keeps endpoints with fresh metrics that are not ejected; if none is left, keeps all that are not
    ejected, because routing on stale numbers beats refusing the request."""

    def __init__(self, stale_after_s: float) -> None:
        self.stale_after_s = stale_after_s

    def filter(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> list[Endpoint]:
        now = time.monotonic()
        fresh = [e for e in endpoints if e.routable(now, self.stale_after_s)]
        return fresh or [e for e in endpoints if now >= e.ejected_until]


class LoadBoundFilter:
    """Bounded loads: drop endpoints whose in-flight count exceeds ceil(bound × mean) + 1, so a popular
    prefix cannot pile every request onto one engine. Never drops all endpoints."""

    def __init__(self, bound: float) -> None:
        self.bound = bound

    def filter(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> list[Endpoint]:
        if len(endpoints) < 2:
            return list(endpoints)
        mean = sum(e.in_flight + e.waiting for e in endpoints) / len(endpoints)
        cap = math.ceil(self.bound * mean) + 1
        kept = [e for e in endpoints if e.in_flight + e.waiting <= cap]
        return kept or list(endpoints)


class PrefixCacheScorer:
    """Fraction of the prompt's full blocks the endpoint holds as a cached prefix, from the KV index
    (engine events plus short-lived speculative entries), or from the shared Redis index when that knows
    more. 0 for every endpoint when nothing matches."""

    def __init__(
        self,
        index: InMemoryIndex,
        block_sizes: Mapping[str, int],
        observe_lookup_s: Callable[[float], None] | None = None,
    ) -> None:
        self.index, self.block_sizes = index, block_sizes
        self.observe_lookup_s = observe_lookup_s

    def score(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> dict[str, float]:
        out: dict[str, float] = {}
        by_size: dict[int, list[Endpoint]] = {}
        for e in endpoints:
            size = self.block_sizes.get(e.id) or e.block_size or DEFAULT_BLOCK_SIZE
            by_size.setdefault(size, []).append(e)
        for size, group in by_size.items():
            keys = request.keys(size)
            if not keys:
                out.update(dict.fromkeys((e.id for e in group), 0.0))
                continue
            t0 = time.perf_counter()
            matched = self.index.longest_prefix(keys, (e.id for e in group))
            if self.observe_lookup_s is not None:
                self.observe_lookup_s(time.perf_counter() - t0)
            shared = request.shared_matches.get(size, {})
            for e in group:
                blocks = max(matched.get(e.id, 0), shared.get(e.id, 0))
                request.cached_tokens[e.id] = blocks * size
                out[e.id] = blocks / len(keys)
        return out


class QueueScorer:
    """(min_q + 1) / (q + 1) over waiting requests: relative, so 3 vs 4 waiting barely matters while 0 vs 4
    does (a min–max form swings fully on any difference and, near saturation, outvotes the prefix term)."""

    def score(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> dict[str, float]:
        lo = min((e.waiting for e in endpoints), default=0.0)
        return {e.id: (lo + 1) / (e.waiting + 1) for e in endpoints}


class KvUtilizationScorer:
    """1 − KV-cache usage reported by the engine."""

    def score(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> dict[str, float]:
        return {e.id: 1.0 - min(1.0, max(0.0, e.kv_usage)) for e in endpoints}


class InFlightScorer:
    """(min + 1) / (n + 1) over this gateway's in-flight requests: relative, like the queue term."""

    def score(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> dict[str, float]:
        lo = min((e.in_flight for e in endpoints), default=0)
        return {e.id: (lo + 1) / (e.in_flight + 1) for e in endpoints}


class PrefillBacklogScorer:
    """Predicted time to first token, in tokens of prefill: the uncached prompt tokens already waiting for a
    first token on the endpoint plus this request's own uncached tokens there (prompt − cached prefix, from
    the prefix scorer, which must run first). Score (min + 1) / (c + 1): relative, so a hit on an engine
    with a little more queued work still wins, while one behind a long backlog loses.

    A cache hit only shortens TTFT if the engine is not busy prefilling other prompts; queue length and
    in-flight counts cannot tell a decoding request (cheap for a newcomer) from a prefilling one (which
    stalls it), so this term prices both the hit and the backlog in the same unit."""

    def score(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> dict[str, float]:
        cost = {e.id: e.prefill_backlog + request.uncached_tokens(e.id) for e in endpoints}
        lo = min(cost.values(), default=0)
        return {k: (lo + 1) / (c + 1) for k, c in cost.items()}
