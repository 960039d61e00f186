"""Forwarding: send the original bytes to the best-ranked endpoint, try the next-ranked ones only before
the first byte of an answer, and relay the answer to the client as it arrives.

Timeouts are named by phase (config.UpstreamTimeouts): `connect_s` for the TCP connect; `first_byte_s`
until the first byte of the answer (headers *and* a first body chunk: a streaming engine sends its
headers at once and its first token after queueing and prefill); `idle_s` between two chunks after that;
`total_s` for a whole non-streamed answer. One `asyncio.timeout` is rescheduled per chunk, so each
phase costs a timer, not a task. A hung engine (stopped, deadlocked: its socket stays open) would hold a
request for all of `first_byte_s`; a watchdog on the same timeout ends the wait once the engine's metrics
have been silent for `silent_after_s`, so the request goes to another endpoint or its stream ends with an
error event.

The bookkeeping around each pick (in-flight and prefill-backlog counts, the routed prefix, the answer's
shape) is gateway/dispatch.py's, shared with the Endpoint Picker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping

import aiohttp
from aiohttp import web

from headway.gateway.admission import NoEndpointNow
from headway.gateway.config import GatewayConfig
from headway.gateway.context import RequestContext
from headway.gateway.dispatch import Dispatch
from headway.gateway.endpoints import Endpoint
from headway.gateway.errors import UpstreamFailed
from headway.gateway.metrics import GatewayMetrics
from headway.gateway.modelrouting.rewrite import ModelNameRewriter
from headway.gateway.openai import GeneratedTokens

log = logging.getLogger(__name__)
DEBUG_HEADER = "x-headway-debug"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "server", "date"}
_PID = str(os.getpid())


class _NotAnswered(Exception):
    """This endpoint started no answer; the next-ranked one may."""

    def __init__(self, reason: str, *, replied: bool) -> None:
        super().__init__(reason)
        self.replied = replied
        """The engine answered with an error (5xx), as opposed to being unreachable or silent."""


class _Watchdog:
    """Moves a request's deadline to now once both its engine's metrics (scraped every
    `scrape_interval_s`) and the request itself (no first byte, or no chunk since the last) have been
    silent for `silent_after_s`: a stream that flows is never cut for a late scrape. A timer re-armed a
    few times per `silent_after_s`, not a task."""

    def __init__(self, ep: Endpoint, deadline: asyncio.Timeout, silent_after_s: float) -> None:
        self.ep, self.deadline, self.silent_after_s = ep, deadline, silent_after_s
        self.silent = False
        self.progressed = time.monotonic()
        """When the request last moved: sent, or a chunk of its answer relayed."""
        self._loop = asyncio.get_running_loop()
        self._period = silent_after_s / 4
        self._handle = self._loop.call_later(self._period, self._check)

    def _check(self) -> None:
        now, quiet = time.monotonic(), self.silent_after_s
        if self.ep.scraped_at and now - self.ep.scraped_at > quiet and now - self.progressed > quiet:
            self.silent = True
            self.deadline.reschedule(self._loop.time())
        else:
            self._handle = self._loop.call_later(self._period, self._check)

    def cancel(self) -> None:
        self._handle.cancel()


class ClientGone(ConnectionResetError):
    """The client went away mid-answer: the upstream request is released, which aborts it in the engine."""


CLIENT_GONE = 499
"""Status counted for a request whose client left mid-answer (nginx's convention)."""


class Proxy:
    def __init__(self, cfg: GatewayConfig, metrics: GatewayMetrics, dispatch: Dispatch) -> None:
        self.cfg, self.metrics, self.dispatch = cfg, metrics, dispatch
        self.session: aiohttp.ClientSession | None = None
        t = cfg.timeouts
        self._connect_only = aiohttp.ClientTimeout(total=None, sock_connect=t.connect_s, sock_read=None)

    async def attempt(self, ctx: RequestContext) -> web.StreamResponse:
        """Decide, then send to the best endpoint, retrying the next-ranked before any byte is relayed.
        NoEndpointNow (the request may wait) when nothing could be sent or reached."""
        decision = await self.dispatch.decide(ctx)
        failures, replied = [], False
        for attempt, ep in enumerate(decision.ranked[: 1 + self.cfg.max_retries]):
            if attempt:
                self.metrics.retries.labels("upstream").inc()
            try:
                return await self._exchange(ctx, ep)
            except _NotAnswered as e:
                ep.eject(time.monotonic())
                failures.append(str(e))
                replied = replied or e.replied
        if replied:
            raise UpstreamFailed(f"every endpoint tried failed before answering ({'; '.join(failures)})")
        raise NoEndpointNow(f"no endpoint reachable ({'; '.join(failures)})")

    async def _exchange(self, ctx: RequestContext, ep: Endpoint) -> web.StreamResponse:
        assert self.session is not None and ctx.routing is not None and ctx.decision is not None
        t, loop, request = self.cfg.timeouts, asyncio.get_running_loop(), ctx.request
        assert request is not None
        end = math.inf if ctx.stream else loop.time() + t.total_s
        sent = self.dispatch.send(ctx, ep)
        upstream: aiohttp.ClientResponse | None = None
        resp: web.StreamResponse | None = None
        generated: GeneratedTokens | None = None
        watchdog: _Watchdog | None = None
        try:
            try:
                async with asyncio.timeout_at(min(loop.time() + t.first_byte_s, end)) as deadline:
                    watchdog = _Watchdog(ep, deadline, self.cfg.silent_after_s)
                    upstream = await self.session.post(
                        f"{ep.url}{request.path}",
                        data=ctx.body,
                        headers={"Content-Type": request.headers.get("Content-Type", "application/json")},
                        timeout=self._connect_only,
                    )
                    if upstream.status >= 500:
                        raise _NotAnswered(f"{ep.id}: HTTP {upstream.status}", replied=True)
                    chunk = await upstream.content.readany()
                    sent.first_byte()
                    resp = web.StreamResponse(status=upstream.status, headers=_passthrough(upstream.headers))
                    if request.headers.get(DEBUG_HEADER):
                        resp.headers.update(debug_headers(ctx, ep))
                    if ctx.response_headers:
                        resp.headers.update(ctx.response_headers)
                    rename = ModelNameRewriter(ctx.fields.model, ctx.requested_model) if ctx.requested_model else None
                    try:
                        await resp.prepare(request)
                    except ConnectionError as e:
                        raise ClientGone(str(e)) from None
                    generated = GeneratedTokens(stream=ctx.stream, chat=ctx.chat)
                    while chunk:
                        try:
                            await resp.write(rename.feed(chunk) if rename else chunk)
                        except ConnectionError as e:
                            raise ClientGone(str(e)) from None
                        generated.feed(chunk)
                        watchdog.progressed = time.monotonic()
                        deadline.reschedule(min(loop.time() + t.idle_s, end))
                        chunk = await upstream.content.readany()
                    if rename is not None and (rest := rename.flush()):
                        try:
                            await resp.write(rest)
                        except ConnectionError as e:
                            raise ClientGone(str(e)) from None
            except ClientGone:
                ctx.outcome = CLIENT_GONE
                assert resp is not None
                return resp  # aiohttp finishes it on the closed connection and logs a client disconnect
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as e:
                if resp is None:
                    raise _NotAnswered(f"{ep.id}: {type(e).__name__}", replied=False) from None
                return await self._cut(ctx, ep, resp, type(e).__name__)
            except TimeoutError:
                hung = watchdog is not None and watchdog.silent
                silent = f"metrics silent for over {self.cfg.silent_after_s:g}s"
                if resp is None:
                    why = silent if hung else f"no answer within {t.first_byte_s:g}s"
                    raise _NotAnswered(f"{ep.id}: {why}", replied=False) from None
                if hung:
                    what = f"stopped answering ({silent})"
                else:
                    what = f"answer over {t.total_s:g}s" if loop.time() >= end else f"silent for {t.idle_s:g}s"
                return await self._cut(ctx, ep, resp, what)
            sent.end(status=upstream.status, generated=generated.total() if generated else None)
            try:
                await resp.write_eof()
            except ConnectionError:
                ctx.outcome = CLIENT_GONE
            return resp
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if upstream is not None:
                upstream.release()
            sent.end()

    async def _cut(self, ctx: RequestContext, ep: Endpoint, resp: web.StreamResponse, why: str) -> web.StreamResponse:
        """The engine failed after the client got the first byte: no retry is possible. A stream ends with
        an error event and [DONE]; a non-streamed answer cannot say so in-band, so its connection closes
        (the client sees a broken response, never a truncated one that looks whole)."""
        ep.eject(time.monotonic())
        log.warning("engine %s failed mid-answer: %s", ep.id, why)
        ctx.outcome = UpstreamFailed.status
        if not ctx.stream:
            if ctx.request is not None and ctx.request.transport is not None:
                ctx.request.transport.abort()
            return resp
        err = UpstreamFailed(f"the engine {ep.id} failed mid-stream: {why}")
        with contextlib.suppress(ConnectionError):
            await resp.write(b"data: " + err.body() + b"\n\ndata: [DONE]\n\n")
            await resp.write_eof()
        return resp


def debug_headers(ctx: RequestContext, ep: Endpoint) -> dict[str, str]:
    """Why this endpoint: for a request that asks with the x-headway-debug header."""
    assert ctx.decision is not None
    scores = json.dumps(ctx.decision.scores.get(ep.id, {}), separators=(",", ":"))
    return {"x-headway-endpoint": ep.id, "x-headway-worker": _PID, "x-headway-scores": scores}


def _passthrough(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
