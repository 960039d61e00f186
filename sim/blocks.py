"""Paged KV blocks with prefix caching, as vLLM V1's block pool does it.

- A block is cached once it is full; its key chains the parent block's key, the block's token ids and
  the extra keys (the LoRA name), so a key names a whole prefix, never a lone block.
- Freed blocks go to the tail of one free queue (a request's blocks in reverse, so its last blocks are
  evicted first); allocation takes from the head and evicts whatever cached key that block held. A
  cached block that is free can be taken back by a prefix hit until then: that is the LRU.
- Every newly cached run of blocks is reported as one `BlockStored`, every eviction as a `BlockRemoved`
  of one block, in the order they happen.
- Keys chain (parent key, tokens, extra keys) through vLLM's `--prefix-caching-hash-algo`:
  `sha256_cbor` is vLLM's exactly (SHA-256 of the canonical CBOR of that tuple; the conformance tests
  check the keys against real vLLM's), so a router that recomputes vLLM's keys matches the simulator's;
  `sha256` (the default) hashes the same tuple in the simulator's own faster encoding, not vLLM's pickle.
  Events carry the low 64 bits as an unsigned int, like vLLM's default. The first block's parent is the
  hash of PYTHONHASHSEED, or of vLLM's fixed seed when it is unset (vLLM ≥ 0.32 for its cryptographic
  hashes), so engines of one model agree on keys.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Literal

import cbor2

from headway.kvcache.events import AllBlocksCleared, BlockRemoved, BlockStored, Event

_LOW64 = (1 << 64) - 1
HashAlgo = Literal["sha256", "sha256_cbor"]
DEFAULT_NONE_HASH_SEED = "vllm-none-hash"
"""vLLM's seed of the first block's parent when PYTHONHASHSEED is unset (vllm/v1/core/kv_cache_utils.py)."""


def root_key(algo: HashAlgo = "sha256") -> bytes:
    seed = os.environ.get("PYTHONHASHSEED", DEFAULT_NONE_HASH_SEED)
    if algo == "sha256_cbor":
        return hashlib.sha256(cbor2.dumps(seed, canonical=True)).digest()
    return hashlib.sha256(seed.encode()).digest()


def chain_key(parent: bytes, tokens: Sequence[int], extra: tuple[str, ...] | None, algo: HashAlgo = "sha256") -> bytes:
    if algo == "sha256_cbor":
        return hashlib.sha256(cbor2.dumps((parent, tuple(tokens), extra), canonical=True)).digest()
    h = hashlib.sha256(parent)
    h.update(array("I", tokens).tobytes())
    if extra:
        h.update(b"\x00".join(e.encode() for e in extra))
    return h.digest()


def external(key: bytes) -> int:
    """The uint64 form vLLM publishes: the low 64 bits of the key."""
    return int.from_bytes(key[-8:], "big") & _LOW64


class BlockPool:
    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        *,
        enable_caching: bool = True,
        emit: Callable[[Event], None] | None = None,
    ) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_caching = enable_caching
        self._emit = emit or (lambda _e: None)
        self._ref = [0] * num_blocks
        self._key: list[bytes | None] = [None] * num_blocks
        self._cached: dict[bytes, int] = {}
        self._free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(num_blocks))

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of blocks held by requests (cached-but-free blocks count as free, as in vLLM)."""
        return 1.0 - len(self._free) / self.num_blocks

    @property
    def num_cached(self) -> int:
        return len(self._cached)

    def longest_prefix(self, keys: Sequence[bytes]) -> list[int]:
        """Blocks holding the longest cached run of `keys` from the start."""
        hit: list[int] = []
        if not self.enable_caching:
            return hit
        for k in keys:
            b = self._cached.get(k)
            if b is None:
                break
            hit.append(b)
        return hit

    def take(self, blocks: Sequence[int]) -> None:
        """Reference blocks found by a prefix hit (taking them off the free queue if idle)."""
        for b in blocks:
            if self._ref[b] == 0:
                self._free.pop(b, None)
            self._ref[b] += 1

    def allocate(self, n: int) -> list[int] | None:
        """`n` fresh blocks, evicting cached ones from the head of the free queue; None if too few."""
        if n > len(self._free):
            return None
        out = []
        for _ in range(n):
            b, _ = self._free.popitem(last=False)
            key = self._key[b]
            if key is not None:
                self._key[b] = None
                if self._cached.get(key) == b:
                    del self._cached[key]
                    self._emit(BlockRemoved(block_hashes=[external(key)], medium="GPU", group_idx=0))
            self._ref[b] = 1
            out.append(b)
        return out

    def free(self, blocks: Sequence[int]) -> None:
        for b in reversed(blocks):
            self._ref[b] -= 1
            if self._ref[b] == 0:
                self._free[b] = None

    def cache(
        self,
        blocks: Sequence[int],
        keys: Sequence[bytes],
        parent: bytes | None,
        token_ids: Sequence[int],
        lora_name: str | None,
    ) -> None:
        """Mark newly full blocks as cached and report them as one BlockStored."""
        if not self.enable_caching or not blocks:
            return
        for b, k in zip(blocks, keys, strict=True):
            self._key[b] = k
            self._cached.setdefault(k, b)
        self._emit(
            BlockStored(
                block_hashes=[external(k) for k in keys],
                parent_block_hash=external(parent) if parent is not None else None,
                token_ids=list(token_ids),
                block_size=self.block_size,
                lora_id=None,
                medium="GPU",
                lora_name=lora_name,
                extra_keys=[(lora_name,) if lora_name else None for _ in keys],
                group_idx=0,
                kv_cache_spec_kind="full_attention",
            )
        )

    def reset(self) -> bool:
        """Drop every cached key (vLLM's /reset_prefix_cache); refused while blocks are in use."""
        if any(self._ref):
            return False
        self._cached.clear()
        self._key = [None] * self.num_blocks
        self._emit(AllBlocksCleared())
        return True
