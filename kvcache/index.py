"""The in-memory KV-cache index: which pod holds which block key, bounded, with engine-hash removal.

- `store` maps the engine's hashes of newly cached blocks to our keys (computed from the event's token
  ids, chained to the key of the event's parent block) and records the pod under each key.
- `remove` applies BlockRemoved through that engine-hash map; `clear_pod` applies AllBlocksCleared
  or a pod's departure.
- `speculate` records a just-routed request's keys for the chosen pod with a short expiry, covering the
  gap until the engine's own events arrive.
- `longest_prefix` walks a request's keys from the first block and returns, per pod, how many leading
  blocks it holds (the walk stops for a pod at its first miss: a prefix cache only serves prefixes).
Bounded by `max_keys` with least-recently-used eviction of whole keys.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from headway.kvcache.keys import chain, root_key

_EXACT = 0.0  # expiry marker of an entry reported by the engine itself (never expires)


class IndexListener(Protocol):
    """Told of every change, e.g. to mirror the index into Redis for other gateway replicas."""

    def added(self, pod: str, key: int, ttl_s: float) -> None:
        """ttl_s 0: reported by the engine (no expiry); > 0: speculative."""

    def removed(self, pod: str, key: int) -> None: ...
    def cleared(self, pod: str) -> None: ...


class InMemoryIndex:
    def __init__(
        self,
        *,
        max_keys: int = 2_000_000,
        clock: Callable[[], float] = time.monotonic,
        listener: IndexListener | None = None,
    ) -> None:
        self.max_keys = max_keys
        self._clock = clock
        self.listener = listener
        self._holders: OrderedDict[int, dict[str, float]] = OrderedDict()
        self._by_engine: dict[tuple[str, int], int] = {}
        self._pod_keys: dict[str, set[int]] = {}
        self.evicted_keys = 0

    def __len__(self) -> int:
        return len(self._holders)

    def _put(self, key: int, pod: str, expiry: float) -> None:
        holders = self._holders.get(key)
        if holders is None:
            holders = self._holders[key] = {}
            if len(self._holders) > self.max_keys:
                old, old_holders = self._holders.popitem(last=False)
                for p in old_holders:
                    self._pod_keys.get(p, set()).discard(old)
                    if self.listener:
                        self.listener.removed(p, old)
                self.evicted_keys += 1
        else:
            self._holders.move_to_end(key)
        if expiry == _EXACT or holders.get(pod, 1.0) != _EXACT:
            holders[pod] = expiry
            if self.listener:
                self.listener.added(pod, key, 0.0 if expiry == _EXACT else max(0.001, expiry - self._clock()))
        self._pod_keys.setdefault(pod, set()).add(key)

    def store(
        self,
        pod: str,
        model: str,
        engine_hashes: Sequence[int | bytes],
        parent_engine_hash: int | bytes | None,
        token_ids: Sequence[int],
        block_size: int,
        lora_name: str | None = None,
    ) -> int:
        """Apply one BlockStored; returns the number of blocks indexed (0 if its parent is unknown)."""
        if parent_engine_hash is None:
            parent = root_key(model, lora_name)
        else:
            known = self._by_engine.get((pod, _as_int(parent_engine_hash)))
            if known is None:
                return 0  # a chain we never saw the start of: its keys cannot be computed
            parent = known
        n = min(len(engine_hashes), len(token_ids) // block_size)
        for i in range(n):
            parent = chain(parent, token_ids[i * block_size : (i + 1) * block_size])
            self._by_engine[(pod, _as_int(engine_hashes[i]))] = parent
            self._put(parent, pod, _EXACT)
        return n

    def remove(self, pod: str, engine_hashes: Iterable[int | bytes]) -> int:
        removed = 0
        for h in engine_hashes:
            key = self._by_engine.pop((pod, _as_int(h)), None)
            if key is None:
                continue
            holders = self._holders.get(key)
            if holders is not None and holders.pop(pod, None) is not None:
                removed += 1
                if self.listener:
                    self.listener.removed(pod, key)
                if not holders:
                    del self._holders[key]
            self._pod_keys.get(pod, set()).discard(key)
        return removed

    def clear_pod(self, pod: str) -> int:
        keys = self._pod_keys.pop(pod, set())
        for key in keys:
            holders = self._holders.get(key)
            if holders is not None:
                holders.pop(pod, None)
                if not holders:
                    del self._holders[key]
        self._by_engine = {k: v for k, v in self._by_engine.items() if k[0] != pod}
        if self.listener:
            self.listener.cleared(pod)
        return len(keys)

    def mirror(self, op: str, pod: str, key: int, ttl_s: float) -> None:
        """Apply a change another process's index reported through its listener (`add` with ttl 0 for an
        engine-reported block, `del`, `clear`), without telling this index's own listener: the change
        is not this process's to spread."""
        listener, self.listener = self.listener, None
        try:
            if op == "add":
                self._put(key, pod, _EXACT if ttl_s == 0 else self._clock() + ttl_s)
            elif op == "del":
                holders = self._holders.get(key)
                if holders is not None and holders.pop(pod, None) is not None and not holders:
                    del self._holders[key]
                self._pod_keys.get(pod, set()).discard(key)
            elif op == "clear":
                self.clear_pod(pod)
        finally:
            self.listener = listener

    def speculate(self, pod: str, keys: Sequence[int], ttl_s: float) -> None:
        expiry = self._clock() + ttl_s
        for key in keys:
            self._put(key, pod, expiry)

    def longest_prefix(self, keys: Sequence[int], pods: Iterable[str]) -> dict[str, int]:
        now = self._clock()
        live = list(dict.fromkeys(pods))
        matched = dict.fromkeys(live, 0)
        get, touch = self._holders.get, self._holders.move_to_end
        depth = 0  # blocks every pod still in `live` holds
        for key in keys:
            holders = get(key)
            if not holders:
                break
            still = [p for p in live if (e := holders.get(p)) is not None and (e == _EXACT or e > now)]
            if len(still) != len(live):
                for p in live:
                    matched[p] = depth  # dropped pods keep the depth they reached; survivors are set below
                live = still
                if not live:
                    break
            depth += 1
            touch(key)
        for p in live:
            matched[p] = depth
        return matched

    def entries(self) -> list[tuple[int, dict[str, float]]]:
        """A snapshot of every key and its holders (expiry 0.0: engine-reported), for a full resync."""
        return [(k, dict(h)) for k, h in self._holders.items()]

    def pods(self) -> set[str]:
        return {p for p, keys in self._pod_keys.items() if keys}


def _as_int(h: int | bytes) -> int:
    return h if isinstance(h, int) else int.from_bytes(h[-8:], "big")
