"""Rank by the weighted score sum, highest first; ties broken at random (the RNG is injectable)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from pydantic import BaseModel

from headway.gateway.endpoints import Endpoint
from headway.gateway.routing.deps import PluginDeps
from headway.gateway.routing.types import Picker

TYPE = "max-score-picker"


class Params(BaseModel, frozen=True, extra="forbid"):
    pass


class MaxScorePicker(Picker):
    TYPE = TYPE

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, endpoints: Sequence[Endpoint], totals: Mapping[str, float]) -> list[Endpoint]:
        rnd = self.rng.random
        keyed = sorted(((totals.get(e.id, 0.0), rnd(), e) for e in endpoints), key=lambda x: (x[0], x[1]), reverse=True)
        return [e for _, _, e in keyed]


def make(params: Params, deps: PluginDeps) -> MaxScorePicker:
    return MaxScorePicker(deps.rng)
