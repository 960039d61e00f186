"""AIBrix's `prefix-cache` routing algorithm, with the thresholds of its gateway manifests.

Source: aibrix `pkg/plugins/gateway/algorithms/prefix_cache.go`, `pkg/utils/prefixcacheindexer/hash.go`
and `config/gateway/gateway-plugin/gateway-plugin.yaml` (AIBRIX_PREFIX_CACHE_BLOCK_SIZE 128,
IMBALANCE_ABS_COUNT 16, standard-deviation factor 2), as summarised in headway's reference notes
(anchors.md §1.2):
1. tokenize with the default `character` tokenizer (UTF-8 bytes) and cut 128-byte blocks (tail dropped);
2. chain-hash the blocks (xxhash64 there; blake2b here — same role, standard library);
3. walk the LRU table (200,000 blocks, 20-minute idle eviction) from block 0 to the first miss; a pod's
   match is (i+1)/n for the last block i it holds in that walk;
4. if max − min running requests > 16, route to the least-loaded pod;
5. else sort by match descending then running ascending and take the first pod whose running count is
   ≤ mean + 2σ, else the least-loaded pod;
6. record the prompt's blocks for the chosen pod right away (optimistic, no engine events).
Running requests are counted at this proxy, as AIBrix's gateway does.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections import OrderedDict
from collections.abc import Sequence

from headway.gateway.endpoints import Endpoint
from headway.gateway.routing.custom import RouterContext
from headway.gateway.routing.types import Decision, Router, RoutingRequest

BLOCK_BYTES = 128
IMBALANCE_ABS_COUNT = 16
STD_DEV_FACTOR = 2.0
MAX_BLOCKS = 200_000
IDLE_EVICT_S = 20 * 60


def block_hashes(text: str) -> list[int]:
    data = text.encode()
    out, parent = [], b""
    for i in range(0, len(data) - BLOCK_BYTES + 1, BLOCK_BYTES):
        parent = hashlib.blake2b(parent + data[i : i + BLOCK_BYTES], digest_size=8).digest()
        out.append(int.from_bytes(parent, "little"))
    return out


class AibrixPrefixCache(Router):
    def __init__(self, ctx: RouterContext) -> None:
        self.ctx = ctx
        self.table: OrderedDict[int, dict[str, float]] = OrderedDict()

    def _least_loaded(self, endpoints: Sequence[Endpoint]) -> Endpoint:
        low = min(e.in_flight for e in endpoints)
        return self.ctx.rng.choice([e for e in endpoints if e.in_flight == low])

    def decide(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> Decision:
        if not endpoints:
            return Decision([])
        running = [e.in_flight for e in endpoints]
        if max(running) - min(running) > IMBALANCE_ABS_COUNT:
            chosen = self._least_loaded(endpoints)
        else:
            match = self._match(block_hashes(request.text), {e.id for e in endpoints})
            mean, sd = statistics.fmean(running), statistics.pstdev(running)
            ranked = sorted(endpoints, key=lambda e: (-match.get(e.id, 0.0), e.in_flight))
            ok = [e for e in ranked if match.get(e.id, 0.0) > 0 and e.in_flight <= mean + STD_DEV_FACTOR * sd]
            chosen = ok[0] if ok else self._least_loaded(endpoints)
        return Decision([chosen, *(e for e in endpoints if e is not chosen)])

    def _match(self, hashes: list[int], pods: set[str]) -> dict[str, float]:
        now, match = time.monotonic(), {}
        for i, h in enumerate(hashes):
            holders = self.table.get(h)
            if not holders:
                break
            alive = [p for p, seen in holders.items() if p in pods and now - seen <= IDLE_EVICT_S]
            if not alive:
                break
            for p in alive:
                match[p] = (i + 1) / len(hashes)
        return match

    def routed(self, request: RoutingRequest, endpoint: Endpoint) -> None:
        now = time.monotonic()
        for h in block_hashes(request.text):
            self.table.setdefault(h, {})[endpoint.id] = now
            self.table.move_to_end(h)
        while len(self.table) > MAX_BLOCKS:
            self.table.popitem(last=False)


def make(ctx: RouterContext) -> AibrixPrefixCache:
    return AibrixPrefixCache(ctx)
