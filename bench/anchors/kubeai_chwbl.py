"""KubeAI's PrefixHash load balancing: consistent hashing with bounded loads (CHWBL).

Source: kubeai `internal/loadbalancer/balance_chwbl.go`, `group.go` and `api/openai/v1/chat_completions.go`
(prefix = the first 100 characters of the first user message), as summarised in headway's reference
notes (anchors.md §2.2): a ring with 256 virtual nodes per endpoint, walk clockwise from the key's hash
to the first endpoint whose in-flight load ≤ 1.25 · (total in-flight + 1) / N, else the first endpoint.

KubeAI hashes with xxhash; any well-mixed 64-bit hash gives the same distribution, so blake2b (standard
library) stands in. The load is this proxy's in-flight count per endpoint, as in KubeAI's load balancer.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence

from headway.gateway.endpoints import Endpoint
from headway.gateway.routing.custom import RouterContext
from headway.gateway.routing.types import Decision, Router, RoutingRequest

PREFIX_CHARS = 100
REPLICATION = 256
LOAD_FACTOR = 1.25


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


class Chwbl(Router):
    def __init__(self, ctx: RouterContext) -> None:
        self.ctx = ctx
        self._ring: list[tuple[int, str]] = []
        self._members: frozenset[str] = frozenset()

    def _ring_for(self, endpoints: Sequence[Endpoint]) -> list[tuple[int, str]]:
        members = frozenset(e.id for e in endpoints)
        if members != self._members:
            self._ring = sorted((_hash(f"{eid}{i}"), eid) for eid in members for i in range(REPLICATION))
            self._members = members
        return self._ring

    def decide(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> Decision:
        if not endpoints:
            return Decision([])
        by_id = {e.id: e for e in endpoints}
        ring = self._ring_for(endpoints)
        total = sum(e.in_flight for e in endpoints)
        bound = LOAD_FACTOR * (total + 1) / len(endpoints)
        start = bisect.bisect_left(ring, (_hash(request.first_user_text[:PREFIX_CHARS]), ""))
        order: list[Endpoint] = []
        seen: set[str] = set()
        for i in range(len(ring)):
            eid = ring[(start + i) % len(ring)][1]
            if eid not in seen:
                seen.add(eid)
                order.append(by_id[eid])
        chosen = next((e for e in order if e.in_flight <= bound), order[0])
        return Decision([chosen, *(e for e in order if e is not chosen)])


def make(ctx: RouterContext) -> Chwbl:
    return Chwbl(ctx)
