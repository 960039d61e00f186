"""KV-event ingest rate: decoded vLLM batches applied to the index, in memory and mirrored into real Redis.

    headway bench kv-ingest [--batches 2000] [--blocks-per-event 16]

Payloads are encoded exactly as engines send them (msgpack map events); the Redis figure includes the
pipelined writes having reached Redis (the mirror's queue drained), not just being queued.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from bench._machine import write_result
from headway.devenv.services import RedisServer
from headway.kvcache.events import BlockRemoved, BlockStored, EventBatch, encode_batch, encode_seq
from headway.kvcache.index import InMemoryIndex
from headway.kvcache.metrics import KvCacheMetrics
from headway.kvcache.redis_index import RedisMirror
from headway.kvcache.subscriber import KvEventIngest


def payloads(batches: int, blocks: int, block_size: int) -> list[tuple[bytes, bytes, bytes]]:
    rng, out, live = random.Random(3), [], []
    for seq in range(batches):
        hashes = [rng.getrandbits(64) for _ in range(blocks)]
        tokens = [rng.randrange(32000) for _ in range(blocks * block_size)]
        events: list = [
            BlockStored(
                block_hashes=hashes,
                parent_block_hash=None,
                token_ids=tokens,
                block_size=block_size,
                lora_id=None,
                medium="GPU",
                lora_name=None,
                extra_keys=[None] * blocks,
                group_idx=0,
                kv_cache_spec_kind="full_attention",
            )
        ]
        live.append(hashes)
        if len(live) > 50:
            events.append(BlockRemoved(block_hashes=live.pop(0), medium="GPU", group_idx=0))
        out.append(
            (
                f"kv@127.0.0.1:{8000 + seq % 8}@m".encode(),
                encode_seq(seq // 8),
                encode_batch(EventBatch(time.time(), events, 0)),
            )
        )
    return out


async def run(frames: list[tuple[bytes, bytes, bytes]], redis_url: str | None) -> float:
    registry = CollectorRegistry()
    mirror = RedisMirror(redis_url, registry, max_queue=10_000_000) if redis_url else None
    index = InMemoryIndex(listener=mirror)
    if mirror:
        mirror.index = index
    ingest = KvEventIngest(index, KvCacheMetrics(registry))
    t0 = time.perf_counter()
    for i, f in enumerate(frames):
        ingest.apply(*f)
        if mirror and i % 50 == 49:
            await mirror.flush()
    if mirror:
        await mirror.flush()
        await mirror.redis.aclose()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--blocks-per-event", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=16)
    args = parser.parse_args()
    frames = payloads(args.batches, args.blocks_per_event, args.block_size)
    memory_s = asyncio.run(run(frames, None))
    with tempfile.TemporaryDirectory() as d:
        redis = RedisServer(Path(d)).start()
        try:
            redis_s = asyncio.run(run(frames, redis.url))
        finally:
            redis.stop()
    blocks = args.batches * args.blocks_per_event
    payload = {
        "batches": args.batches,
        "blocks_per_event": args.blocks_per_event,
        "block_size": args.block_size,
        "memory": {
            "seconds": round(memory_s, 3),
            "batches_per_s": round(args.batches / memory_s),
            "blocks_per_s": round(blocks / memory_s),
        },
        "redis": {
            "seconds": round(redis_s, 3),
            "batches_per_s": round(args.batches / redis_s),
            "blocks_per_s": round(blocks / redis_s),
        },
    }
    print(payload)
    print(write_result("kv-ingest", payload))


if __name__ == "__main__":
    main()
