"""What the gateway routes: one PoolRoute per served model, its endpoints, tokenizer and routing presets.

Static discovery makes one route from the command line; Kubernetes discovery keeps one per ModelPool
(spec.model.name → the pool's Ready engine pods, spec.routing → the default strategy and weights).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from headway.api.modelpool import ScorerWeights
from headway.gateway.endpoints import Endpoint
from headway.gateway.routing.custom import Router, RouterContext, RouterFactory
from headway.gateway.routing.pipeline import STRATEGIES, build_pipeline
from headway.kvcache.index import InMemoryIndex
from headway.kvcache.tokenizer import ModelTokenizer


@dataclass
class PoolRoute:
    model: str
    strategy: str
    pipelines: dict[str, Router]
    """The presets and any custom routers, by name (the x-headway-strategy header picks one)."""
    tokenizer: ModelTokenizer
    endpoints: list[Endpoint] = field(default_factory=list)
    pool: tuple[str, str] | None = None
    """(namespace, name) of the ModelPool, with Kubernetes discovery."""


def tokenizer_for(source: str | None) -> ModelTokenizer:
    """The model's own tokenizer when its files are on this machine; otherwise none, and the gateway
    asks an engine's /tokenize instead (exact tokens, one extra round trip)."""
    if source and Path(source).is_dir() and (Path(source) / "tokenizer.json").is_file():
        return ModelTokenizer(Path(source))
    return ModelTokenizer(None, quiet=True)


def make_route(
    model: str,
    strategy: str,
    weights: ScorerWeights,
    tokenizer: ModelTokenizer,
    *,
    index: InMemoryIndex,
    history: InMemoryIndex,
    block_sizes: dict[str, int],
    stale_after_s: float,
    load_bound: float,
    rng: random.Random | None = None,
    observe_lookup_s: Callable[[float], None] | None = None,
    custom: Mapping[str, RouterFactory] | None = None,
) -> PoolRoute:
    pipelines: dict[str, Router] = {
        s: build_pipeline(
            s,
            weights,
            index=index,
            history=history,
            block_sizes=block_sizes,
            stale_after_s=stale_after_s,
            load_bound=load_bound,
            rng=rng,
            observe_lookup_s=observe_lookup_s,
        )
        for s in STRATEGIES
    }
    if custom:
        ctx = RouterContext(index, block_sizes, stale_after_s, rng or random.Random())  # noqa: S311 - tie-breaks
        pipelines.update({name: factory(ctx) for name, factory in custom.items()})
    return PoolRoute(model, strategy, pipelines, tokenizer)
