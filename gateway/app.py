"""The gateway: aiohttp wiring, the request handler that ties the stages together, and the background
tasks that feed routing.

A request: admission slot → read the body once (capped) → decode the routing fields once → route and
router → exact prompt tokens → [hold while no endpoint can take it] → decide → forward the original
bytes → relay the answer as it arrives (gateway/proxy.py). Where each stage lives:
admission.py, openai.py, pools.py, tokens.py, routing/ (pipeline, registry, profiles, one file per
plugin), proxy.py.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from headway.api.aio import cancel_and_wait
from headway.api.modelpool import Routing
from headway.gateway.admission import Admission
from headway.gateway.auth import ApiKey, ApiKeys, Authenticator
from headway.gateway.config import GatewayConfig
from headway.gateway.context import RequestContext
from headway.gateway.dispatch import Dispatch
from headway.gateway.endpoints import Endpoint, scrape_forever
from headway.gateway.errors import (
    BodyTooLarge,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    NoReadyEndpoint,
    RouteRejected,
)
from headway.gateway.metrics import GatewayMetrics
from headway.gateway.modelrouting.router import PoolState
from headway.gateway.modelrouting.table import ModelRouteEntry, ModelRouteTable
from headway.gateway.openai import (
    ChatFields,
    CompletionFields,
    field_of,
    last_user_text,
    parse_routing_fields,
    prompt_texts,
)
from headway.gateway.pools import STRATEGY_HEADER, EndpointInfo, PoolInfo, PoolRoute, RouteTable
from headway.gateway.proxy import CLIENT_GONE, Proxy
from headway.gateway.routing.blocks import BlockSizes
from headway.gateway.routing.custom import RouterContext, parse_router_specs
from headway.gateway.routing.pipeline import build_router
from headway.gateway.routing.profiles import PRESETS, preset
from headway.gateway.routing.types import Router, RoutingRequest
from headway.gateway.tokens import PromptTokens
from headway.gateway.workers import HubLink
from headway.kvcache.index import InMemoryIndex
from headway.kvcache.metrics import KvCacheMetrics
from headway.kvcache.redis_index import RedisLookup, RedisMirror
from headway.kvcache.subscriber import KvEventIngest, subscribe

if TYPE_CHECKING:
    from headway.gateway.discovery import KubernetesDiscovery

log = logging.getLogger(__name__)


def read_endpoints_file(path: Path) -> tuple[str, ...]:
    """Engine base URLs, one per line; blank lines and `#` comments skipped. A line that is not an
    http(s) URL fails naming the file and line."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        url = line.split("#", 1)[0].strip()
        if not url:
            continue
        if not url.startswith(("http://", "https://")) or len(url.split("//", 1)[1]) == 0:
            raise ValueError(f"{path}:{n}: not an engine URL: {url!r}")
        out.append(url)
    return tuple(out)


def _stamp(path: Path) -> tuple[float, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime, st.st_size)


class Feedback(msgspec.Struct, frozen=True):
    id: str
    reward: float


_FEEDBACK = msgspec.json.Decoder(Feedback)


@dataclass(frozen=True, slots=True)
class Routed:
    """A model route's choice, as the request path needs it."""

    entry: ModelRouteEntry
    route: PoolRoute
    requested: str
    fields: CompletionFields | ChatFields
    """The routing fields with the chosen pool's served model."""
    headers: dict[str, str]
    tokens: list[int] | None
    """The prompt's tokens when they were counted with the chosen pool's tokenizer."""

    def body(self, original: bytes) -> bytes:
        """The request with `model` set to the chosen pool's served model (engines refuse other names)."""
        data = msgspec.json.decode(original)
        data["model"] = self.fields.model
        return msgspec.json.encode(data)


SERVE_OPTIONS: dict[str, Any] = {"handler_cancellation": True, "access_log": None}
"""How the gateway's app is served: a client that hangs up cancels its handler at once, which releases
the upstream request (aborting it in the engine) and the admission slot, even while the engine is still
silent (queueing, prefill)."""


class Gateway:
    def __init__(self, cfg: GatewayConfig, *, rng: random.Random | None = None, hub: HubLink | None = None) -> None:
        """`hub`: this is one of several worker processes; the hub feeds its index and mirrors to Redis
        (gateway/workers.py)."""
        self.cfg = cfg
        self.registry = CollectorRegistry(auto_describe=True)
        self.metrics = GatewayMetrics(self.registry)
        self.index = InMemoryIndex()
        self.history = InMemoryIndex()
        self.ingest = KvEventIngest(self.index, KvCacheMetrics(self.registry), replay_port=cfg.kv_replay_port)
        self.block_sizes = BlockSizes(self.ingest.block_sizes)
        self.hub = hub
        self.mirror: RedisMirror | None = None
        shared = None
        if cfg.redis_url:
            counted = {r: self.metrics.shared_lookups.labels(r) for r in ("ok", "timeout", "down")}
            shared = RedisLookup(cfg.redis_url, outcome=lambda r: counted[r].inc())  # per lookup: children bound once
        if hub is not None:
            self.index.listener = hub.sender
        elif cfg.redis_url:
            self.mirror = RedisMirror(cfg.redis_url, self.registry)
            self.mirror.index = self.index
            self.index.listener = self.mirror
        self.deps = RouterContext(
            index=self.index,
            history=self.history,
            block_sizes=self.block_sizes,
            stale_after_s=cfg.stale_after_s,
            load_bound=cfg.load_bound,
            rng=rng or random.Random(),  # noqa: S311 - tie-breaking, not secrets
            shared=shared,
            observe_lookup_s=self.ingest.metrics.lookup.observe,
        )
        self.custom_routers = parse_router_specs(cfg.routers, (*PRESETS, *cfg.profiles))
        self.routes = RouteTable(self.build_routers, on_endpoint_gone=lambda e: self.ingest.forget_pod(e.id))
        self.model_routes = ModelRouteTable()
        self.admission = Admission(cfg.max_in_flight, cfg.hold_s, self.metrics)
        self.tokens = PromptTokens(stale_after_s=cfg.stale_after_s, tokenize_s=cfg.timeouts.tokenize_s)
        self.dispatch = Dispatch(
            cfg, self.metrics, index=self.index, history=self.history, block_sizes=self.block_sizes
        )
        self.proxy = Proxy(cfg, self.metrics, self.dispatch)
        self.auth = Authenticator(ApiKeys.load(Path(cfg.api_keys_file)), cfg.redis_url) if cfg.api_keys_file else None
        self.session: aiohttp.ClientSession | None = None
        self.discovery: KubernetesDiscovery | None = None
        self._endpoints_file_seen: tuple[float, int] | None = None
        if cfg.discovery == "static":
            listed = read_endpoints_file(Path(cfg.endpoints_file)) if cfg.endpoints_file else ()
            if cfg.endpoints_file:
                self._endpoints_file_seen = _stamp(Path(cfg.endpoints_file))
            route = self._apply_static(listed)
            if cfg.tokenizer and not route.tokenizer.exact:
                raise ValueError(f"--tokenizer {cfg.tokenizer}: no tokenizer.json there")

    def _apply_static(self, listed: tuple[str, ...]) -> PoolRoute:
        """The static route over --endpoint and the endpoints file's URLs (each once, in that order)."""
        assert self.cfg.model is not None
        urls = dict.fromkeys(u.rstrip("/") for u in (*self.cfg.endpoints, *listed))
        return self.routes.apply(
            PoolInfo(
                ("", self.cfg.model),
                self.cfg.model,
                Routing(strategy="kv-aware", weights=self.cfg.weights),
                self.cfg.tokenizer,
                tuple(EndpointInfo(u) for u in urls),
                strategy=self.cfg.strategy,
            )
        )

    async def follow_endpoints_file(self, path: Path, interval_s: float = 1.0) -> None:
        """Re-read the endpoints file when it changes. A file that cannot be read or holds a bad line keeps
        the last good list (logged), so a half-written edit never empties the route."""
        while True:
            await asyncio.sleep(interval_s)
            stamp = _stamp(path)
            if stamp == self._endpoints_file_seen:
                continue
            self._endpoints_file_seen = stamp
            try:
                listed = read_endpoints_file(path)
            except (OSError, ValueError) as e:
                log.warning("endpoints file: %s; keeping the current endpoints", e)
                continue
            if not listed and not self.cfg.endpoints:
                log.warning("endpoints file %s lists no endpoint; keeping the current ones", path)
                continue
            route = self._apply_static(listed)
            log.info("endpoints file %s: now %d endpoints", path, len(route.endpoints))

    def build_routers(self, routing: Routing) -> Mapping[str, Router]:
        """Every router a pool offers: the presets under its weights, the configured profiles, and the
        custom routers — all built through the one plugin registry."""
        routers: dict[str, Router] = {s: build_router(s, preset(s, routing.weights), self.deps) for s in PRESETS}
        routers.update({name: build_router(name, p, self.deps) for name, p in self.cfg.profiles.items()})
        routers.update({name: factory(self.deps) for name, factory in self.custom_routers.items()})
        return routers

    def ready(self) -> bool:
        """Routes are known: static ones at once; discovered ones once every watch has listed."""
        return self.cfg.discovery == "static" or (self.discovery is not None and self.discovery.synced.is_set())

    def all_endpoints(self) -> list[Endpoint]:
        return self.routes.endpoints()

    # ----- wiring
    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.max_body_bytes, middlewares=[self._errors])
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/feedback", self.feedback)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics_endpoint)
        app.cleanup_ctx.append(self._background)
        return app

    async def _background(self, _app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=30)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        self.proxy.session = self.tokens.session = self.session
        tasks = [asyncio.create_task(scrape_forever(self.all_endpoints, self.session, self.cfg.scrape_interval_s))]
        if self.mirror is not None:
            tasks.append(asyncio.create_task(self.mirror.run()))
        if self.deps.shared is not None:
            tasks.append(asyncio.create_task(self.deps.shared.warm()))
        if self.cfg.discovery == "kubernetes":
            from headway.gateway.discovery import KubernetesDiscovery

            self.discovery = KubernetesDiscovery(self.routes, self.cfg.namespaces, model_routes=self.model_routes)
            tasks.append(asyncio.create_task(self.discovery.run()))
            if self.cfg.route_status_interval_s:
                from headway.gateway.discovery import api_client
                from headway.gateway.modelrouting.status import replica_name, write_statuses

                api = await asyncio.to_thread(api_client)
                interval = self.cfg.route_status_interval_s
                tasks.append(asyncio.create_task(write_statuses(self.model_routes, api, replica_name(), interval)))
        if self.cfg.discovery == "static" and self.cfg.endpoints_file:
            tasks.append(asyncio.create_task(self.follow_endpoints_file(Path(self.cfg.endpoints_file))))
        if self.hub is not None:
            tasks.append(asyncio.create_task(self.hub.follow(self.index, self.ingest.block_sizes)))
        elif self.cfg.kv_events_bind:
            tasks.append(asyncio.create_task(subscribe(self.cfg.kv_events_bind, self.ingest)))
        yield
        await cancel_and_wait(tasks)
        if self.deps.shared is not None:
            await self.deps.shared.close()
        await self.session.close()

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except GatewayError as e:
            retry = getattr(e, "retry_after_s", 1)
            headers = {"Retry-After": str(retry)} if e.status in (429, 503) else {}
            return web.Response(status=e.status, body=e.body(), content_type="application/json", headers=headers)

    # ----- small routes
    async def models(self, _request: web.Request) -> web.Response:
        names = {*self.routes.routes, *self.model_routes.by_model}
        data = [{"id": m, "object": "model", "owned_by": "headway"} for m in sorted(names)]
        return web.json_response({"object": "list", "data": data})

    async def healthz(self, _request: web.Request) -> web.Response:
        """Liveness: the process serves."""
        return web.json_response({"status": "ok"})

    async def readyz(self, _request: web.Request) -> web.Response:
        """Readiness: the routes are known (discovery has listed every watch), so a model that exists is
        never answered 404 by a gateway that just started."""
        if self.ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "starting", "reason": "discovery has not listed yet"}, status=503)

    async def metrics_endpoint(self, _request: web.Request) -> web.Response:
        registry = self.registry
        if self.hub is not None:  # every worker's and the hub's values, from prometheus_client's files
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # ----- the request path
    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, chat=False)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, chat=True)

    async def _handle(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        started = time.perf_counter()
        key = self.auth.authenticate(request.headers.get("Authorization")) if self.auth else None
        with self.admission.slot():
            body = await self._read_body(request)
            ctx = await self.context(body, request.headers, started, chat=chat, key=key, request=request)
            code = 502
            try:
                resp = await self.admission.hold(ctx, self.proxy.attempt)
                code = ctx.outcome or resp.status
                return resp
            except GatewayError as e:
                code = e.status
                raise
            except asyncio.CancelledError:  # the client hung up (SERVE_OPTIONS: handler_cancellation)
                code = CLIENT_GONE
                raise
            finally:
                self.metrics.requests.labels(ctx.router_name, str(code)).inc()
                self.metrics.duration.labels(ctx.router_name).observe(time.perf_counter() - started)

    async def context(
        self,
        body: bytes,
        headers: Mapping[str, str],
        started: float,
        *,
        chat: bool,
        key: ApiKey | None = None,
        request: web.Request | None = None,
    ) -> RequestContext:
        """The request's context, from its body to its exact prompt tokens, whichever front end it came
        through: its routing fields, its model's route, the router it asked for (x-headway-strategy) and
        its tokens, with its key charged for them. GatewayError for what the client must fix."""
        fields = parse_routing_fields(body, chat=chat)
        route = self.routes.get(fields.model)
        routed: Routed | None = None
        if route is None and not self.ready():
            route = await self._after_discovery(fields.model)
        if route is None:
            entry = self.model_routes.get(fields.model)
            if entry is None:
                raise ModelNotFound(f"The model `{fields.model}` does not exist.", "model")
            routed = await self.route_model(entry, fields)
            route, body, fields = routed.route, routed.body(body), routed.fields
        name, router = route.router_for(headers.get(STRATEGY_HEADER))
        ctx = RequestContext(request, body, fields, route, name, router, started)
        tokens = routed.tokens if routed is not None and routed.tokens is not None else None
        ctx.routing = RoutingRequest(
            fields.model, tokens if tokens is not None else await self.tokens.of(route, fields), *prompt_texts(fields)
        )
        if routed is not None:
            ctx.model_route, ctx.requested_model = routed.entry.name, routed.requested
            ctx.response_headers = routed.headers
        if key is not None and self.auth is not None:
            await self.auth.charge(key, len(ctx.routing.tokens) + (fields.max_tokens or 16))
        return ctx

    async def _after_discovery(self, model: str) -> PoolRoute | None:
        """A model unknown while discovery has not listed yet (a gateway just started or restarted) may
        well exist: wait for the listing, up to `hold_s`, rather than answer 404 for a model that serves."""
        assert self.discovery is not None
        try:
            async with asyncio.timeout(self.cfg.hold_s):
                await self.discovery.synced.wait()
        except TimeoutError:
            raise NoReadyEndpoint(
                f"the gateway has not yet listed its pools (after {self.cfg.hold_s:g}s); retry shortly"
            ) from None
        return self.routes.get(model)

    async def route_model(self, entry: ModelRouteEntry, fields: CompletionFields | ChatFields) -> Routed:
        """Choose the pool for a request sent to a ModelRoute's virtual model: the route's decision over
        what this gateway knows of each candidate pool now. RouteRejected when a guard or rule refuses it."""
        began = time.perf_counter()
        ns = entry.key[0]
        compiled = entry.compiled
        pools = {p: self.routes.by_key((ns, p)) for p in entry.spec.pools()}
        text, _ = prompt_texts(fields)
        # the length signal in the default pool's tokens (exact: its tokenizer, or one of its engines)
        measure = pools.get(entry.spec.default_pool) or next((r for r in pools.values() if r is not None), None)
        tokens = await self.tokens.of(measure, fields) if measure is not None else None
        count = len(tokens) if tokens is not None else max(1, len(text.encode()) // 4)
        now = time.monotonic()
        states = {}
        for p, r in pools.items():
            if r is None:
                states[p] = PoolState(ready=False)
                continue
            ready = any(e.routable(now, self.cfg.stale_after_s) for e in r.endpoints)
            prices = [e.cost_per_hour_usd for e in r.endpoints if e.cost_per_hour_usd is not None]
            states[p] = PoolState(
                ready=ready,
                cost_per_1k_tokens=sum(prices) / len(prices) if prices else None,
                predicted_ttft_s=r.ttft.predict(r.endpoints, now, self.cfg.stale_after_s),
                slo_ttft_s=r.slo_ttft_s,
            )
        choice = compiled.decide(text, count, states, classify_text=last_user_text(fields))
        m = self.metrics
        m.model_route_duration.labels(entry.name).observe(time.perf_counter() - began)
        if choice.pool is None:
            by = "guard" if choice.reason == "guard" else "rule"
            m.model_route_rejections.labels(entry.name, by, choice.rule or "").inc()
            param = "messages" if isinstance(fields, ChatFields) else "prompt"
            raise RouteRejected(choice.message or "rejected by the model route", param)
        rollout = "acted" if choice.acted else entry.spec.rollout.mode
        m.model_route_decisions.labels(entry.name, choice.pool, choice.rule or "", choice.reason, rollout).inc()
        target = pools.get(choice.pool)
        if target is None:
            raise NoReadyEndpoint(f"ModelRoute {entry.name} chose ModelPool {choice.pool}, which serves nothing yet")
        request_id = uuid.uuid4().hex
        if choice.acted and choice.context is not None and entry.spec.learning.enabled:
            self.model_routes.remember(request_id, entry, choice.pool, choice.context)
        headers = {
            "x-headway-request-id": request_id,
            "x-headway-model-route": entry.name,
            "x-headway-pool": choice.pool,
            "x-headway-served-model": target.model,
            "x-headway-route-rule": choice.rule or "",
            "x-headway-route-reason": choice.reason if choice.acted else f"{choice.reason};{entry.spec.rollout.mode}",
            "x-headway-route-decided": choice.decided or "reject",
            "x-headway-route-signals": choice.signals.header(),
            "x-headway-route-scores": ";".join(f"{p}={s:.4f}" for p, s in choice.scores.items()),
        }
        # the length signal's tokens serve the chosen pool too when it tokenizes with the same files
        same = tokens is not None and (
            target is measure
            or (
                target.tokenizer_source is not None
                and target.tokenizer_source == getattr(measure, "tokenizer_source", None)
            )
        )
        served = msgspec.structs.replace(fields, model=target.model)
        return Routed(entry, target, fields.model, served, headers, tokens if same else None)

    async def feedback(self, request: web.Request) -> web.Response:
        """POST /v1/feedback {"id": <x-headway-request-id>, "reward": 0–1}: how good the answer was, for
        the route's bandit. Authenticated like completions when the gateway has API keys."""
        if self.auth is not None:
            self.auth.authenticate(request.headers.get("Authorization"))
        body = await self._read_body(request)
        try:
            fb = _FEEDBACK.decode(body)
        except msgspec.ValidationError as e:
            raise InvalidRequest(f"invalid feedback: {e}", field_of(str(e))) from None
        except (msgspec.DecodeError, UnicodeDecodeError) as e:
            raise InvalidRequest(f"feedback body is not valid JSON: {e}", "body") from None
        entry, pool = self.model_routes.feedback(fb.id, fb.reward)
        arm = entry.compiled.arms.get(pool)
        self.metrics.model_route_feedback.labels(entry.name, pool).inc()
        if arm is not None and arm.updates:
            self.metrics.model_route_reward.labels(entry.name, pool).set(arm.reward_sum / arm.updates)
        return web.json_response({"id": fb.id, "route": entry.name, "pool": pool, "reward": fb.reward})

    async def _read_body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > self.cfg.max_body_bytes:
            raise BodyTooLarge(f"request body over {self.cfg.max_body_bytes} bytes", "body")
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise BodyTooLarge(f"request body over {self.cfg.max_body_bytes} bytes", "body") from None
