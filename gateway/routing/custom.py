"""Routers loaded at start-up from Python code, next to the presets: `--router NAME=module:factory` or
`--router NAME=/path/to/file.py:factory`.

This is how an operator tries a routing policy of their own (or how benchmarks run other systems'
published policies behind the very same proxy, so only the decision differs). A router answers
`decide(request, endpoints) -> Decision`, like a preset. Optional attributes:
- `routed(request, endpoint)`: told which endpoint took the request (for routers that learn from their
  own choices, like a routing-history prefix table);
- `speculative = False`: the gateway must not write speculative KV-index entries for its requests, so
  a router that reads the index sees the engines' events only.
"""

from __future__ import annotations

import importlib
import importlib.util
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from headway.gateway.endpoints import Endpoint
from headway.gateway.routing.pipeline import Decision
from headway.gateway.routing.types import RoutingRequest
from headway.kvcache.index import InMemoryIndex


class Router(Protocol):
    def decide(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> Decision: ...


@dataclass(frozen=True)
class RouterContext:
    """What the gateway shares with a router: the KV index fed by engine events, per-endpoint block sizes
    (from the events and the engines' metrics), the staleness limit of endpoint metrics, and a seeded RNG."""

    index: InMemoryIndex
    block_sizes: Mapping[str, int]
    stale_after_s: float
    rng: random.Random


RouterFactory = Callable[[RouterContext], Router]


def parse_router_specs(specs: Sequence[str], reserved: Sequence[str]) -> dict[str, RouterFactory]:
    """`NAME=module:factory` or `NAME=file.py:factory` → factories; every mistake is a ValueError that names
    the spec, so the CLI can print one line."""
    out: dict[str, RouterFactory] = {}
    for spec in specs:
        name, sep, target = spec.partition("=")
        if not sep or not name or ":" not in target:
            raise ValueError(f"--router {spec!r}: expected NAME=module:factory or NAME=path.py:factory")
        if name in reserved or name in out:
            raise ValueError(f"--router {spec!r}: the name {name!r} is already taken")
        where, _, attr = target.rpartition(":")
        module = _load(where, spec)
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise ValueError(f"--router {spec!r}: {where} has no callable {attr!r}")
        out[name] = factory
    return out


def _load(where: str, spec: str) -> Any:
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ValueError(f"--router {spec!r}: no file {where}")
        mod_spec = importlib.util.spec_from_file_location(f"headway_router_{path.stem}", path)
        assert mod_spec is not None and mod_spec.loader is not None
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(where)
    except ImportError as e:
        raise ValueError(f"--router {spec!r}: cannot import {where}: {e}") from None
