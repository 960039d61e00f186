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


MAX_LOAD_LEVEL = 256


@dataclass
class TtftModel:
    """A pool's time to first token by the load a request meets: the requests this gateway has in
    flight on the endpoint when it sends one. Per load level an exponentially weighted mean of the TTFTs
    measured there, read as a non-decreasing curve (more load never answers sooner) and extended past
    the highest level seen along its last slope. This learns the knee of an engine's queueing — no
    wait while sequence slots are free, a growing one after — from the gateway's own answers, without
    knowing the engine's slots or speed. How model routing predicts whether a pool keeps its SLO."""

    smoothing: float = 0.3
    levels: dict[int, float] = field(default_factory=dict)
    observed: int = 0

    def observe(self, ttft_s: float, load: int) -> None:
        level = min(load, MAX_LOAD_LEVEL)
        old = self.levels.get(level)
        self.levels[level] = ttft_s if old is None else old + self.smoothing * (ttft_s - old)
        self.observed += 1

    def at(self, load: int) -> float | None:
        if not self.levels:
            return None
        seen = sorted(self.levels)
        envelope, top = [], 0.0
        for level in seen:
            top = max(top, self.levels[level])
            envelope.append((level, top))
        below = [(lv, v) for lv, v in envelope if lv <= load]
        if not below:
            return envelope[0][1]
        level, value = below[-1]
        if level == load or len(envelope) < 2 or level != envelope[-1][0]:
            return value
        (l0, v0), (l1, v1) = envelope[-2], envelope[-1]
        return v1 + (v1 - v0) / (l1 - l0) * (load - l1)

    def predict(self, endpoints: list[Endpoint], now: float, stale_after_s: float) -> float | None:
        """The TTFT a request sent now would get on the routable endpoint where it would come soonest:
        the curve at that endpoint's load, and at least as long as the oldest request it has not
        answered has waited so far (they are served in order). None before any answer or without a
        routable endpoint."""
        best = None
        for e in endpoints:
            if not e.routable(now, stale_after_s):
                continue
            curve = self.at(e.in_flight)
            if curve is None:
                continue
            waited = now - min(e.unanswered.values()) if e.unanswered else 0.0
            guess = max(curve, waited)
            best = guess if best is None else min(best, guess)
        return best


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
    ttft: TtftModel = field(default_factory=TtftModel)

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
