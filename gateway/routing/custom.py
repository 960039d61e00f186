"""Routers loaded at start-up from Python code, next to the presets and profiles:
`--router NAME=module:factory` or `--router NAME=/path/to/file.py:factory`.

This is how an operator tries a routing policy of their own (or how benchmarks run other systems'
published policies behind the very same proxy, so only the decision differs). The factory takes a
`RouterContext` and returns a `Router` subclass: it implements `decide`, and may override `route`
(I/O before deciding), `routed` (told which endpoint took the request) and `speculative` (False: no
speculative KV-index entries for its requests). A router may also compose in-tree plugins with
`context.build(profile)`, which resolves through the same registry as the presets.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headway.gateway.routing.deps import PluginDeps
from headway.gateway.routing.pipeline import Pipeline, build_router
from headway.gateway.routing.profiles import Profile
from headway.gateway.routing.types import Router


@dataclass(frozen=True)
class RouterContext(PluginDeps):
    """What the gateway shares with a custom router: the plugins' dependencies (KV index, block sizes,
    staleness limit, seeded RNG, …) and `build`, to make a pipeline from a profile."""

    def build(self, name: str, profile: Profile) -> Pipeline:
        return build_router(name, profile, self)


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
        out[name] = _checked(factory, spec)
    return out


def _checked(factory: Callable[[RouterContext], Any], spec: str) -> RouterFactory:
    """The factory, refusing at build time anything that is not a Router (its hooks would be missing)."""

    def make(context: RouterContext) -> Router:
        router = factory(context)
        if not isinstance(router, Router):
            raise ValueError(
                f"--router {spec!r}: the factory returned a {type(router).__name__}, not a Router "
                "(subclass headway.gateway.routing.types.Router and implement decide)"
            )
        return router

    return make


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
