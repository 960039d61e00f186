"""Several gateway processes on one port, fed one KV index.

One Python process uses one core. With `--workers N` the gateway runs N worker processes that each bind
the listen port with SO_REUSEPORT (the kernel spreads connections over them) and a parent, the *hub*,
that owns what must exist once:

- the KV-event subscriber (the engines connect to one endpoint) and the replay of missed batches;
- the index those events build, whose every change the hub publishes to all workers, which apply it to
  their own copy (`InMemoryIndex.mirror`) — routing reads memory, never a socket;
- the speculative entries: a worker sends each prefix it routes to the hub, which adds it to the index
  and so publishes it to every worker, so a prefix one worker just sent to a pod counts on all of them
  (the bursty case: many requests of a new prefix arriving at once on different connections);
- the Redis mirror, when the index is shared with other gateway replicas;
- the Prometheus files: metrics use prometheus_client's multiprocess mode, so /metrics on any worker
  sums every process (gauges of requests in flight sum over live workers; the index size is the hub's).

Per worker stay: the admission limit (`max_in_flight` split evenly), each endpoint's in-flight count and
prefill backlog (a worker sees its own share of the load, plus the engines' own queue metrics, which
every worker scrapes), the routing history of approx-prefix, and discovery.

Wire format between hub and workers: msgpack lists of (op, pod, key, ttl_s) over ZMQ ipc sockets in a
private directory; `size` ops carry a pod's block size. A worker that starts (or restarts) says `hello`
and the hub answers with its whole index.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from headway.api.aio import cancel_and_wait
from headway.gateway.config import GatewayConfig

log = logging.getLogger(__name__)
Op = tuple[str, str, int, float]
_ENCODE = msgspec.msgpack.Encoder()
_DECODE = msgspec.msgpack.Decoder(list[tuple[str, str, int, float]])
HELLO = ("hello", "", 0, 0.0)
RESTART_BACKOFF_S = 1.0
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


class OpBatcher:
    """An IndexListener that collects an index's changes and sends them as one message per event-loop
    turn (a BlockStored of 500 blocks is one message, not 500)."""

    def __init__(self, send: Callable[[bytes], Any], *, speculative_only: bool = False) -> None:
        self._send, self.speculative_only = send, speculative_only
        self._ops: list[Op] = []
        self._scheduled = False

    def added(self, pod: str, key: int, ttl_s: float) -> None:
        if ttl_s or not self.speculative_only:
            self._push(("add", pod, key, ttl_s))

    def removed(self, pod: str, key: int) -> None:
        if not self.speculative_only:
            self._push(("del", pod, key, 0.0))

    def cleared(self, pod: str) -> None:
        if not self.speculative_only:
            self._push(("clear", pod, 0, 0.0))

    def push_many(self, ops: list[Op]) -> None:
        for op in ops:
            self._push(op)

    def _push(self, op: Op) -> None:
        self._ops.append(op)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self._ops:
            ops, self._ops = self._ops, []
            self._send(_ENCODE.encode(ops))


class _Fanout:
    """One index, several listeners (the workers' feed and the Redis mirror)."""

    def __init__(self, *listeners: Any) -> None:
        self.listeners = listeners

    def added(self, pod: str, key: int, ttl_s: float) -> None:
        for x in self.listeners:
            x.added(pod, key, ttl_s)

    def removed(self, pod: str, key: int) -> None:
        for x in self.listeners:
            x.removed(pod, key)

    def cleared(self, pod: str) -> None:
        for x in self.listeners:
            x.cleared(pod)


def _addresses(directory: str) -> tuple[str, str]:
    """(hub → workers PUB, workers → hub PULL): ipc sockets only this host's processes can reach."""
    return f"ipc://{directory}/index.sock", f"ipc://{directory}/speculation.sock"


async def run_hub(cfg: GatewayConfig, directory: str, stop: asyncio.Event) -> None:
    """The hub: KV events in, index changes out to every worker; workers' speculation in."""
    from prometheus_client import CollectorRegistry

    from headway.kvcache.index import InMemoryIndex
    from headway.kvcache.metrics import KvCacheMetrics
    from headway.kvcache.redis_index import RedisMirror
    from headway.kvcache.subscriber import KvEventIngest, subscribe

    pub_addr, pull_addr = _addresses(directory)
    ctx = zmq.asyncio.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 100_000)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(pub_addr)
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    pull.bind(pull_addr)
    registry = CollectorRegistry()  # values live in the multiprocess files; workers expose them
    feed = OpBatcher(lambda m: pub.send(m, zmq.NOBLOCK))
    index = InMemoryIndex()
    mirror: RedisMirror | None = None
    if cfg.redis_url:
        mirror = RedisMirror(cfg.redis_url, registry)
        mirror.index = index
        index.listener = _Fanout(feed, mirror)
    else:
        index.listener = feed
    ingest = KvEventIngest(index, KvCacheMetrics(registry), replay_port=cfg.kv_replay_port)
    sizes: dict[str, int] = {}

    def publish_sizes() -> None:
        changed = [("size", pod, size, 0.0) for pod, size in ingest.block_sizes.items() if sizes.get(pod) != size]
        if changed:
            sizes.update({pod: size for _, pod, size, _ in changed})
            feed.push_many(changed)

    async def sizes_forever() -> None:
        while True:
            publish_sizes()
            await asyncio.sleep(0.05)

    async def speculation_forever() -> None:
        while True:
            # Consecutive keys one worker speculated for one pod with one lifetime (the index reports each
            # key's remaining lifetime, so they differ by microseconds): one index call.
            run: list[int] = []
            run_pod, run_ttl_s = "", 0.0
            for op, pod, key, ttl_s in _DECODE.decode(await pull.recv()):
                if op == "add" and ttl_s > 0:
                    if run and (pod != run_pod or abs(ttl_s - run_ttl_s) > 0.1):
                        index.speculate(run_pod, run, run_ttl_s)
                        run = []
                    if not run:
                        run_pod, run_ttl_s = pod, ttl_s
                    run.append(key)
                elif op == "hello":
                    sizes.clear()
                    publish_sizes()
                    now = time.monotonic()
                    feed.push_many(
                        [
                            ("add", p, k, 0.0 if exp == 0.0 else exp - now)
                            for k, holders in index.entries()
                            for p, exp in holders.items()
                            if exp == 0.0 or exp > now
                        ]
                    )
            if run:
                index.speculate(run_pod, run, run_ttl_s)

    tasks = [asyncio.create_task(sizes_forever()), asyncio.create_task(speculation_forever())]
    if cfg.kv_events_bind:
        tasks.append(asyncio.create_task(subscribe(cfg.kv_events_bind, ingest)))
    if mirror is not None:
        tasks.append(asyncio.create_task(mirror.run()))
    try:
        await stop.wait()
    finally:
        await cancel_and_wait(tasks)
        pub.close(linger=0)
        pull.close(linger=0)


class HubLink:
    """A worker's side of the hub: apply the hub's index changes to this worker's index, send this
    worker's speculative entries to the hub."""

    def __init__(self, directory: str) -> None:
        self.pub_addr, self.pull_addr = _addresses(directory)
        ctx = zmq.asyncio.Context.instance()
        self.push = ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.setsockopt(zmq.SNDHWM, 100_000)
        self.push.connect(self.pull_addr)
        self.sender = OpBatcher(self._send, speculative_only=True)

    def _send(self, message: bytes) -> None:
        with contextlib.suppress(zmq.Again):  # the hub is gone or far behind: speculation is best effort
            self.push.send(message, zmq.NOBLOCK)

    async def follow(self, index: Any, block_sizes: dict[str, int]) -> None:
        sub = zmq.asyncio.Context.instance().socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.RCVHWM, 100_000)
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(self.pub_addr)
        try:
            synced = False
            while True:
                if not synced:  # the subscription takes a moment to reach the hub: ask until it answers
                    self._send(_ENCODE.encode([HELLO]))
                try:
                    message = await asyncio.wait_for(sub.recv(), timeout=None if synced else 0.2)
                except TimeoutError:
                    continue
                synced = True
                for op, pod, key, ttl_s in _DECODE.decode(message):
                    if op == "size":
                        block_sizes[pod] = key
                    else:
                        index.mirror(op, pod, key, ttl_s)
        finally:
            sub.close(linger=0)
            self.push.close(linger=0)


def _worker_main(cfg: GatewayConfig, directory: str, event_loop: str, verbose: bool) -> None:
    """One worker process: a whole gateway on the shared port, its index fed by the hub."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"%(asctime)s %(levelname)s %(name)s [worker {os.getpid()}] %(message)s",
    )
    from aiohttp import web

    from headway.gateway.app import SERVE_OPTIONS, Gateway

    if event_loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    gw = Gateway(cfg, hub=HubLink(directory))

    async def serve() -> None:
        """Until SIGTERM or SIGINT, also one that comes while the app is still starting (the supervisor
        stopping a worker it just replaced): aiohttp's run_app would then fail with "Event loop stopped
        before Future completed"."""
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        runner = web.AppRunner(gw.app(), **SERVE_OPTIONS)
        await runner.setup()
        try:
            await web.TCPSite(runner, cfg.host, cfg.port, reuse_port=True).start()
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(serve())


def serve_workers(
    cfg: GatewayConfig, *, event_loop: str, verbose: bool, check: Callable[[GatewayConfig], object]
) -> None:
    """The hub and its workers, until SIGTERM or SIGINT; a worker that dies is started again. `check`
    builds a gateway from the settings once, here, so that a mistake fails once rather than in a loop of
    restarting workers."""
    directory = tempfile.mkdtemp(prefix="headway-gateway-")
    metrics_dir = os.path.join(directory, "metrics")
    os.mkdir(metrics_dir)
    os.environ[METRICS_DIR_ENV] = metrics_dir  # before prometheus_client is imported, here and in workers
    try:
        check(cfg)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    per_worker = cfg.model_copy(update={"max_in_flight": max(1, -(-cfg.max_in_flight // cfg.workers))})
    spawn = multiprocessing.get_context("spawn")

    def start() -> multiprocessing.process.BaseProcess:
        p = spawn.Process(target=_worker_main, args=(per_worker, directory, event_loop, verbose), daemon=True)
        p.start()
        return p

    async def main() -> None:
        from prometheus_client import multiprocess

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        hub = asyncio.create_task(run_hub(cfg, directory, stop))
        workers = [start() for _ in range(cfg.workers)]
        log.info("gateway: %d workers on %s:%d, hub at %s", cfg.workers, cfg.host, cfg.port, directory)
        try:
            while not stop.is_set():
                for i, p in enumerate(workers):
                    if not p.is_alive():
                        log.warning("worker %s exited with %s; starting another", p.pid, p.exitcode)
                        multiprocess.mark_process_dead(p.pid, metrics_dir)
                        workers[i] = start()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RESTART_BACKOFF_S)
        finally:
            for p in workers:
                p.terminate()
            for p in workers:
                p.join(timeout=10)
                if p.is_alive():
                    p.kill()
            await hub

    try:
        asyncio.run(main())
    finally:
        shutil.rmtree(directory, ignore_errors=True)
