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
from headway.gateway.openai import ChatFields, parse_routing_fields
from headway.gateway.routing.pipeline import STRATEGIES, Decision, build_pipeline
from headway.gateway.routing.plugins import DEFAULT_BLOCK_SIZE
from headway.gateway.routing.types import RoutingRequest
from headway.kvcache.index import InMemoryIndex
from headway.kvcache.metrics import KvCacheMetrics
from headway.kvcache.subscriber import KvEventIngest, subscribe
from headway.kvcache.tokenizer import ChatTemplateError, ModelTokenizer

log = logging.getLogger(__name__)
STRATEGY_HEADER = "x-headway-strategy"
DEBUG_HEADER = "x-headway-debug"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "server", "date"}
_HISTORY_TTL_S = 120.0


class Gateway:
    def __init__(self, cfg: GatewayConfig, *, rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.endpoints = [Endpoint(u.rstrip("/")) for u in cfg.endpoints]
        self.tokenizer = ModelTokenizer(Path(cfg.tokenizer) if cfg.tokenizer else None)
        self.registry = CollectorRegistry(auto_describe=True)
        self.metrics = GatewayMetrics(self.registry)
        self.index = InMemoryIndex()
        self.history = InMemoryIndex()
        self.ingest = KvEventIngest(self.index, KvCacheMetrics(self.registry))
        self.pipelines = {
            s: build_pipeline(
                s,
                cfg.weights,
                index=self.index,
                history=self.history,
                block_sizes=self.ingest.block_sizes,
                stale_after_s=cfg.stale_after_s,
                load_bound=cfg.load_bound,
                rng=rng,
            )
            for s in STRATEGIES
        }
        self.in_flight = 0
        self.session: aiohttp.ClientSession | None = None

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
        tasks = [asyncio.create_task(scrape_forever(self.endpoints, self.session, self.cfg.scrape_interval_s))]
        if self.cfg.kv_events_bind:
            tasks.append(asyncio.create_task(subscribe(self.cfg.kv_events_bind, self.ingest)))
        yield
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.session.close()

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except GatewayError as e:
            headers = {"Retry-After": "1"} if e.status in (429, 503) else {}
            return web.Response(status=e.status, body=e.body(), content_type="application/json", headers=headers)

    # ----- small routes
    async def models(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": self.cfg.model, "object": "model", "owned_by": "headway"}]}
        )

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

    def _tokens(self, fields: Any) -> list[int]:
        if isinstance(fields, ChatFields):
            try:
                return self.tokenizer.encode_chat([{"role": m.role, "content": m.content} for m in fields.messages])
            except ChatTemplateError as e:
                raise InvalidRequest(str(e), "messages") from None
        prompt = fields.prompt
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt)
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            return list(prompt)
        if prompt is None:
            raise InvalidRequest("prompt is required", "prompt")
        return []  # batched prompts: routed without prefix information, validated by the engine

    def _strategy(self, request: web.Request) -> str:
        strategy = request.headers.get(STRATEGY_HEADER, self.cfg.strategy)
        if strategy not in self.pipelines:
            raise InvalidRequest(
                f"unknown routing strategy {strategy!r}; known: {', '.join(STRATEGIES)}", STRATEGY_HEADER
            )
        return strategy

    def _keys_for(self, rr: RoutingRequest, ep: Endpoint) -> list[int]:
        return rr.keys(self.ingest.block_sizes.get(ep.id) or ep.block_size or DEFAULT_BLOCK_SIZE)

    def _speculate(self, rr: RoutingRequest, ep: Endpoint) -> None:
        """Called at the first body byte: the engine has computed the prompt's blocks by then, and its
        events may still be in flight. Not at routing time: requests arriving together would all be sent
        after a prefix that no engine holds yet, and pile onto one engine for nothing."""
        if self.cfg.speculative_ttl_s:
            self.index.speculate(ep.id, self._keys_for(rr, ep), self.cfg.speculative_ttl_s)

    async def _proxy(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        t0 = time.perf_counter()
        body = await self._read_body(request)
        fields = parse_routing_fields(body, chat=chat)
        if fields.model != self.cfg.model:
            raise ModelNotFound(f"The model `{fields.model}` does not exist.", "model")
        strategy = self._strategy(request)
        if self.in_flight >= self.cfg.max_in_flight:
            raise Overloaded(f"{self.in_flight} requests in flight; retry shortly")
        rr = RoutingRequest(fields.model, self._tokens(fields))
        decision = self.pipelines[strategy].decide(rr, self.endpoints)
        self.metrics.routing.labels(strategy).observe(time.perf_counter() - t0)
        if not decision.ranked:
            raise NoReadyEndpoint(f"no ready endpoint for model {fields.model}")
        code = 502
        try:
            resp = await self._forward(request, body, rr, decision, strategy, stream=bool(fields.stream))
            code = resp.status
            return resp
        finally:
            self.metrics.requests.labels(strategy, str(code)).inc()
            self.metrics.duration.labels(strategy).observe(time.perf_counter() - t0)

    async def _forward(
        self, request: web.Request, body: bytes, rr: RoutingRequest, decision: Decision, strategy: str, *, stream: bool
    ) -> web.StreamResponse:
        assert self.session is not None
        t = self.cfg.timeouts
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.connect_s, sock_read=max(t.first_byte_s, t.idle_s))
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        last_error = "no endpoint tried"
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
                last_error = f"{ep.id}: HTTP {upstream.status}"
                upstream.release()
                ep.eject(time.monotonic())
                continue
            return await self._relay(request, upstream, rr, ep, decision, strategy, stream=stream)
        raise UpstreamFailed(f"every endpoint tried failed before answering ({last_error})")

    async def _relay(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        rr: RoutingRequest,
        ep: Endpoint,
        decision: Decision,
        strategy: str,
        *,
        stream: bool,
    ) -> web.StreamResponse:
        matched = (decision.scores.get(ep.id) or {}).get("prefix", 0.0)
        self.metrics.picks.labels(strategy, "yes" if matched > 0 else "no").inc()
        self.history.speculate(ep.id, self._keys_for(rr, ep), _HISTORY_TTL_S)  # routing history: approx-prefix
        ep.in_flight += 1
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        try:
            resp = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP},
            )
            if request.headers.get(DEBUG_HEADER):
                resp.headers["x-headway-endpoint"] = ep.id
                resp.headers["x-headway-scores"] = json.dumps(decision.scores.get(ep.id, {}), separators=(",", ":"))
            await resp.prepare(request)
            try:
                first = True
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
                    if first:
                        self._speculate(rr, ep)
                        first = False
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as e:
                ep.eject(time.monotonic())
                if stream:
                    err = UpstreamFailed(f"the engine {ep.id} failed mid-stream: {type(e).__name__}")
                    await resp.write(b"data: " + err.body() + b"\n\ndata: [DONE]\n\n")
                else:
                    raise
            await resp.write_eof()
            return resp
        finally:
            upstream.release()
            ep.in_flight -= 1
            self.in_flight -= 1
            self.metrics.in_flight.set(self.in_flight)
