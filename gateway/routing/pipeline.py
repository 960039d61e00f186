"""filters → weighted scorers → picker (max score, random tie-break), and the presets.

Presets: `kv-aware` (precise prefix from the engines' KV events, queue, KV utilisation, in-flight and
prefill backlog, under a bounded-load filter), `approx-prefix` (prefix from this gateway's routing history
instead of events), `least-request`, `round-robin`, `random`.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from headway.api.modelpool import ScorerWeights
from headway.gateway.endpoints import Endpoint
from headway.gateway.routing.plugins import (
    InFlightScorer,
    KvUtilizationScorer,
    LoadBoundFilter,
    PrefillBacklogScorer,
    PrefixCacheScorer,
    QueueScorer,
    RoutableFilter,
)
from headway.gateway.routing.types import Filter, RoutingRequest, Scorer
from headway.kvcache.index import InMemoryIndex

STRATEGIES = ("kv-aware", "approx-prefix", "least-request", "round-robin", "random")


@dataclass(frozen=True)
class Decision:
    ranked: list[Endpoint]
    """Best first; retries take the next one."""
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per endpoint id, each scorer's term (for the debug header)."""


@dataclass
class Pipeline:
    name: str
    filters: list[Filter]
    scorers: list[tuple[str, Scorer, float]]
    rng: random.Random = field(default_factory=random.Random)
    rotate: bool = False
    _rr: itertools.count = field(default_factory=itertools.count)

    def decide(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> Decision:
        candidates = list(endpoints)
        for f in self.filters:
            kept = f.filter(request, candidates)
            if not kept:
                return Decision([])
            candidates = kept
        if self.rotate:
            start = next(self._rr) % len(candidates)
            return Decision(candidates[start:] + candidates[:start])
        terms: dict[str, dict[str, float]] = {e.id: {} for e in candidates}
        for name, scorer, weight in self.scorers:
            if weight <= 0:
                continue
            for eid, s in scorer.score(request, candidates).items():
                terms[eid][name] = weight * min(1.0, max(0.0, s))
        total = {eid: sum(t.values()) for eid, t in terms.items()}
        keyed = [(total[e.id], self.rng.random(), e) for e in candidates]
        keyed.sort(key=lambda x: (x[0], x[1]), reverse=True)
        return Decision([e for _, _, e in keyed], terms)


def build_pipeline(
    strategy: str,
    weights: ScorerWeights,
    *,
    index: InMemoryIndex,
    history: InMemoryIndex,
    block_sizes: Mapping[str, int],
    stale_after_s: float,
    load_bound: float,
    rng: random.Random | None = None,
    observe_lookup_s: Callable[[float], None] | None = None,
) -> Pipeline:
    """The preset's pipeline; an unknown name fails naming the known ones."""
    rng = rng or random.Random()  # noqa: S311 - tie-breaking, not secrets
    routable = RoutableFilter(stale_after_s)
    if strategy == "kv-aware":
        return Pipeline(
            strategy,
            [routable, LoadBoundFilter(load_bound)],
            [
                ("prefix", PrefixCacheScorer(index, block_sizes, observe_lookup_s), weights.prefix),
                ("queue", QueueScorer(), weights.queue),
                ("kv_utilization", KvUtilizationScorer(), weights.kv_utilization),
                ("in_flight", InFlightScorer(), weights.in_flight or 1.0),
                ("prefill_backlog", PrefillBacklogScorer(), weights.prefill_backlog),
            ],
            rng,
        )
    if strategy == "approx-prefix":
        return Pipeline(
            strategy,
            [routable, LoadBoundFilter(load_bound)],
            [
                ("approx_prefix", PrefixCacheScorer(history, block_sizes), weights.approx_prefix or weights.prefix),
                ("queue", QueueScorer(), weights.queue),
                ("in_flight", InFlightScorer(), weights.in_flight or 1.0),
            ],
            rng,
        )
    if strategy == "least-request":
        return Pipeline(strategy, [routable], [("in_flight", InFlightScorer(), 1.0)], rng)
    if strategy == "round-robin":
        return Pipeline(strategy, [routable], [], rng, rotate=True)
    if strategy == "random":
        return Pipeline(strategy, [routable], [], rng)
    raise ValueError(f"unknown routing strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
