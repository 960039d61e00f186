"""The one list of in-tree routing plugins, by type name.

Explicit, not registration by import side effect: this list is what a profile can name, and an unknown
type fails at start-up with the known ones listed. Each plugin module exposes `TYPE`, a `Params` model
(extra fields forbidden), its class, and `make(params, deps)`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from pydantic import ValidationError

from headway.gateway.routing.deps import PluginDeps
from headway.gateway.routing.filters import load_bound, routable
from headway.gateway.routing.pickers import max_score, random, round_robin
from headway.gateway.routing.scorers import (
    cost,
    in_flight,
    kv_utilization,
    prefill_backlog,
    prefix_cache,
    queue_depth,
)
from headway.gateway.routing.types import Plugin

_MODULES: tuple[ModuleType, ...] = (
    routable,
    load_bound,
    prefix_cache,
    queue_depth,
    kv_utilization,
    in_flight,
    prefill_backlog,
    cost,
    max_score,
    round_robin,
    random,
)
PLUGINS: dict[str, ModuleType] = {m.TYPE: m for m in _MODULES}


class ProfileError(ValueError):
    """A routing profile names an unknown plugin, gives it bad parameters, or orders plugins wrongly."""


def build_plugin(plugin_type: str, params: dict[str, Any], deps: PluginDeps, *, where: str) -> Plugin:
    module = PLUGINS.get(plugin_type)
    if module is None:
        raise ProfileError(f"{where}: unknown plugin {plugin_type!r}; known: {', '.join(sorted(PLUGINS))}")
    try:
        parsed = module.Params.model_validate(params)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ProfileError(f"{where}: {plugin_type} params.{field}: {first['msg']}") from None
    return module.make(parsed, deps)
