"""Take the candidates in turn, ignoring scores: the n-th decision starts at candidate n mod count.

The counter is the picker's own, so each pool's router rotates independently."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from pydantic import BaseModel

from headway.gateway.endpoints import Endpoint
from headway.gateway.routing.deps import PluginDeps
from headway.gateway.routing.types import Picker

TYPE = "round-robin-picker"


class Params(BaseModel, frozen=True, extra="forbid"):
    pass


class RoundRobinPicker(Picker):
    TYPE = TYPE

    def __init__(self) -> None:
        self._turn = itertools.count()

    def pick(self, endpoints: Sequence[Endpoint], totals: Mapping[str, float]) -> list[Endpoint]:
        if not endpoints:
            return []
        start = next(self._turn) % len(endpoints)
        return [*endpoints[start:], *endpoints[:start]]


def make(params: Params, deps: PluginDeps) -> RoundRobinPicker:
    return RoundRobinPicker()
