"""`headway kvcache`: the KV-cache indexer on its own, for several gateway replicas sharing Redis.

It binds the endpoint engines publish to, keeps the index in memory, mirrors it into Redis, and serves
/metrics and /healthz. Gateways then run with `--redis-url` and without `--kv-events-bind`.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import typer

from headway.api.aio import cancel_and_wait
from headway.api.options import settings_command
from headway.kvcache.config import KvCacheConfig

app = typer.Typer(add_completion=False)


def _run(cfg: KvCacheConfig) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(_serve(cfg.bind, cfg.redis_url, cfg.host, cfg.port, cfg.max_keys, cfg.kv_replay_port))


kvcache = settings_command(
    KvCacheConfig,
    _run,
    name="kvcache",
    doc="Run the KV-event indexer alone: engines' events in, the shared index in Redis out.",
)
app.command("kvcache")(kvcache)


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
        await cancel_and_wait(tasks)
        await runner.cleanup()
