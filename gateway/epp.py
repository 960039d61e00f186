"""`headway gateway --mode epp`: headway's routing as a Gateway API Inference Extension Endpoint Picker.

A Gateway's Envoy asks, over `ext_proc`, where each request should go; Envoy forwards it. This is a
second front end over the gateway's request path, not a second gateway: the same admission, request
context, routes and routers (the index fed by the engines' KV events, the tokenizer, discovery) and the
same bookkeeping around each pick (gateway/dispatch.py), so a decision here is the decision headway's
proxy would make. The protocol's messages are in gateway/extproc.py.

One ext_proc stream is one HTTP request:

    request headers  → admission slot (429 at once over the limit); buffered mode: answer now
    request body     → kept until its end (413 past max_body_bytes)
    end of body      → request context → [wait for a ready endpoint] → decision → answer the headers with
                       the destination list (the best endpoint, then `fallbacks` more), then hand
                       the body back (full duplex)
    response headers → the endpoint Envoy reports it served; the status
    response body    → (only when Envoy is configured to send it) handed back chunk by chunk in full
                       duplex, let through otherwise (each direction has its own mode); its
                       generated tokens counted for the request-shape histogram the autoscaler reads
    end of stream    → the endpoint's in-flight count and the admission slot released

Errors a client must fix, and no eligible endpoint, become an immediate response with OpenAI's error JSON:
Envoy answers the client itself and the stream ends cleanly; a malformed message never kills the server.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from aiohttp import web
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from headway.gateway import extproc
from headway.gateway.app import Gateway
from headway.gateway.auth import ApiKey
from headway.gateway.context import RequestContext
from headway.gateway.dispatch import Sent
from headway.gateway.errors import BodyTooLarge, GatewayError, InvalidRequest, NoReadyEndpoint
from headway.gateway.modelrouting.rewrite import ModelNameRewriter
from headway.gateway.openai import GeneratedTokens
from headway.gateway.proxy import CLIENT_GONE, DEBUG_HEADER, debug_headers
from headway.gateway.routing.types import Decision

log = logging.getLogger(__name__)
_DUPLEX = 4  # ProcessingMode.BodySendMode.FULL_DUPLEX_STREAMED
_BUFFERED = 2  # ProcessingMode.BodySendMode.BUFFERED
_CHAT_PATHS = ("/v1/chat/completions",)
_COMPLETION_PATHS = ("/v1/completions",)


class _Stream:
    """One ext_proc stream: one HTTP request through Envoy."""

    def __init__(self, epp: EndpointPicker) -> None:
        self.epp, self.gw = epp, epp.gw
        self.started = time.perf_counter()
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.duplex = True
        """Envoy streams the request body in full duplex (and takes it back from us), per its protocol_config."""
        self.duplex_response = True
        self.slot: contextlib.ExitStack | None = None
        self.ctx: RequestContext | None = None
        self.sent: Sent | None = None
        self.status: int | None = None
        self.code: int | None = None
        """The status counted for the request: the engine's, or the immediate response's."""
        self.generated: GeneratedTokens | None = None
        self.picked = False
        self.key: ApiKey | None = None
        self.rename: ModelNameRewriter | None = None

    # ----- request
    async def on(self, msg: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        kind = msg.WhichOneof("request")
        try:
            if kind == "request_headers":
                return self._request_headers(msg)
            if kind == "request_body":
                return await self._request_body(msg)
            if kind == "request_trailers":
                out = await self._pick(msg, body_ends=False) if not self.picked else []
                return [*out, extproc.trailers(response=False)]
            if kind == "response_headers":
                return self._response_headers(msg)
            if kind == "response_body":
                return self._response_body(msg)
            if kind == "response_trailers":
                return [extproc.trailers(response=True)]
        except GatewayError as e:
            return [self._refuse(e)]
        return []

    def _request_headers(self, msg: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        self.headers = extproc.headers_of(msg.request_headers)
        if msg.HasField("protocol_config"):
            self.duplex = msg.protocol_config.request_body_mode == _DUPLEX
            self.duplex_response = msg.protocol_config.response_body_mode == _DUPLEX
        if self.gw.auth is not None:
            self.key = self.gw.auth.authenticate(self.headers.get("authorization"))
        self.slot = contextlib.ExitStack()
        self.slot.enter_context(self.gw.admission.slot())
        if msg.request_headers.end_of_stream:
            raise InvalidRequest("a request without a body names no model", "body")
        return [] if self.duplex else [extproc.continue_headers()]

    async def _request_body(self, msg: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        if self.picked:  # trailers came first (not expected of an HTTP/1 client): nothing is left to decide
            return list(extproc.streamed_body(bytes(msg.request_body.body), response=False, end_of_stream=False))
        self.body += msg.request_body.body
        if len(self.body) > self.gw.cfg.max_body_bytes:
            raise BodyTooLarge(f"request body over {self.gw.cfg.max_body_bytes} bytes", "body")
        if not msg.request_body.end_of_stream:
            return []
        return await self._pick(msg, body_ends=True)

    async def _pick(self, msg: pb.ProcessingRequest, *, body_ends: bool) -> list[pb.ProcessingResponse]:
        path = self.headers.get(":path", "").split("?", 1)[0]
        if path not in _CHAT_PATHS + _COMPLETION_PATHS:
            raise InvalidRequest(f"the endpoint picker routes completions and chat completions, not {path}", "path")
        original = bytes(self.body)
        ctx = self.ctx = await self.gw.context(
            original, self.headers, self.started, chat=path in _CHAT_PATHS, key=self.key
        )
        body = ctx.body  # a model route's choice names the chosen pool's served model in it
        subset = extproc.subset_hint(msg)
        if subset is not None:
            ctx.candidates = [e for e in ctx.route.endpoints if extproc.allowed(e.id, subset)]
            if not ctx.candidates:
                raise NoReadyEndpoint(f"none of the model's endpoints is in the data plane's subset {sorted(subset)}")
        decision = await self.gw.admission.hold(ctx, self.epp.decide)
        ranked = decision.ranked[: 1 + self.gw.cfg.fallbacks]
        self.sent = self.gw.dispatch.send(ctx, ranked[0])
        self.picked = True
        destinations = ",".join(e.id for e in ranked)
        extra = {}
        if self.headers.get(DEBUG_HEADER):
            extra = {f"{k}-picked": v for k, v in debug_headers(ctx, ranked[0]).items()}
        if body != original:
            extra["content-length"] = str(len(body))
        if ctx.requested_model:
            self.rename = ModelNameRewriter(ctx.fields.model, ctx.requested_model)
        if not self.duplex:
            return [extproc.picked_body(destinations, extra, body=body if body != original else None)]
        return [
            extproc.picked_headers(destinations, extra),
            *extproc.streamed_body(body, response=False, end_of_stream=body_ends),
        ]

    # ----- response
    def _response_headers(self, msg: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        headers = extproc.headers_of(msg.response_headers)
        try:
            self.status = int(headers.get(":status", "0"))
        except ValueError:
            self.status = 0
        self.code = self.status
        served = extproc.served(msg) or headers.get(extproc.SERVED_KEY)
        extra = dict(self.ctx.response_headers or {}) if self.ctx is not None else {}
        if self.ctx is not None and self.sent is not None and self.headers.get(DEBUG_HEADER):
            extra.update(debug_headers(self.ctx, self.sent.ep))  # the choice, before a fallback moves the request
            if served:
                extra["x-headway-served"] = served
        if self.sent is not None:
            self.epp.record_served(self.sent, served)
            if msg.response_headers.end_of_stream:
                self.sent.end(status=self.status)
        # a renamed answer's length changes: it goes on without Content-Length
        remove = ("content-length",) if self.rename is not None and self.duplex_response else ()
        return [extproc.continue_headers(response=True, extra=extra, remove=remove)]

    def _response_body(self, msg: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        chunk, eos = bytes(msg.response_body.body), msg.response_body.end_of_stream
        if self.ctx is not None and self.sent is not None:
            if self.generated is None:
                self.generated = GeneratedTokens(stream=self.ctx.stream, chat=self.ctx.chat)
            if chunk:
                self.sent.first_byte()
                self.generated.feed(chunk)
            if eos:
                self.sent.end(status=self.status, generated=self.generated.total())
        if not self.duplex_response:
            return [pb.ProcessingResponse(response_body=pb.BodyResponse(response=pb.CommonResponse()))]
        if self.rename is not None:  # the answer names the model the client asked for
            chunk = self.rename.feed(chunk) + (self.rename.flush() if eos else b"")
        return list(extproc.streamed_body(chunk, response=True, end_of_stream=eos))

    # ----- ends
    def _refuse(self, e: GatewayError) -> pb.ProcessingResponse:
        self.code = e.status
        headers = {"content-type": "application/json"}
        if e.status in (429, 503):
            headers["retry-after"] = str(getattr(e, "retry_after_s", 1))
        if e.status == 503:
            headers["x-llm-d-request-dropped-reason"] = "rejected-no-endpoints"
        return extproc.immediate(e.status, e.body(), headers, f"headway_{type(e).__name__}")

    def close(self, *, cancelled: bool) -> None:
        """The stream ended: the request leaves its endpoint's counts and gives its slot back."""
        if self.sent is not None:
            if self.sent.backlog and self.status is not None:
                self.sent.first_byte()  # Envoy sent no body: the answer's headers are all there is to see
            self.sent.end(status=self.status)
        if self.slot is not None:
            self.slot.close()
            code = self.code if self.code is not None else (CLIENT_GONE if cancelled else 0)
            name = self.ctx.router_name if self.ctx is not None else "none"
            self.gw.metrics.requests.labels(name, str(code)).inc()
            self.gw.metrics.duration.labels(name).observe(time.perf_counter() - self.started)


class EndpointPicker(pb_grpc.ExternalProcessorServicer):
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    async def decide(self, ctx: RequestContext) -> Decision:
        return await self.gw.dispatch.decide(ctx)

    def record_served(self, sent: Sent, served: str | None) -> None:
        """Envoy's report of who served. When a fallback did, the request's counts move there."""
        outcome = "unreported"
        if served:
            outcome = "chosen" if served == sent.ep.id else "fallback"
            if outcome == "fallback":
                moved = next((e for e in sent.ctx.route.endpoints if e.id == served), None)
                sent.ep.eject(time.monotonic())
                if moved is not None:
                    sent.ep.in_flight -= 1
                    sent.ep.prefill_backlog -= sent.backlog
                    sent.ep = moved
                    moved.in_flight += 1
                    moved.prefill_backlog += sent.backlog
        self.gw.metrics.served.labels(outcome).inc()

    async def Process(
        self, request_iterator: AsyncIterator[pb.ProcessingRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ProcessingResponse]:
        stream = _Stream(self)
        cancelled = True
        try:
            async for msg in request_iterator:
                for out in await stream.on(msg):
                    yield out
            cancelled = False
        finally:
            stream.close(cancelled=cancelled and stream.code is None)


class _Health(health.HealthServicer):
    """liveness: the process answers; readiness and the ext_proc service: routes are known (discovery
    has listed the pools once)."""

    def __init__(self, epp: EndpointPicker) -> None:
        super().__init__(experimental_non_blocking=True)
        self.epp = epp

    async def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext):
        if request.service not in extproc.HEALTH_NAMES:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        serving = request.service == "liveness" or self.epp.gw.ready()
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse(status=status)


def epp_app(gw: Gateway) -> web.Application:
    """The Endpoint Picker's process: ext_proc and gRPC health on `port`, /metrics and /healthz over HTTP
    on `metrics_port`, and the gateway's background tasks (discovery, scraping, KV events)."""
    epp = EndpointPicker(gw)
    app = web.Application()
    app.router.add_get("/metrics", gw.metrics_endpoint)
    app.router.add_get("/healthz", _healthz(gw))
    app.cleanup_ctx.append(gw._background)

    async def grpc_server(_app: web.Application) -> AsyncIterator[None]:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        pb_grpc.add_ExternalProcessorServicer_to_server(epp, server)
        health_pb2_grpc.add_HealthServicer_to_server(_Health(epp), server)
        if server.add_insecure_port(f"{gw.cfg.host}:{gw.cfg.port}") == 0:
            raise OSError(f"cannot listen on {gw.cfg.host}:{gw.cfg.port}")
        await server.start()
        log.info("endpoint picker: ext_proc on %s:%d", gw.cfg.host, gw.cfg.port)
        yield
        await server.stop(grace=5)

    app.cleanup_ctx.append(grpc_server)
    return app


def _healthz(gw: Gateway) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def healthz(_request: web.Request) -> web.Response:
        ready = gw.ready()
        body = {"status": "ok" if ready else "starting", "ready": ready}
        return web.json_response(body, status=200 if ready else 503)

    return healthz
