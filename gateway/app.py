"""The gateway: OpenAI-compatible routes, the request path, and the background tasks that feed routing.

Request path: read the body once (capped), decode the routing fields once, tokenize once, pick, forward the
original bytes, stream the answer back as it arrives. Retries go to the next-ranked endpoint and only
before the first byte reaches the client; a stream cut after that ends with an error event, not a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from headway.api.modelpool import ScorerWeights
from headway.api.shape import INPUT_EDGES, OUTPUT_EDGES, le_label
from headway.gateway.auth import ApiKeys, Authenticator
from headway.gateway.config import GatewayConfig
from headway.gateway.endpoints import Endpoint, scrape_forever
from headway.gateway.errors import (
    BodyTooLarge,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    NoReadyEndpoint,
    Overloaded,
    UpstreamFailed,
)
from headway.gateway.metrics import GatewayMetrics
from headway.gateway.openai import ChatFields, GeneratedTokens, parse_routing_fields, prompt_texts
from headway.gateway.pools import PoolRoute, make_route, tokenizer_for
from headway.gateway.routing.custom import Router, parse_router_specs
from headway.gateway.routing.pipeline import STRATEGIES, Decision
from headway.gateway.routing.plugins import DEFAULT_BLOCK_SIZE
from headway.gateway.routing.types import RoutingRequest
from headway.kvcache.index import InMemoryIndex
from headway.kvcache.metrics import KvCacheMetrics
from headway.kvcache.redis_index import RedisLookup, RedisMirror
from headway.kvcache.subscriber import KvEventIngest, subscribe
from headway.kvcache.tokenizer import ChatTemplateError, ModelTokenizer

log = logging.getLogger(__name__)
STRATEGY_HEADER = "x-headway-strategy"
DEBUG_HEADER = "x-headway-debug"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "server", "date"}
_HISTORY_TTL_S = 120.0


class _Unreachable(NoReadyEndpoint):
    """Every endpoint tried refused the connection or timed out before answering."""


class Gateway:
    def __init__(self, cfg: GatewayConfig, *, rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.rng = rng
        self.registry = CollectorRegistry(auto_describe=True)
        self.metrics = GatewayMetrics(self.registry)
        self.index = InMemoryIndex()
        self.history = InMemoryIndex()
        self.ingest = KvEventIngest(self.index, KvCacheMetrics(self.registry), replay_port=cfg.kv_replay_port)
        self.routes: dict[str, PoolRoute] = {}
        self.custom_routers = parse_router_specs(cfg.routers, STRATEGIES)
        self.mirror: RedisMirror | None = None
        self.shared: RedisLookup | None = None
        if cfg.redis_url:
            self.mirror = RedisMirror(cfg.redis_url, self.registry)
            self.mirror.index = self.index
            self.index.listener = self.mirror
            self.shared = RedisLookup(cfg.redis_url)
        if cfg.discovery == "static":
            assert cfg.model is not None
            route = self.new_route(cfg.model, cfg.strategy, cfg.weights, tokenizer_for(cfg.tokenizer))
            route.endpoints = [Endpoint(u.rstrip("/")) for u in cfg.endpoints]
            if cfg.tokenizer and not route.tokenizer.exact:
                raise ValueError(f"--tokenizer {cfg.tokenizer}: no tokenizer.json there")
            self.routes[cfg.model] = route
        self.auth = Authenticator(ApiKeys.load(Path(cfg.api_keys_file)), cfg.redis_url) if cfg.api_keys_file else None
        self.in_flight = 0
        self.session: aiohttp.ClientSession | None = None

    def new_route(self, model: str, strategy: str, weights: ScorerWeights, tokenizer: ModelTokenizer) -> PoolRoute:
        return make_route(
            model,
            strategy,
            weights,
            tokenizer,
            index=self.index,
            history=self.history,
            block_sizes=self.ingest.block_sizes,
            stale_after_s=self.cfg.stale_after_s,
            load_bound=self.cfg.load_bound,
            rng=self.rng,
            observe_lookup_s=self.ingest.metrics.lookup.observe,
            custom=self.custom_routers,
        )

    def all_endpoints(self) -> list[Endpoint]:
        return [e for r in list(self.routes.values()) for e in r.endpoints]

    # ----- wiring
    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.max_body_bytes, middlewares=[self._errors])
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_endpoint)
        app.cleanup_ctx.append(self._background)
        return app

    async def _background(self, _app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=30)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        tasks = [asyncio.create_task(scrape_forever(self.all_endpoints, self.session, self.cfg.scrape_interval_s))]
        if self.mirror is not None:
            tasks.append(asyncio.create_task(self.mirror.run()))
        if self.shared is not None:
            tasks.append(asyncio.create_task(self.shared.warm()))
        if self.cfg.discovery == "kubernetes":
            from headway.gateway.discovery import KubernetesDiscovery

            tasks.append(asyncio.create_task(KubernetesDiscovery(self, self.cfg.namespaces).run()))
        if self.cfg.kv_events_bind:
            tasks.append(asyncio.create_task(subscribe(self.cfg.kv_events_bind, self.ingest)))
        yield
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self.shared is not None:
            await self.shared.close()
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
        data = [{"id": m, "object": "model", "owned_by": "headway"} for m in sorted(self.routes)]
        return web.json_response({"object": "list", "data": data})

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics_endpoint(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # ----- the request path
    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._proxy(request, chat=False)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._proxy(request, chat=True)

    async def _read_body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > self.cfg.max_body_bytes:
            raise BodyTooLarge(f"request body over {self.cfg.max_body_bytes} bytes", "body")
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise BodyTooLarge(f"request body over {self.cfg.max_body_bytes} bytes", "body") from None

    async def _tokens(self, route: PoolRoute, fields: Any) -> list[int]:
        """Exact prompt tokens: the model's tokenizer and chat template, else the engine's /tokenize."""
        if isinstance(fields, ChatFields):
            messages = [{"role": m.role, "content": m.content} for m in fields.messages]
            if not route.tokenizer.exact:
                return await self._engine_tokens(route, {"model": route.model, "messages": messages})
            try:
                return route.tokenizer.encode_chat(messages)
            except ChatTemplateError as e:
                raise InvalidRequest(str(e), "messages") from None
        prompt = fields.prompt
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]
        if isinstance(prompt, str):
            if not route.tokenizer.exact:
                return await self._engine_tokens(route, {"model": route.model, "prompt": prompt})
            return route.tokenizer.encode(prompt)
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            return list(prompt)
        if prompt is None:
            raise InvalidRequest("prompt is required", "prompt")
        if isinstance(prompt, list) and all(isinstance(p, (str, list)) for p in prompt):
            return []  # a batch of prompts: routed without prefix information, validated by the engine
        raise InvalidRequest("prompt must be a string, token ids, or a list of those", "prompt")

    async def _engine_tokens(self, route: PoolRoute, body: dict[str, Any]) -> list[int]:
        """Ask a fresh engine to tokenize (no tokenizer file here); no prefix routing if none can."""
        assert self.session is not None
        now = time.monotonic()
        for ep in [e for e in route.endpoints if e.routable(now, self.cfg.stale_after_s)][:2]:
            try:
                async with self.session.post(
                    f"{ep.url}/tokenize", json=body, timeout=aiohttp.ClientTimeout(total=5)
                ) as r:
                    if r.status == 200:
                        return list((await r.json())["tokens"])
                    if r.status == 400:
                        raise InvalidRequest((await r.json()).get("error", {}).get("message", "invalid request"))
            except (aiohttp.ClientError, TimeoutError, KeyError, ValueError):
                continue
        return []

    def _strategy(self, request: web.Request, route: PoolRoute) -> str:
        strategy = request.headers.get(STRATEGY_HEADER, route.strategy)
        if strategy not in route.pipelines:
            raise InvalidRequest(
                f"unknown routing strategy {strategy!r}; known: {', '.join(route.pipelines)}", STRATEGY_HEADER
            )
        return strategy

    def _keys_for(self, rr: RoutingRequest, ep: Endpoint) -> list[int]:
        return rr.keys(self.ingest.block_sizes.get(ep.id) or ep.block_size or DEFAULT_BLOCK_SIZE)

    def _speculate(self, rr: RoutingRequest, ep: Endpoint, router: Router) -> None:
        """Called at the first body byte: the engine has computed the prompt's blocks by then, and its
        events may still be in flight. Not at routing time: requests arriving together would all be sent
        after a prefix that no engine holds yet, and pile onto one engine for nothing."""
        if self.cfg.speculative_ttl_s and getattr(router, "speculative", True):
            self.index.speculate(ep.id, self._keys_for(rr, ep), self.cfg.speculative_ttl_s)

    async def _proxy(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        t0 = time.perf_counter()
        key = self.auth.authenticate(request.headers.get("Authorization")) if self.auth else None
        body = await self._read_body(request)
        fields = parse_routing_fields(body, chat=chat)
        route = self.routes.get(fields.model)
        if route is None:
            raise ModelNotFound(f"The model `{fields.model}` does not exist.", "model")
        strategy = self._strategy(request, route)
        if self.in_flight >= self.cfg.max_in_flight:
            raise Overloaded(f"{self.in_flight} requests in flight; retry shortly")
        rr = RoutingRequest(fields.model, await self._tokens(route, fields), *prompt_texts(fields))
        if key is not None and self.auth is not None:
            await self.auth.charge(key, len(rr.tokens) + (fields.max_tokens or 16))
        code = 502
        try:
            resp = await self._route_and_forward(request, body, rr, route, strategy, stream=bool(fields.stream), t0=t0)
            code = resp.status
            return resp
        except GatewayError as e:
            code = e.status
            raise
        finally:
            self.metrics.requests.labels(strategy, str(code)).inc()
            self.metrics.duration.labels(strategy).observe(time.perf_counter() - t0)

    async def _route_and_forward(
        self,
        request: web.Request,
        body: bytes,
        rr: RoutingRequest,
        route: PoolRoute,
        strategy: str,
        *,
        stream: bool,
        t0: float,
    ) -> web.StreamResponse:
        """Pick and forward; when no endpoint can take the request (none ready, all stale, ejected or
        unreachable, or a pool at zero) wait for one up to `hold_s`, then answer 503 with Retry-After.
        Holding is how a request survives an engine restart or a scale-up from zero."""
        deadline = time.monotonic() + self.cfg.hold_s
        held, reason = False, "no ready endpoint"
        while True:
            if self.shared is not None and strategy == "kv-aware":
                await self._read_shared(rr, route)
            router = route.pipelines[strategy]
            decision = router.decide(rr, route.endpoints)
            if not held:
                self.metrics.routing.labels(strategy).observe(time.perf_counter() - t0)
            if decision.ranked:
                try:
                    return await self._forward(request, body, rr, router, decision, strategy, stream=stream)
                except _Unreachable as e:
                    reason = str(e)
            if time.monotonic() >= deadline:
                raise NoReadyEndpoint(f"{reason} for model {rr.model} after waiting {self.cfg.hold_s:.0f}s")
            if not held:
                held = True
                self.metrics.held.labels(rr.model).inc()
            await asyncio.sleep(0.1)

    def _count_shape(self, rr: RoutingRequest, status: int, generated: GeneratedTokens) -> None:
        out = generated.total() if status == 200 else None
        if out is not None:
            self.metrics.shapes.labels(
                rr.model, le_label(len(rr.tokens), INPUT_EDGES), le_label(out, OUTPUT_EDGES)
            ).inc()

    async def _read_shared(self, rr: RoutingRequest, route: PoolRoute) -> None:
        """Cached prefixes other replicas know of, read from Redis before scoring (skipped if it is down)."""
        assert self.shared is not None
        by_size: dict[int, list[str]] = {}
        for ep in route.endpoints:
            by_size.setdefault(self.ingest.block_sizes.get(ep.id) or ep.block_size or DEFAULT_BLOCK_SIZE, []).append(
                ep.id
            )
        for size, pods in by_size.items():
            matched = await self.shared.longest_prefix(rr.keys(size), pods)
            if matched is not None:
                rr.shared_matches[size] = matched

    async def _forward(
        self,
        request: web.Request,
        body: bytes,
        rr: RoutingRequest,
        router: Router,
        decision: Decision,
        strategy: str,
        *,
        stream: bool,
    ) -> web.StreamResponse:
        assert self.session is not None
        t = self.cfg.timeouts
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.connect_s, sock_read=max(t.first_byte_s, t.idle_s))
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        last_error, answered = "no endpoint tried", False
        for attempt, ep in enumerate(decision.ranked[: 1 + self.cfg.max_retries]):
            if attempt:
                self.metrics.retries.labels("upstream").inc()
            try:
                upstream = await self.session.post(
                    f"{ep.url}{request.path}", data=body, headers=headers, timeout=timeout
                )
            except (aiohttp.ClientConnectionError, TimeoutError) as e:
                ep.eject(time.monotonic())
                last_error = f"{ep.id}: {type(e).__name__}"
                continue
            if upstream.status >= 500:
                answered = True
                last_error = f"{ep.id}: HTTP {upstream.status}"
                upstream.release()
                ep.eject(time.monotonic())
                continue
            return await self._relay(request, upstream, rr, ep, router, decision, strategy, stream=stream)
        if answered:
            raise UpstreamFailed(f"every endpoint tried failed before answering ({last_error})")
        raise _Unreachable(f"no endpoint reachable ({last_error})")

    async def _relay(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        rr: RoutingRequest,
        ep: Endpoint,
        router: Router,
        decision: Decision,
        strategy: str,
        *,
        stream: bool,
    ) -> web.StreamResponse:
        matched = (decision.scores.get(ep.id) or {}).get("prefix", 0.0)
        self.metrics.picks.labels(strategy, "yes" if matched > 0 else "no").inc()
        self.history.speculate(ep.id, self._keys_for(rr, ep), _HISTORY_TTL_S)  # routing history: approx-prefix
        if (routed := getattr(router, "routed", None)) is not None:
            routed(rr, ep)
        if self.cfg.pending_ttl_s and getattr(router, "speculative", True):
            self.index.speculate(ep.id, self._keys_for(rr, ep), self.cfg.pending_ttl_s)
        ep.in_flight += 1
        self.in_flight += 1
        self.metrics.in_flight.labels(rr.model).inc()
        backlog = rr.uncached_tokens(ep.id)
        ep.prefill_backlog += backlog
        try:
            resp = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP},
            )
            if request.headers.get(DEBUG_HEADER):
                resp.headers["x-headway-endpoint"] = ep.id
                resp.headers["x-headway-scores"] = json.dumps(decision.scores.get(ep.id, {}), separators=(",", ":"))
            await resp.prepare(request)
            generated = GeneratedTokens(stream=stream, chat=request.path.endswith("/chat/completions"))
            try:
                first = True
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
                    generated.feed(chunk)
                    if first:
                        self._speculate(rr, ep, router)
                        ep.prefill_backlog -= backlog
                        backlog, first = 0, False
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as e:
                ep.eject(time.monotonic())
                if stream:
                    err = UpstreamFailed(f"the engine {ep.id} failed mid-stream: {type(e).__name__}")
                    await resp.write(b"data: " + err.body() + b"\n\ndata: [DONE]\n\n")
                else:
                    raise
            else:
                self._count_shape(rr, upstream.status, generated)
            await resp.write_eof()
            return resp
        finally:
            upstream.release()
            ep.prefill_backlog -= backlog
            ep.in_flight -= 1
            self.in_flight -= 1
            self.metrics.in_flight.labels(rr.model).dec()
