"""The event-based oracle: what a router that knows every engine's cache exactly could have hit.

An `EventTap` receives every engine's KV events during a router's run (from the same fan-out the router
reads, or directly where the router reads none) and indexes them as headway's indexer does. At each
request's send time the load generator asks it for the longest prefix any engine holds: per request, the
cached tokens the best-placed engine would have reused. Summed over a stage, over the prompt tokens, that
is the oracle hit rate under this run's own cache contents (evictions, restarts and all), the bound the
router's measured hit rate is compared with. It needs no capacity model: the engines report what they hold.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence

import zmq
from prometheus_client import CollectorRegistry

from headway.devenv import procs
from headway.kvcache.index import InMemoryIndex
from headway.kvcache.metrics import KvCacheMetrics
from headway.kvcache.subscriber import KvEventIngest


class EventTap:
    def __init__(self, model: str = "tiny") -> None:
        self.model = model
        self.bind = f"tcp://127.0.0.1:{procs.free_port()}"
        """Engines (or a fan-out) publish here, on headway's `kv@<pod>@<model>` topics."""
        self.index = InMemoryIndex()
        self.ingest = KvEventIngest(self.index, KvCacheMetrics(CollectorRegistry()))
        self._lock = threading.Lock()
        self._dials: list[tuple[str, bytes]] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def dial(self, endpoint: str, pod: str) -> None:
        """Also read a bound publisher carrying one engine's events on some other topic (a relay for a
        router that dials its engines), as that engine's. Before start()."""
        self._dials.append((endpoint, f"kv@{pod}@{self.model}".encode()))

    def start(self) -> EventTap:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(5)
        return self

    def _run(self, ready: threading.Event) -> None:
        ctx = zmq.Context.instance()
        sockets: dict[zmq.Socket, bytes | None] = {}
        bound = ctx.socket(zmq.SUB)
        bound.setsockopt(zmq.SUBSCRIBE, b"")
        bound.bind(self.bind)
        sockets[bound] = None
        for endpoint, topic in self._dials:
            s = ctx.socket(zmq.SUB)
            s.setsockopt(zmq.SUBSCRIBE, b"")
            s.connect(endpoint)
            sockets[s] = topic
        poller = zmq.Poller()
        for s in sockets:
            poller.register(s, zmq.POLLIN)
        ready.set()
        try:
            while not self._stop.is_set():
                for s, _ in poller.poll(200):
                    frames = s.recv_multipart()
                    if len(frames) < 3:
                        continue
                    topic = sockets[s] or frames[0]
                    with self._lock:
                        self.ingest.apply(topic, frames[-2], frames[-1])
        finally:
            for s in sockets:
                s.close(linger=0)

    def best_cached_blocks(self, keys: Sequence[int]) -> int:
        """The longest run of these block keys, from the first, that one engine holds now."""
        if not keys:
            return 0
        with self._lock:
            matched = self.index.longest_prefix(keys, self.index.pods())
        return max(matched.values(), default=0)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            with contextlib.suppress(RuntimeError):
                self._thread.join(2)
