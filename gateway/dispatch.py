"""What happens around each pick, whoever carries the request to the engine — headway's own proxy
(gateway/proxy.py) or a Gateway's Envoy told where to send it by the Endpoint Picker (gateway/epp.py):

- decide: the router ranks the pool's endpoints; the routing time is observed once per request;
- send: the chosen endpoint counts the request as in flight, and its uncached prompt tokens as prefill
  backlog, from the moment it is sent; the routed prefix is remembered (approx-prefix history, and
  pending in the index until the first token);
- first byte: the backlog is paid, and the prompt's blocks count as held until their KV events come;
- end: the request leaves the endpoint's counts, and a complete answer is counted in the request-shape
  histogram the autoscaler sizes pools from.

Both front ends go through these steps, so a decision and its bookkeeping are the same behind Envoy as
behind headway's proxy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_client import Gauge

from headway.api.shape import INPUT_EDGES, OUTPUT_EDGES, le_label
from headway.gateway.admission import NoEndpointNow
from headway.gateway.config import GatewayConfig
from headway.gateway.context import RequestContext
from headway.gateway.endpoints import Endpoint
from headway.gateway.metrics import GatewayMetrics
from headway.gateway.routing.blocks import BlockSizes
from headway.gateway.routing.types import Decision, uncached_tokens
from headway.kvcache.index import InMemoryIndex

HISTORY_TTL_S = 120.0
"""How long a routed prompt stays in the approx-prefix history."""


@dataclass(slots=True)
class Sent:
    """One request counted on one endpoint until `end()` (idempotent: every exit path may call it)."""

    dispatch: Dispatch
    ctx: RequestContext
    ep: Endpoint
    backlog: int
    gauge: Gauge
    load: int = 0
    """This gateway's requests in flight on the endpoint when this one was sent."""
    answered: bool = False
    ended: bool = False

    def first_byte(self) -> None:
        """The engine has computed the prompt's blocks by now, and its events may still be in flight:
        count them as held for `speculative_ttl_s`. Not at routing time: requests arriving together would
        all be sent after a prefix that no engine holds yet, and pile onto one engine for nothing."""
        if self.backlog:
            self.ep.prefill_backlog -= self.backlog
            self.backlog = 0
        d, ctx = self.dispatch, self.ctx
        if not self.answered and not self.ended:
            self.answered = True
            self.ep.unanswered.pop(id(self), None)
            ctx.route.ttft.observe(time.perf_counter() - ctx.started_s, self.load)
        if d.cfg.speculative_ttl_s and ctx.router.speculative and ctx.routing is not None:
            d.index.speculate(self.ep.id, ctx.routing.keys(d.block_sizes.of(self.ep)), d.cfg.speculative_ttl_s)

    def end(self, *, status: int | None = None, generated: int | None = None) -> None:
        """The answer ended (or never came). A complete answer (200 and its generated token count)
        is counted by shape."""
        if self.ended:
            return
        self.ended = True
        self.ep.unanswered.pop(id(self), None)
        self.ep.prefill_backlog -= self.backlog
        self.backlog = 0
        self.ep.in_flight -= 1
        self.gauge.dec()
        if status == 200 and generated is not None and self.ctx.routing is not None:
            self.dispatch.metrics.shapes.labels(
                self.ctx.model,
                le_label(len(self.ctx.routing.tokens), INPUT_EDGES),
                le_label(generated, OUTPUT_EDGES),
            ).inc()


class Dispatch:
    def __init__(
        self,
        cfg: GatewayConfig,
        metrics: GatewayMetrics,
        *,
        index: InMemoryIndex,
        history: InMemoryIndex,
        block_sizes: BlockSizes,
    ) -> None:
        self.cfg, self.metrics = cfg, metrics
        self.index, self.history, self.block_sizes = index, history, block_sizes

    async def decide(self, ctx: RequestContext) -> Decision:
        """The router's ranking of the pool's endpoints; NoEndpointNow (the request may wait) when it is
        empty."""
        assert ctx.routing is not None
        endpoints = ctx.route.endpoints if ctx.candidates is None else ctx.candidates
        decision = ctx.decision = await ctx.router.route(ctx.routing, endpoints)
        if ctx.routed_s is None:
            ctx.routed_s = time.perf_counter()
            self.metrics.routing.labels(ctx.router_name).observe(ctx.routed_s - ctx.started_s)
        if not decision.ranked:
            raise NoEndpointNow("no ready endpoint")
        return decision

    def send(self, ctx: RequestContext, ep: Endpoint) -> Sent:
        """The request is on its way to `ep`: count it there, remember it in the routing history
        (approx-prefix), count the pick and its predicted hit, tell the router, and mark the prompt
        pending there until its first token (under load a request waits in the engine's queue for
        seconds, and its KV events only come after that)."""
        assert ctx.routing is not None and ctx.decision is not None
        cached = ctx.decision.cached_tokens
        backlog = uncached_tokens(ctx.routing, cached, ep.id)
        keys = ctx.routing.keys(self.block_sizes.of(ep))
        self.history.speculate(ep.id, keys, HISTORY_TTL_S)
        hit = cached.get(ep.id, 0)
        self.metrics.picks.labels(ctx.router_name, "yes" if hit else "no").inc()
        self.metrics.predicted_hit_tokens.inc(hit)
        ctx.router.routed(ctx.routing, ep)
        if self.cfg.pending_ttl_s and ctx.router.speculative:
            self.index.speculate(ep.id, keys, self.cfg.pending_ttl_s)
        ctx.endpoint = ep
        ep.in_flight += 1
        ep.prefill_backlog += backlog
        gauge = self.metrics.in_flight.labels(ctx.model)
        gauge.inc()
        sent = Sent(self, ctx, ep, backlog, gauge, load=ep.in_flight - 1)
        ep.unanswered[id(sent)] = time.monotonic()
        return sent
