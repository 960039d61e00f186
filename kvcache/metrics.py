"""The index's Prometheus metrics (names defined in headway.api.labels)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from headway.api.labels import (
    METRIC_KVCACHE_BLOCKS,
    METRIC_KVCACHE_DECODE_ERRORS,
    METRIC_KVCACHE_EVENTS,
    METRIC_KVCACHE_GAPS,
    METRIC_KVCACHE_KEYS,
    METRIC_KVCACHE_LAG,
    METRIC_KVCACHE_LOOKUP,
    METRIC_KVCACHE_REPLAYS,
)


class KvCacheMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(METRIC_KVCACHE_EVENTS, "KV events applied, by type.", ("type",), registry=registry)
        self.blocks = Counter(METRIC_KVCACHE_BLOCKS, "Blocks indexed from BlockStored events.", registry=registry)
        self.gaps = Counter(METRIC_KVCACHE_GAPS, "Event batches missed (sequence gaps).", registry=registry)
        self.decode_errors = Counter(METRIC_KVCACHE_DECODE_ERRORS, "Undecodable event payloads.", registry=registry)
        self.lag = Histogram(
            METRIC_KVCACHE_LAG,
            "Engine event timestamp to index update.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        )
        self.replays = Counter(
            METRIC_KVCACHE_REPLAYS, "Replays asked of an engine after a sequence gap.", ("outcome",), registry=registry
        )
        self.keys = Gauge(
            METRIC_KVCACHE_KEYS, "Block keys held by the index.", registry=registry, multiprocess_mode="livemax"
        )
        self.lookup = Histogram(
            METRIC_KVCACHE_LOOKUP,
            "Longest-prefix lookup time.",
            buckets=(1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01),
            registry=registry,
        )
