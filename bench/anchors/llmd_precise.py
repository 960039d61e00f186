"""llm-d's precise prefix-cache scheduling: `prefix-cache-scorer` fed by the KV-event index (weight 3),
`queue-scorer` (2), `kv-cache-utilization-scorer` (2), `max-score-picker`.

Source: llm-d-router@ebab6879 `pkg/epp/config/loader/defaults.go` (default weights),
`pkg/epp/scheduling/scheduler_profile.go` (total = Σ weight·clamp01(score)), the scorers in
`pkg/epp/scheduling/framework/plugins/scorer/` and llm-d-kv-cache@7be76e11 `pkg/kvcache/kvblock_scorer.go`
(LongestPrefix over the event index); the weights are the ones of llm-d's 73-capacity benchmark
(llm-d-kv-cache `benchmarking/73-capacity/README.md`). As summarised in headway's reference notes.

- prefix: matched blocks / prompt blocks, walking from block 0 over pods that hold every block so far,
  from the engines' KV events only (no speculative entries: the gateway is told `speculative = False`).
- queue: (maxQ − Q)/(maxQ − minQ) over the candidates' waiting requests, 1.0 when all are equal.
- kv-cache utilisation: 1 − KV usage.
- picker: shuffle, then the highest total (random tie-break).
"""

from __future__ import annotations

from collections.abc import Sequence

from headway.gateway.endpoints import Endpoint
from headway.gateway.routing.custom import RouterContext
from headway.gateway.routing.types import Decision, Router, RoutingRequest

WEIGHTS = {"prefix": 3.0, "queue": 2.0, "kv_utilization": 2.0}


class LlmdPrecise(Router):
    speculative = False

    def __init__(self, ctx: RouterContext) -> None:
        self.ctx = ctx

    def decide(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> Decision:
        if not endpoints:
            return Decision([])
        terms: dict[str, dict[str, float]] = {e.id: {} for e in endpoints}
        for size, group in self.ctx.block_sizes.group(endpoints).items():
            keys = request.keys(size)
            matched = self.ctx.index.longest_prefix(keys, (e.id for e in group)) if keys else {}
            for e in group:
                terms[e.id]["prefix"] = WEIGHTS["prefix"] * (matched.get(e.id, 0) / len(keys) if keys else 0.0)
        qs = [e.waiting for e in endpoints]
        lo, hi = min(qs), max(qs)
        for e in endpoints:
            queue = 1.0 if hi == lo else (hi - e.waiting) / (hi - lo)
            terms[e.id]["queue"] = WEIGHTS["queue"] * queue
            terms[e.id]["kv_utilization"] = WEIGHTS["kv_utilization"] * (1.0 - min(1.0, max(0.0, e.kv_usage)))
        keyed = [(sum(terms[e.id].values()), self.ctx.rng.random(), e) for e in endpoints]
        keyed.sort(key=lambda x: (x[0], x[1]), reverse=True)
        return Decision([e for _, _, e in keyed], terms)


def make(ctx: RouterContext) -> LlmdPrecise:
    return LlmdPrecise(ctx)
