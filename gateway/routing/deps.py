"""What the gateway hands the plugins it builds: its indexes, block sizes, limits and RNG.

Plugins take only what they use from it; a profile cannot reach anything else of the gateway."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from headway.gateway.routing.blocks import BlockSizes
from headway.kvcache.index import InMemoryIndex
from headway.kvcache.redis_index import RedisLookup


@dataclass(frozen=True)
class PluginDeps:
    index: InMemoryIndex = field(default_factory=InMemoryIndex)
    """The KV index fed by the engines' events (plus short-lived speculative entries)."""
    history: InMemoryIndex = field(default_factory=InMemoryIndex)
    """This gateway's routing history (what approx-prefix scores)."""
    block_sizes: BlockSizes = field(default_factory=BlockSizes)
    stale_after_s: float = 2.0
    load_bound: float = 1.5
    rng: random.Random = field(default_factory=random.Random)
    shared: RedisLookup | None = None
    """The shared (Redis) index other gateway replicas write, when configured."""
    observe_lookup_s: Callable[[float], None] | None = None
