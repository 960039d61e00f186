"""A router built from a profile: filters in order → weighted scorers → one picker.

The pipeline owns the order: a plugin that `requires` something (the prefix scorer's cached tokens)
must come after the plugin that `provides` it, or the profile is refused at build time. Each decision
gets a fresh CycleState through which plugins hand each other results; none writes into the request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from headway.gateway.endpoints import Endpoint
from headway.gateway.routing.deps import PluginDeps
from headway.gateway.routing.profiles import Profile
from headway.gateway.routing.registry import ProfileError, build_plugin
from headway.gateway.routing.types import CycleState, Decision, Filter, Picker, Plugin, Router, RoutingRequest, Scorer


@dataclass(frozen=True, slots=True)
class WeightedScorer:
    name: str
    scorer: Scorer
    weight: float
    """0: the scorer runs only for what a later plugin needs from it, and casts no vote."""


class Pipeline(Router):
    def __init__(self, name: str, filters: Sequence[Filter], scorers: Sequence[WeightedScorer], picker: Picker) -> None:
        self.name, self.filters, self.scorers, self.picker = name, tuple(filters), tuple(scorers), picker
        plugins: list[Plugin] = [*self.filters, *(s.scorer for s in self.scorers), picker]
        self._preparers = tuple(p for p in plugins if type(p).prepare is not Plugin.prepare)

    async def route(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> Decision:
        state = CycleState()
        for p in self._preparers:
            await p.prepare(request, endpoints, state)
        return self.decide(request, endpoints, state)

    def decide(
        self, request: RoutingRequest, endpoints: Sequence[Endpoint], state: CycleState | None = None
    ) -> Decision:
        state = CycleState() if state is None else state
        candidates = list(endpoints)
        for f in self.filters:
            candidates = f.filter(request, candidates, state)
            if not candidates:
                return Decision([])
        terms: dict[str, dict[str, float]] = {e.id: {} for e in candidates}
        totals = dict.fromkeys(terms, 0.0)
        for ws in self.scorers:
            scores = ws.scorer.score(request, candidates, state)
            if not ws.weight:
                continue
            for eid, s in scores.items():
                if eid in totals:
                    term = ws.weight * (0.0 if s <= 0.0 else 1.0 if s >= 1.0 else s)
                    terms[eid][ws.name] = term
                    totals[eid] += term
        return Decision(self.picker.pick(candidates, totals), terms, state.cached_tokens)


def build_router(name: str, profile: Profile, deps: PluginDeps) -> Pipeline:
    """The pipeline for a profile. Errors name the router and the plugin's position, so a profile file
    or a ModelPool with a mistake fails with one line that says where."""
    filters: list[Filter] = []
    scorers: list[WeightedScorer] = []
    pickers: list[Picker] = []
    provided: set[str] = set()
    names: set[str] = set()
    built: list[tuple[str, Plugin, float]] = []
    for i, ref in enumerate(profile):
        where = f"router {name!r} plugin {i} ({ref.plugin})"
        plugin = build_plugin(ref.plugin, ref.params, deps, where=where)
        missing = plugin.requires - provided
        if missing:
            raise ProfileError(f"{where}: needs {', '.join(sorted(missing))} from a plugin listed before it")
        provided |= plugin.provides
        term = ref.name or ref.plugin
        if term in names:
            raise ProfileError(f"{where}: the name {term!r} is used twice; give one a `name`")
        names.add(term)
        built.append((term, plugin, ref.weight))
    needed: set[str] = set()  # what a voting plugin needs keeps its provider, even at weight 0
    for term, plugin, weight in reversed(built):
        if plugin.KIND == "scorer" and not weight and not (plugin.provides & needed):
            continue
        needed |= plugin.requires
        if plugin.KIND == "filter":
            filters.append(plugin)  # type: ignore[arg-type]
        elif plugin.KIND == "scorer":
            scorers.append(WeightedScorer(term, plugin, weight))  # type: ignore[arg-type]
        else:
            pickers.append(plugin)  # type: ignore[arg-type]
    if len(pickers) != 1:
        raise ProfileError(f"router {name!r}: needs exactly one picker, has {len(pickers)}")
    return Pipeline(name, filters[::-1], scorers[::-1], pickers[0])
