"""headway's own block keys: a chained 64-bit hash over each full block's token ids.

key_0 = H(root, tokens[0:B]), key_i = H(key_{i-1}, tokens[iB:(i+1)B]), root = H(model or LoRA name).
The engines' own hashes (random per process unless PYTHONHASHSEED is pinned) are never compared across
pods; they are kept only to apply BlockRemoved. So keys agree across engines, gateways and restarts
with no PYTHONHASHSEED, and a LoRA adapter's blocks never match the base model's.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence

_DIGEST = 8


def _h(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=_DIGEST).digest(), "little")


def root_key(model: str, lora_name: str | None = None) -> int:
    return _h(b"headway-kv-root\x00" + (lora_name or model).encode())


def chain(parent: int, tokens: Sequence[int]) -> int:
    return _h(parent.to_bytes(_DIGEST, "little") + array("I", tokens).tobytes())


def block_keys(tokens: Sequence[int], block_size: int, root: int, *, limit_blocks: int | None = None) -> list[int]:
    """Keys of every full block of `tokens` (a trailing partial block has no key, as in vLLM). The same
    values as chaining `chain` block by block; the token ids are packed once, not once per block, since
    this runs for every routed prompt (an 8k-token prompt is 512 blocks)."""
    n = len(tokens) // block_size
    if limit_blocks is not None:
        n = min(n, limit_blocks)
    if n <= 0:
        return []
    step = block_size * 4  # bytes per block: array("I") packs 4 bytes per token id
    data = array("I", tokens[: n * block_size]).tobytes()
    blake, from_bytes = hashlib.blake2b, int.from_bytes
    keys, parent = [], root
    for offset in range(0, n * step, step):
        digest = blake(parent.to_bytes(_DIGEST, "little") + data[offset : offset + step], digest_size=_DIGEST)
        parent = from_bytes(digest.digest(), "little")
        keys.append(parent)
    return keys
