"""Engine endpoints and what the gateway knows of each: engine load from its /metrics, scraped on a short
interval, and the gateway's own in-flight count. An endpoint whose metrics are older than `stale_after_s`
or that failed recently is not routed to until it answers again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

log = logging.getLogger(__name__)
_GAUGES = {
    "vllm:num_requests_waiting{": "waiting",
    "vllm:num_requests_running{": "running",
    "vllm:kv_cache_usage_perc{": "kv_usage",
}


@dataclass
class Endpoint:
    url: str
    waiting: float = 0.0
    running: float = 0.0
    kv_usage: float = 0.0
    block_size: int | None = None
    scraped_at: float = 0.0
    in_flight: int = 0
    prefill_backlog: int = 0
    """Uncached prompt tokens of this gateway's requests the endpoint has not answered yet (still queued or
    prefilling): the work ahead of a new request's first token."""
    unanswered: dict[int, float] = field(default_factory=dict)
    """This gateway's requests the endpoint has not answered yet (no first byte): request key → monotonic
    time sent. The oldest one's age is a lower bound of the queueing a new request would meet."""
    ejected_until: float = 0.0
    variant: str | None = None
    """The ModelPool variant the engine pod belongs to (Kubernetes discovery)."""
    cost_per_hour_usd: float | None = None
    """Its variant's price per replica-hour, for the cost scorer (None: unknown)."""

    id: str = field(init=False)
    """`ip:port`, the same id engines put in their KV-event topics (derived from the URL once: every
    routing decision reads it many times)."""

    def __post_init__(self) -> None:
        self.id = urlsplit(self.url).netloc

    def routable(self, now: float, stale_after_s: float) -> bool:
        return now - self.scraped_at <= stale_after_s and now >= self.ejected_until

    def eject(self, now: float, for_s: float = 2.0) -> None:
        self.ejected_until = now + for_s


def parse_engine_metrics(text: str, ep: Endpoint) -> None:
    """Read the few vLLM gauges routing uses from Prometheus text (no full parse on the hot loop)."""
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        for prefix, attr in _GAUGES.items():
            if line.startswith(prefix):
                with contextlib.suppress(ValueError):
                    setattr(ep, attr, float(line.rsplit(" ", 1)[1]))
                break
        else:
            if line.startswith("vllm:cache_config_info{") and 'block_size="' in line:
                with contextlib.suppress(ValueError):
                    ep.block_size = int(line.split('block_size="', 1)[1].split('"', 1)[0])


async def scrape_forever(
    endpoints: Callable[[], list[Endpoint]], session: aiohttp.ClientSession, interval_s: float
) -> None:
    """Scrape whatever endpoints exist at each round (discovery changes the set)."""
    timeout = aiohttp.ClientTimeout(total=max(0.5, interval_s * 4))

    async def one(ep: Endpoint) -> None:
        try:
            async with session.get(f"{ep.url}/metrics", timeout=timeout) as r:
                if r.status == 200:
                    parse_engine_metrics(await r.text(), ep)
                    ep.scraped_at = time.monotonic()
        except (aiohttp.ClientError, TimeoutError) as e:
            log.debug("scrape of %s failed: %s", ep.url, e)

    while True:
        started = time.monotonic()
        await asyncio.gather(*(one(ep) for ep in endpoints()))
        await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))
