"""What the gateway routes: one PoolRoute per served model, and the table that keeps them current.

Discovery (static or Kubernetes) describes each pool as a `PoolInfo` — model, routing spec, tokenizer
source, endpoints — and hands it to `RouteTable.apply`; it never touches a route itself. The table
rebuilds a pool's routers whenever its routing spec changes (strategy *or* weights), loads a tokenizer
only when its source changes, and keeps each surviving endpoint's object (its load counters and
ejection) across updates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from headway.api.modelpool import Routing
from headway.gateway.endpoints import Endpoint
from headway.gateway.errors import InvalidRequest
from headway.gateway.routing.types import Router
from headway.kvcache.tokenizer import ModelTokenizer

PoolKey = tuple[str, str]
"""(namespace, name) of a ModelPool; ("", model) for a static route."""
STRATEGY_HEADER = "x-headway-strategy"


@dataclass(frozen=True)
class EndpointInfo:
    url: str
    variant: str | None = None
    cost_per_hour_usd: float | None = None


@dataclass(frozen=True)
class PoolInfo:
    """One pool as discovery sees it."""

    key: PoolKey
    model: str
    routing: Routing
    tokenizer: str | None
    endpoints: tuple[EndpointInfo, ...]
    strategy: str | None = None
    """A router name that overrides routing.strategy (a --profiles or --router name; static discovery)."""
    slo_ttft_s: float | None = None


@dataclass
class PrefillRate:
    """Seconds to first token per prompt token queued ahead on the endpoint (the request's own included),
    learned from this gateway's own answers: how model routing predicts a pool's TTFT from its load."""

    seconds_per_token: float | None = None
    observed: int = 0
    smoothing: float = 0.2

    def observe(self, ttft_s: float, queued_tokens: int) -> None:
        rate = ttft_s / max(1, queued_tokens)
        s = self.seconds_per_token
        self.seconds_per_token = rate if s is None else s + self.smoothing * (rate - s)
        self.observed += 1

    def predict(self, endpoints: list[Endpoint], tokens: int, now: float, stale_after_s: float) -> float | None:
        """The TTFT of a `tokens`-token prompt on the least backlogged routable endpoint; None before any
        observation or without a routable endpoint."""
        if self.seconds_per_token is None:
            return None
        backlogs = [e.prefill_backlog for e in endpoints if e.routable(now, stale_after_s)]
        return (min(backlogs) + tokens) * self.seconds_per_token if backlogs else None


@dataclass
class PoolRoute:
    model: str
    key: PoolKey
    strategy: str
    routers: Mapping[str, Router]
    """The presets, profiles and custom routers, by name (the x-headway-strategy header picks one)."""
    tokenizer: ModelTokenizer
    tokenizer_source: str | None
    routing: Routing
    endpoints: list[Endpoint] = field(default_factory=list)
    slo_ttft_s: float | None = None
    prefill: PrefillRate = field(default_factory=PrefillRate)

    def router_for(self, requested: str | None) -> tuple[str, Router]:
        name = requested or self.strategy
        router = self.routers.get(name)
        if router is None:
            raise InvalidRequest(
                f"unknown routing strategy {name!r}; known: {', '.join(self.routers)}", STRATEGY_HEADER
            )
        return name, router


def tokenizer_for(source: str | None) -> ModelTokenizer:
    """The model's own tokenizer when its files are on this machine; otherwise none, and the gateway
    asks an engine's /tokenize instead (exact tokens, one extra round trip)."""
    if source and Path(source).is_dir() and (Path(source) / "tokenizer.json").is_file():
        return ModelTokenizer(Path(source))
    return ModelTokenizer(None, quiet=True)


class RouteTable:
    def __init__(
        self,
        build_routers: Callable[[Routing], Mapping[str, Router]],
        *,
        on_endpoint_gone: Callable[[Endpoint], None] = lambda _e: None,
    ) -> None:
        self.routes: dict[str, PoolRoute] = {}
        self._models: dict[PoolKey, str] = {}
        self._build_routers = build_routers
        self._on_endpoint_gone = on_endpoint_gone

    def get(self, model: str) -> PoolRoute | None:
        return self.routes.get(model)

    def by_key(self, key: PoolKey) -> PoolRoute | None:
        model = self._models.get(key)
        route = self.routes.get(model) if model is not None else None
        return route if route is not None and route.key == key else None

    def endpoints(self) -> list[Endpoint]:
        return [e for r in list(self.routes.values()) for e in r.endpoints]

    def apply(self, info: PoolInfo) -> PoolRoute:
        old_model = self._models.get(info.key)
        if old_model is not None and old_model != info.model:
            self.remove(info.key)
        route = self.routes.get(info.model)
        if route is not None and route.key != info.key:
            self._drop_endpoints(route.endpoints)  # another pool took this model name: the newest wins
            route = None
        strategy = info.strategy or info.routing.strategy
        if route is None or route.routing != info.routing or route.strategy != strategy:
            same_source = route is not None and route.tokenizer_source == info.tokenizer
            route = PoolRoute(
                info.model,
                info.key,
                strategy,
                self._build_routers(info.routing),
                route.tokenizer if route is not None and same_source else tokenizer_for(info.tokenizer),
                info.tokenizer,
                info.routing,
                route.endpoints if route is not None else [],
            )
        elif route.tokenizer_source != info.tokenizer:
            route.tokenizer, route.tokenizer_source = tokenizer_for(info.tokenizer), info.tokenizer
        if strategy not in route.routers:
            raise ValueError(f"unknown routing strategy {strategy!r}; known: {', '.join(route.routers)}")
        self._sync_endpoints(route, info.endpoints)
        route.slo_ttft_s = info.slo_ttft_s
        self.routes[info.model] = route
        self._models[info.key] = info.model
        return route

    def remove(self, key: PoolKey) -> None:
        model = self._models.pop(key, None)
        route = self.routes.get(model) if model is not None else None
        if route is not None and route.key == key:
            del self.routes[route.model]
            self._drop_endpoints(route.endpoints)

    def _sync_endpoints(self, route: PoolRoute, wanted: tuple[EndpointInfo, ...]) -> None:
        by_url = {e.url: e for e in route.endpoints}
        kept: list[Endpoint] = []
        for info in sorted(wanted, key=lambda i: i.url):
            ep = by_url.pop(info.url, None) or Endpoint(info.url)
            ep.variant, ep.cost_per_hour_usd = info.variant, info.cost_per_hour_usd
            kept.append(ep)
        self._drop_endpoints(list(by_url.values()))
        route.endpoints = kept

    def _drop_endpoints(self, gone: list[Endpoint]) -> None:
        for e in gone:
            self._on_endpoint_gone(e)
