"""The index mirrored into a real Redis reads back as the in-memory index it mirrors: blocks stored,
removed and cleared per pod, speculative entries expiring, large batches, keys that expire when idle."""

from __future__ import annotations

import asyncio
import random

import redis
from prometheus_client import CollectorRegistry

from headway.devenv.services import RedisServer
from headway.kvcache.index import InMemoryIndex
from headway.kvcache.keys import block_keys, root_key
from headway.kvcache.redis_index import RedisLookup, RedisMirror

BS = 4
PODS = ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"]


def _mirrored(url: str, prefix: str) -> tuple[InMemoryIndex, RedisMirror]:
    mirror = RedisMirror(url, CollectorRegistry(), prefix=prefix, idle_ttl_s=600)
    index = InMemoryIndex(listener=mirror)
    mirror.index = index
    return index, mirror


def test_random_stores_removes_and_clears_read_back_as_the_local_index(redis_server: RedisServer) -> None:
    rng = random.Random(5)
    prompts = [[rng.randrange(50) for _ in range(BS * rng.randint(1, 12))] for _ in range(60)]
    stored: dict[str, list[list[int]]] = {p: [] for p in PODS}

    async def run() -> None:
        index, mirror = _mirrored(redis_server.url, "t1")
        lookup = RedisLookup(redis_server.url, prefix="t1")
        for step in range(300):
            pod = rng.choice(PODS)
            roll = rng.random()
            if roll < 0.6:
                tokens = rng.choice(prompts)
                hashes = [rng.getrandbits(63) for _ in range(len(tokens) // BS)]
                index.store(pod, "m", hashes, None, tokens, BS)
                stored[pod].append(hashes)
            elif roll < 0.95 and stored[pod]:
                index.remove(pod, stored[pod].pop(rng.randrange(len(stored[pod]))))
            elif roll >= 0.95:
                index.clear_pod(pod)
                stored[pod].clear()
            if step % 25 == 24:
                await mirror.flush()
                assert mirror.healthy
                for tokens in prompts[:20]:
                    keys = block_keys(tokens, BS, root_key("m"))
                    assert await lookup.longest_prefix(keys, PODS) == index.longest_prefix(keys, PODS)
        await mirror.redis.aclose()
        await lookup.close()

    asyncio.run(run())


def test_speculative_entries_expire_and_engine_blocks_do_not(redis_server: RedisServer) -> None:
    async def run() -> None:
        index, mirror = _mirrored(redis_server.url, "t2")
        lookup = RedisLookup(redis_server.url, prefix="t2")
        tokens = list(range(3 * BS))
        keys = block_keys(tokens, BS, root_key("m"))
        index.store(PODS[0], "m", [1, 2, 3], None, tokens, BS)
        index.speculate(PODS[1], keys[:2], ttl_s=0.3)
        await mirror.flush()
        assert await lookup.longest_prefix(keys, PODS) == {PODS[0]: 3, PODS[1]: 2, PODS[2]: 0}
        await asyncio.sleep(0.6)
        assert await lookup.longest_prefix(keys, PODS) == {PODS[0]: 3, PODS[1]: 0, PODS[2]: 0}
        await mirror.redis.aclose()
        await lookup.close()

    asyncio.run(run())


def test_a_replicas_speculation_never_shortens_what_the_engine_reported(redis_server: RedisServer) -> None:
    """The indexer mirrors an engine's blocks; another gateway replica, which never saw them, routes that
    prefix to the same engine and writes its speculative entries: once they would expire, the engine's
    blocks must still read as held (an overwrite made every routed prefix vanish after the TTL)."""

    async def run() -> None:
        indexer, indexer_mirror = _mirrored(redis_server.url, "t4")
        replica, replica_mirror = _mirrored(redis_server.url, "t4")
        lookup = RedisLookup(redis_server.url, prefix="t4")
        tokens = list(range(3 * BS))
        keys = block_keys(tokens, BS, root_key("m"))
        indexer.store(PODS[0], "m", [1, 2, 3], None, tokens, BS)
        await indexer_mirror.flush()
        replica.speculate(PODS[0], keys, ttl_s=0.2)
        replica.speculate(PODS[1], keys[:1], ttl_s=0.2)
        await replica_mirror.flush()
        assert await lookup.longest_prefix(keys, PODS) == {PODS[0]: 3, PODS[1]: 1, PODS[2]: 0}
        await asyncio.sleep(0.5)
        assert await lookup.longest_prefix(keys, PODS) == {PODS[0]: 3, PODS[1]: 0, PODS[2]: 0}
        # and a later engine report still turns a speculative entry into a held one
        replica.speculate(PODS[2], keys, ttl_s=0.2)
        await replica_mirror.flush()
        indexer.store(PODS[2], "m", [7, 8, 9], None, tokens, BS)
        await indexer_mirror.flush()
        await asyncio.sleep(0.5)
        assert (await lookup.longest_prefix(keys, PODS))[PODS[2]] == 3
        for m in (indexer_mirror, replica_mirror):
            await m.redis.aclose()
        await lookup.close()

    asyncio.run(run())


def test_a_batch_larger_than_one_script_call_is_written_whole_and_keys_expire_when_idle(
    redis_server: RedisServer,
) -> None:
    n = 5000  # more than one script call's worth of changes for one pod

    async def run() -> None:
        index, mirror = _mirrored(redis_server.url, "t3")
        tokens = list(range(n * BS))
        index.store(PODS[0], "m", list(range(1, n + 1)), None, tokens, BS)
        await mirror.flush()
        assert mirror.healthy
        keys = block_keys(tokens, BS, root_key("m"))
        lookup = RedisLookup(redis_server.url, prefix="t3")
        assert await lookup.longest_prefix(keys, PODS[:1]) == {PODS[0]: n}
        index.remove(PODS[0], range(n // 2 + 1, n + 1))
        await mirror.flush()
        assert await lookup.longest_prefix(keys, PODS[:1]) == {PODS[0]: n // 2}
        await mirror.redis.aclose()
        await lookup.close()
        return keys

    keys = asyncio.run(run())
    r = redis.Redis.from_url(redis_server.url)
    assert r.scard(f"t3:p:{PODS[0]}") == n // 2
    ttls = {r.ttl(f"t3:k:{k}") for k in keys[: n // 2 : 500]}
    assert all(0 < t <= 600 for t in ttls), ttls
