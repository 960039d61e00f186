"""Admission: a bounded number of requests inside the gateway, and holding a request while no endpoint
can take it.

A request takes its slot before its body is read and gives it back when its answer ends, whatever path
it took (tokenizing, a shared-index read, waiting for capacity, retries, relaying). Over the limit a
request is refused at once with 429 and Retry-After: the gateway keeps no hidden queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from headway.gateway.context import RequestContext
from headway.gateway.errors import NoReadyEndpoint, Overloaded
from headway.gateway.metrics import GatewayMetrics

T = TypeVar("T")
HOLD_POLL_S = 0.1


class NoEndpointNow(NoReadyEndpoint):
    """No endpoint can take the request right now (none ready, all ejected, or none reachable): the
    request may wait for one."""


class Admission:
    def __init__(self, limit: int, hold_s: float, metrics: GatewayMetrics) -> None:
        self.limit, self.hold_s, self.metrics = limit, hold_s, metrics
        self.in_use = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        if self.in_use >= self.limit:
            raise Overloaded(f"{self.in_use} requests in the gateway (limit {self.limit}); retry shortly")
        self.in_use += 1
        self.metrics.admitted.inc()
        try:
            yield
        finally:
            self.in_use -= 1
            self.metrics.admitted.dec()

    async def hold(self, ctx: RequestContext, attempt: Callable[[RequestContext], Awaitable[T]]) -> T:
        """Try; while no endpoint can take the request, wait for one up to `hold_s`, then answer 503 with
        Retry-After. Holding is how a request survives an engine restart or a scale-up from zero. The
        request keeps its admission slot meanwhile: held requests count against the limit."""
        deadline = time.monotonic() + self.hold_s
        while True:
            try:
                return await attempt(ctx)
            except NoEndpointNow as e:
                reason = str(e)
            if time.monotonic() >= deadline:
                raise NoReadyEndpoint(f"{reason} for model {ctx.model} after waiting {self.hold_s:.0f}s")
            if not ctx.held:
                ctx.held = True
                self.metrics.held.labels(ctx.model).inc()
            await asyncio.sleep(HOLD_POLL_S)
