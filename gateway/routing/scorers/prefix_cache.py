"""Prefer the endpoint that already holds the longest prefix of the prompt in its KV cache.

score = matched_blocks / prompt_blocks, per endpoint, where matched_blocks is the longest run of the
prompt's leading full blocks the index says the endpoint holds (block size: the endpoint's own, from
`BlockSizes`). With `source: events` (the default) the index is the one the engines' KV events feed,
plus short-lived speculative entries, and — when the gateway shares its index through Redis — the
longer of that and what other replicas know (read in `prepare`, before any scoring; skipped when Redis
is down). With `source: history` it is this gateway's own routing history (approx-prefix: no events).

Edge cases: a prompt shorter than one block scores 0 everywhere (nothing to reuse). Provides
`cached-tokens` (matched_blocks × block size per endpoint) for the prefill-backlog scorer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from headway.gateway.endpoints import Endpoint
from headway.gateway.routing.blocks import BlockSizes
from headway.gateway.routing.deps import PluginDeps
from headway.gateway.routing.types import CACHED_TOKENS, CycleState, RoutingRequest, Scorer
from headway.kvcache.index import InMemoryIndex
from headway.kvcache.redis_index import RedisLookup

TYPE = "prefix-cache-scorer"


class Params(BaseModel, frozen=True, extra="forbid"):
    source: Literal["events", "history"] = Field(
        "events", description="events: the engines' KV events (and Redis); history: this gateway's routing."
    )


class PrefixCacheScorer(Scorer):
    TYPE = TYPE
    provides = frozenset({CACHED_TOKENS})

    def __init__(
        self,
        index: InMemoryIndex,
        block_sizes: BlockSizes,
        *,
        shared: RedisLookup | None = None,
        observe_lookup_s: Callable[[float], None] | None = None,
    ) -> None:
        self.index, self.block_sizes, self.shared = index, block_sizes, shared
        self.observe_lookup_s = observe_lookup_s

    async def prepare(self, request: RoutingRequest, endpoints: Sequence[Endpoint], state: CycleState) -> None:
        if self.shared is None:
            return
        for size, group in self.block_sizes.group(endpoints).items():
            keys = request.keys(size)
            if keys:
                matched = await self.shared.longest_prefix(keys, [e.id for e in group])
                if matched is not None:
                    state.shared_blocks[size] = matched

    def score(self, request: RoutingRequest, endpoints: Sequence[Endpoint], state: CycleState) -> dict[str, float]:
        out: dict[str, float] = {}
        for size, group in self.block_sizes.group(endpoints).items():
            keys = request.keys(size)
            if not keys:
                out.update(dict.fromkeys((e.id for e in group), 0.0))
                continue
            t0 = time.perf_counter()
            matched = self.index.longest_prefix(keys, (e.id for e in group))
            if self.observe_lookup_s is not None:
                self.observe_lookup_s(time.perf_counter() - t0)
            shared = state.shared_blocks.get(size, {})
            for e in group:
                blocks = max(matched.get(e.id, 0), shared.get(e.id, 0))
                state.cached_tokens[e.id] = blocks * size
                out[e.id] = blocks / len(keys)
        return out


def make(params: Params, deps: PluginDeps) -> PrefixCacheScorer:
    if params.source == "history":
        return PrefixCacheScorer(deps.history, deps.block_sizes)
    return PrefixCacheScorer(deps.index, deps.block_sizes, shared=deps.shared, observe_lookup_s=deps.observe_lookup_s)
