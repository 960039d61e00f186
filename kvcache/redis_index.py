"""The index shared through Redis, so every gateway replica routes on the same knowledge.

The process that receives the engines' events (the gateway with the embedded indexer, or `headway kvcache`
alone) keeps its index in memory and mirrors every change into Redis, pipelined in batches; replicas that
do not receive events read Redis at routing time. Every replica also writes its speculative entries, so a
prefix one replica just routed is seen by the others.

Key layout (prefix `hw` by default):
    hw:k:<key>   HASH  field <pod id> → expiry (unix seconds; 0 = reported by the engine, no expiry)
    hw:p:<pod>   SET   the keys the pod holds (to drop them when it leaves or clears its cache)
Keys are headway's own chained block keys (decimal), pods `ip:port`. A key's hash expires after
`idle_ttl_s` without writes, which bounds Redis memory if an indexer dies without cleaning up.

Redis being down never fails a request: lookups time out fast and routing uses the local index alone;
mirror writes are dropped and counted, and the full local state is written again once Redis answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from headway.kvcache.index import InMemoryIndex

log = logging.getLogger(__name__)
_Op = tuple[str, str, int, float]  # (op, pod, key, ttl)


class RedisMirror:
    """IndexListener that queues changes and flushes them to Redis in pipelines."""

    def __init__(
        self,
        url: str,
        registry: CollectorRegistry,
        *,
        prefix: str = "hw",
        idle_ttl_s: int = 3600,
        flush_interval_s: float = 0.01,
        max_queue: int = 200_000,
        timeout_s: float = 0.5,
    ) -> None:
        self.redis = aioredis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.prefix, self.idle_ttl_s, self.flush_interval_s = prefix, idle_ttl_s, flush_interval_s
        self._add, self._del, self._clear = (self.redis.register_script(s) for s in (_ADD, _DEL, _CLEAR))
        self.queue: list[_Op] = []
        self.max_queue = max_queue
        self.healthy = True
        self.index: InMemoryIndex | None = None
        self.dropped = Counter(
            "headway_kvcache_redis_dropped_writes_total", "Index changes not written to Redis.", registry=registry
        )
        self.up = Gauge(
            "headway_kvcache_redis_up",
            "1 while Redis answers the index's writes.",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.up.set(1)

    # ----- IndexListener (called synchronously from the index)
    def added(self, pod: str, key: int, ttl_s: float) -> None:
        self._push(("add", pod, key, ttl_s))

    def removed(self, pod: str, key: int) -> None:
        self._push(("del", pod, key, 0.0))

    def cleared(self, pod: str) -> None:
        self._push(("clear", pod, 0, 0.0))

    def _push(self, op: _Op) -> None:
        if len(self.queue) >= self.max_queue:
            self.dropped.inc()
            return
        self.queue.append(op)

    # ----- writer
    async def run(self) -> None:
        try:
            last_try = 0.0
            while True:
                await asyncio.sleep(self.flush_interval_s)
                # While Redis is down, knock once a second even with nothing queued, to resync soon after.
                if self.queue or (not self.healthy and time.monotonic() - last_try > 1.0):
                    last_try = time.monotonic()
                    await self.flush()
        finally:
            with contextlib.suppress(RedisError, OSError):
                await self.redis.aclose()

    async def flush(self) -> None:
        ops, self.queue = self.queue, []
        try:
            if not self.healthy:
                await self.redis.ping()
                ops = self._full_state()  # Redis came back: what it holds may be stale or gone
                log.info("Redis is back; rewriting %d index entries", len(ops))
            await self._write(ops)
            self.healthy = True
            self.up.set(1)
        except (RedisError, OSError) as e:
            if self.healthy:
                log.warning("Redis unavailable (%s); routing continues on local state", e)
            self.healthy = False
            self.up.set(0)
            self.dropped.inc(len(ops))

    def _full_state(self) -> list[_Op]:
        if self.index is None:
            return []
        now = time.monotonic()
        out: list[_Op] = []
        for key, holders in self.index.entries():
            for pod, expiry in holders.items():
                if expiry == 0.0 or expiry > now:
                    out.append(("add", pod, key, 0.0 if expiry == 0.0 else expiry - now))
        return out

    async def _write(self, ops: Sequence[_Op]) -> None:
        """One script call per run of consecutive changes of one kind for one pod (an engine's event
        batch is such a run): the per-key commands run inside Redis, so the client packs two strings per
        block instead of three commands (measured by `headway bench kv-ingest`). The scripts touch keys
        they compute, which standalone Redis allows (Redis Cluster would not)."""
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            for (op, pod), run in itertools.groupby(ops, key=lambda o: (o[0], o[1])):
                changes = list(run)
                chunks = (changes[i : i + _CHUNK] for i in range(0, len(changes), _CHUNK))
                if op == "add":
                    for chunk in chunks:
                        args: list[str | int | float] = [self.prefix, pod, self.idle_ttl_s]
                        for _, _, key, ttl in chunk:
                            args += (key, 0 if ttl == 0 else now + ttl)
                        await self._add(args=args, client=pipe)
                elif op == "del":
                    for chunk in chunks:
                        await self._del(args=[self.prefix, pod, *(key for _, _, key, _ in chunk)], client=pipe)
                else:
                    await self._clear(args=[self.prefix, pod], client=pipe)
            await pipe.execute()


_CHUNK = 2000
"""Changes per script call (Lua's unpack and one call's run time stay small)."""

_ADD = """
local p, pod, idle = ARGV[1], ARGV[2], tonumber(ARGV[3])
local members = {}
for i = 4, #ARGV, 2 do
  local k, v = p .. ':k:' .. ARGV[i], ARGV[i + 1]
  -- an engine-reported entry (0) is never shortened by a speculative one: another replica that routed
  -- this prefix does not know the engine already holds it
  if v == '0' or redis.call('HGET', k, pod) ~= '0' then
    redis.call('HSET', k, pod, v)
  end
  redis.call('EXPIRE', k, idle)
  members[#members + 1] = ARGV[i]
end
redis.call('SADD', p .. ':p:' .. pod, unpack(members))
"""

_DEL = """
local p, pod = ARGV[1], ARGV[2]
for i = 3, #ARGV do
  redis.call('HDEL', p .. ':k:' .. ARGV[i], pod)
end
redis.call('SREM', p .. ':p:' .. pod, unpack(ARGV, 3))
"""

_CLEAR = """
local p, pod = ARGV[1], ARGV[2]
local set = p .. ':p:' .. pod
for _, k in ipairs(redis.call('SMEMBERS', set)) do
  redis.call('HDEL', p .. ':k:' .. k, pod)
end
redis.call('DEL', set)
"""


class RedisLookup:
    """Reads the shared index: the longest cached prefix per pod, in one pipelined round trip."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "hw",
        timeout_s: float = 0.25,
        retry_after_s: float = 1.0,
        outcome: Callable[[str], None] | None = None,
    ) -> None:
        self.redis = aioredis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.prefix, self.retry_after_s = prefix, retry_after_s
        self._down_until = 0.0
        self.outcome = outcome or (lambda result: None)
        """Told each lookup's result: ok, timeout or down (the gateway counts them)."""

    async def longest_prefix(self, keys: Sequence[int], pods: Iterable[str]) -> dict[str, int] | None:
        """None when Redis does not answer in time (the caller routes on local state)."""
        pods = list(pods)
        if not keys:
            return None
        if time.monotonic() < self._down_until:
            self.outcome("down")
            return None
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for k in keys:
                    pipe.hgetall(f"{self.prefix}:k:{k}")
                rows = await pipe.execute()
        except (RedisTimeout, TimeoutError):
            self.outcome("timeout")
            return None  # slow this once: route on local state, but ask again next time
        except (RedisError, OSError):
            self._down_until = time.monotonic() + self.retry_after_s  # down: stop asking for a while
            self.outcome("down")
            return None
        self.outcome("ok")
        now = time.time()
        live, matched = set(pods), dict.fromkeys(pods, 0)
        for i, row in enumerate(rows):
            holders = {pod.decode(): float(exp) for pod, exp in row.items()}
            live = {p for p in live if p in holders and (holders[p] == 0 or holders[p] > now)}
            if not live:
                break
            for p in live:
                matched[p] = i + 1
        return matched

    async def warm(self) -> None:
        """Open a connection before the first request needs one: connecting (and the handshake) inside a
        lookup's 250 ms budget can miss it on a busy host, and that request would route blind."""
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await self.redis.ping()

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()
