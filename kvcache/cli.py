"""`headway kvcache`: the KV-cache indexer on its own, for several gateway replicas sharing Redis.

It binds the endpoint engines publish to, keeps the index in memory, mirrors it into Redis, and serves
/metrics and /healthz. Gateways then run with `--redis-url` and without `--kv-events-bind`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from typing import Annotated

import typer

app = typer.Typer(add_completion=False)


@app.command()
def kvcache(
    bind: Annotated[str, typer.Option(help="ZMQ endpoint to bind for the engines' KV events.")],
    redis_url: Annotated[str, typer.Option(help="Redis the gateways read, e.g. redis://127.0.0.1:6379/0.")],
    host: Annotated[str, typer.Option(help="Address of /metrics and /healthz.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 9465,
    max_keys: Annotated[int, typer.Option(min=1, help="Block keys kept in memory (LRU).")] = 2_000_000,
    kv_replay_port: Annotated[int | None, typer.Option(help="Engines' KV-event replay port, to fill gaps.")] = None,
) -> None:
    """Run the KV-event indexer alone: engines' events in, the shared index in Redis out."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(_serve(bind, redis_url, host, port, max_keys, kv_replay_port))


async def _serve(bind: str, redis_url: str, host: str, port: int, max_keys: int, replay_port: int | None) -> None:
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    from headway.kvcache.index import InMemoryIndex
    from headway.kvcache.metrics import KvCacheMetrics
    from headway.kvcache.redis_index import RedisMirror
    from headway.kvcache.subscriber import KvEventIngest, subscribe

    registry = CollectorRegistry(auto_describe=True)
    mirror = RedisMirror(redis_url, registry)
    index = InMemoryIndex(max_keys=max_keys, listener=mirror)
    mirror.index = index
    ingest = KvEventIngest(index, KvCacheMetrics(registry), replay_port=replay_port)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "keys": len(index), "redis": mirror.healthy})

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    tasks = [asyncio.create_task(subscribe(bind, ingest)), asyncio.create_task(mirror.run())]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await runner.cleanup()
