"""Routing profiles: which plugins a router runs, in which order, with which weights.

Every router the gateway builds resolves through a profile: the presets (named by a ModelPool's
`spec.routing.strategy` or `--strategy`, weighted by `spec.routing.weights` / `--weights`), and the
profiles an operator writes in a file (`--profiles`), in the same shape:

    my-profile:
      - {plugin: routable-filter}
      - {plugin: prefix-cache-scorer, weight: 5}
      - {plugin: queue-depth-scorer, weight: 1}
      - {plugin: max-score-picker}

A weight of 0 removes a scorer's vote; it still runs when a later plugin needs what it provides.
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, Field

from headway.api.modelpool import RoutingStrategy, ScorerWeights

PRESETS: tuple[str, ...] = get_args(RoutingStrategy)
"""The preset names, from the ModelPool schema (the CRD, the CLI and the chart all read this list)."""


class PluginRef(BaseModel, frozen=True, extra="forbid"):
    plugin: str = Field(min_length=1, description="A registered plugin type, e.g. prefix-cache-scorer.")
    name: str | None = Field(None, description="Name of its term in scores and the debug header (default: type).")
    weight: float = Field(1.0, ge=0, le=100, description="Scorers: the weight of the score (0: no vote).")
    params: dict[str, Any] = Field(default_factory=dict, description="The plugin's own parameters.")


Profile = tuple[PluginRef, ...]


def _ref(plugin: str, weight: float = 1.0, **params: Any) -> PluginRef:
    return PluginRef(plugin=plugin, weight=weight, params=params)


def preset(strategy: str, weights: ScorerWeights) -> Profile:
    """The preset's profile under these weights; an unknown name fails naming the known ones."""
    routable = _ref("routable-filter")
    if strategy == "kv-aware":
        return (
            routable,
            _ref("load-bound-filter"),
            _ref("prefix-cache-scorer", weights.prefix),
            _ref("queue-depth-scorer", weights.queue),
            _ref("kv-utilization-scorer", weights.kv_utilization),
            _ref("in-flight-scorer", weights.in_flight),
            _ref("prefill-backlog-scorer", weights.prefill_backlog),
            _ref("cost-scorer", weights.cost),
            _ref("max-score-picker"),
        )
    if strategy == "approx-prefix":
        approx = weights.prefix if weights.approx_prefix is None else weights.approx_prefix
        return (
            routable,
            _ref("load-bound-filter"),
            _ref("prefix-cache-scorer", approx, source="history"),
            _ref("queue-depth-scorer", weights.queue),
            _ref("in-flight-scorer", weights.in_flight),
            _ref("cost-scorer", weights.cost),
            _ref("max-score-picker"),
        )
    if strategy == "least-request":
        return (routable, _ref("in-flight-scorer"), _ref("max-score-picker"))
    if strategy == "round-robin":
        return (routable, _ref("round-robin-picker"))
    if strategy == "random":
        return (routable, _ref("random-picker"))
    raise ValueError(f"unknown routing strategy {strategy!r}; known: {', '.join(PRESETS)}")
