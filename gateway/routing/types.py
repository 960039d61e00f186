"""The contracts of routing: a request's routing view, the state one decision's plugins hand each other,
the Filter / Scorer / Picker protocols, the Decision, and the Router protocol the gateway drives.

Plugins subclass these protocols to inherit their defaults (no `getattr` look-ups for optional hooks):
`prepare` (I/O before the decision), `provides` / `requires` (what a plugin writes into or reads from the
CycleState; the pipeline refuses an order in which a reader runs before its writer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

from headway.gateway.endpoints import Endpoint
from headway.kvcache.keys import block_keys, root_key

CACHED_TOKENS = "cached-tokens"
"""What the prefix-cache scorer provides: per endpoint, the prompt tokens it expects the engine to hold."""


@dataclass(slots=True)
class RoutingRequest:
    """What routing sees of a request. Plugins read it; none writes into it."""

    model: str
    tokens: list[int]
    text: str = ""
    """The prompt as text (chat: the messages' contents, one per line), for routers that hash characters."""
    first_user_text: str = ""
    """The first user message (completions: the prompt), what session-keyed routers hash."""
    _keys: dict[int, list[int]] = field(default_factory=dict)

    def keys(self, block_size_tokens: int) -> list[int]:
        """Block keys of the prompt for one block size, computed once per size (a memo, not state)."""
        keys = self._keys.get(block_size_tokens)
        if keys is None:
            keys = self._keys[block_size_tokens] = block_keys(self.tokens, block_size_tokens, root_key(self.model))
        return keys


@dataclass(slots=True)
class CycleState:
    """What one decision's plugins hand each other. Each field names its writer; the pipeline runs the
    writer first (Plugin.provides / requires), so no plugin reads a field that is not written yet."""

    cached_tokens: dict[str, int] = field(default_factory=dict)
    """Written by prefix-cache-scorer (`CACHED_TOKENS`): per endpoint id, prompt tokens it holds."""
    shared_blocks: dict[int, dict[str, int]] = field(default_factory=dict)
    """Written by prefix-cache-scorer's prepare: per block size, cached blocks per pod in the shared index."""


def uncached_tokens(request: RoutingRequest, cached_tokens: Mapping[str, int], endpoint_id: str) -> int:
    """Prompt tokens the endpoint must prefill; at least one, since an engine always recomputes the last."""
    n = len(request.tokens)
    return max(min(1, n), n - cached_tokens.get(endpoint_id, 0))


class Plugin(Protocol):
    TYPE: ClassVar[str]
    KIND: ClassVar[str]
    """filter, scorer or picker: where the pipeline puts it."""
    provides: ClassVar[frozenset[str]] = frozenset()
    requires: ClassVar[frozenset[str]] = frozenset()

    async def prepare(self, request: RoutingRequest, endpoints: Sequence[Endpoint], state: CycleState) -> None:
        """I/O the plugin needs before the decision (a shared-index read); none by default."""
        return None


class Filter(Plugin, Protocol):
    KIND: ClassVar[str] = "filter"

    def filter(self, request: RoutingRequest, endpoints: Sequence[Endpoint], state: CycleState) -> list[Endpoint]:
        """The endpoints that may take the request, in the given order."""
        ...


class Scorer(Plugin, Protocol):
    KIND: ClassVar[str] = "scorer"

    def score(self, request: RoutingRequest, endpoints: Sequence[Endpoint], state: CycleState) -> dict[str, float]:
        """A score in [0, 1] per endpoint id; higher is better (the pipeline clamps and weighs it)."""
        ...


class Picker(Plugin, Protocol):
    KIND: ClassVar[str] = "picker"

    def pick(self, endpoints: Sequence[Endpoint], totals: Mapping[str, float]) -> list[Endpoint]:
        """Every candidate, best first (retries take the next); `totals` is the weighted score sum."""
        ...


@dataclass(frozen=True, slots=True)
class Decision:
    ranked: list[Endpoint]
    """Best first; retries take the next one."""
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per endpoint id, each scorer's weighted term (for the debug header)."""
    cached_tokens: Mapping[str, int] = field(default_factory=dict)
    """Per endpoint id, prompt tokens expected cached there (empty when no prefix scorer ran)."""


@runtime_checkable
class Router(Protocol):
    """What the gateway drives: a pipeline built from a profile, or a custom router's own code.

    A custom router subclasses this and implements `decide`; the rest has defaults."""

    speculative: ClassVar[bool] = True
    """False: the gateway writes no speculative KV-index entries for this router's requests, so a router
    that reads the index sees the engines' events only."""

    def decide(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> Decision:
        """Rank the endpoints; synchronous, no I/O."""
        ...

    async def route(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> Decision:
        """What the gateway calls: any I/O first, then the decision. Default: decide at once."""
        return self.decide(request, endpoints)

    def routed(self, request: RoutingRequest, endpoint: Endpoint) -> None:
        """Told which endpoint took the request (for routers that learn from their own choices)."""
        return None
