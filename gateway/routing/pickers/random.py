"""A uniformly random order of the candidates, ignoring scores (the baseline every router must beat)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from pydantic import BaseModel

from headway.gateway.endpoints import Endpoint
from headway.gateway.routing.deps import PluginDeps
from headway.gateway.routing.types import Picker

TYPE = "random-picker"


class Params(BaseModel, frozen=True, extra="forbid"):
    pass


class RandomPicker(Picker):
    TYPE = TYPE

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, endpoints: Sequence[Endpoint], totals: Mapping[str, float]) -> list[Endpoint]:
        return self.rng.sample(list(endpoints), len(endpoints))


def make(params: Params, deps: PluginDeps) -> RandomPicker:
    return RandomPicker(deps.rng)
