"""The contracts of routing plugins: a request's routing view, and the Filter / Scorer protocols."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from headway.gateway.endpoints import Endpoint
from headway.kvcache.keys import block_keys, root_key


@dataclass
class RoutingRequest:
    model: str
    tokens: list[int]
    text: str = ""
    """The prompt as text (chat: the messages' contents, one per line), for routers that hash characters."""
    first_user_text: str = ""
    """The first user message (completions: the prompt), what session-keyed routers hash."""
    _keys: dict[int, list[int]] = field(default_factory=dict)
    shared_matches: dict[int, dict[str, int]] = field(default_factory=dict)
    """Per block size, cached-prefix blocks per pod read from the shared (Redis) index before scoring."""
    cached_tokens: dict[str, int] = field(default_factory=dict)
    """Per endpoint id, prompt tokens the prefix scorer expects it to hold (what it will not recompute)."""

    def uncached_tokens(self, endpoint_id: str) -> int:
        """At least one token: an engine always recomputes the prompt's last token."""
        return max(min(1, len(self.tokens)), len(self.tokens) - self.cached_tokens.get(endpoint_id, 0))

    def keys(self, block_size: int) -> list[int]:
        """Block keys of the prompt for one block size, computed once per size."""
        keys = self._keys.get(block_size)
        if keys is None:
            keys = self._keys[block_size] = block_keys(self.tokens, block_size, root_key(self.model))
        return keys


class Filter(Protocol):
    def filter(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> list[Endpoint]: ...


class Scorer(Protocol):
    def score(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> dict[str, float]:
        """A score in [0, 1] per endpoint id; higher is better."""
        ...
