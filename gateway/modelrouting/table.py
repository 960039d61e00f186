"""The gateway's ModelRoutes: virtual model name → compiled route, kept current by discovery, and the
record of recent decisions that feedback is matched against.

A route is recompiled (classifier retrained, bandit reset to its priors) only when its spec changes; a
pool coming or going changes nothing here — the decision reads the pools' state at each request.
Feedback names a request by the id its response carried (`x-headway-request-id`); the decision's
context is kept for `FEEDBACK_TTL_S` (at most `MAX_PENDING` decisions), so a reward that comes later,
or twice, is refused with a clear error rather than counted wrongly.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from headway.api.modelroute import ModelRoute, ModelRouteSpec
from headway.gateway.errors import FeedbackConflict, InvalidRequest, UnknownRequest
from headway.gateway.modelrouting.router import CompiledRoute

log = logging.getLogger(__name__)
RouteKey = tuple[str, str]
"""(namespace, name) of a ModelRoute."""
FEEDBACK_TTL_S = 3600.0
MAX_PENDING = 100_000


@dataclass
class ModelRouteEntry:
    key: RouteKey
    spec: ModelRouteSpec
    compiled: CompiledRoute

    @property
    def name(self) -> str:
        return f"{self.key[0]}/{self.key[1]}" if self.key[0] else self.key[1]


@dataclass(frozen=True, slots=True)
class Pending:
    route: RouteKey
    pool: str
    context: np.ndarray
    at: float


class ModelRouteTable:
    def __init__(self) -> None:
        self.by_model: dict[str, ModelRouteEntry] = {}
        self._models: dict[RouteKey, str] = {}
        self.pending: OrderedDict[str, Pending] = OrderedDict()

    def get(self, model: str) -> ModelRouteEntry | None:
        return self.by_model.get(model)

    def entry(self, key: RouteKey) -> ModelRouteEntry | None:
        model = self._models.get(key)
        return self.by_model.get(model) if model is not None else None

    def apply(self, route: ModelRoute) -> ModelRouteEntry:
        key = (route.namespace, route.name)
        old = self.entry(key)
        if old is not None and old.spec == route.spec:
            return old
        if old is not None:
            self.remove(key)
        taken = self.by_model.get(route.spec.model)
        if taken is not None and taken.key != key:
            log.warning("ModelRoute %s takes model %r from %s (the newest wins)", key, route.spec.model, taken.name)
            self._models.pop(taken.key, None)
        entry = ModelRouteEntry(key, route.spec, CompiledRoute(route.spec))
        self.by_model[route.spec.model] = entry
        self._models[key] = route.spec.model
        return entry

    def remove(self, key: RouteKey) -> None:
        model = self._models.pop(key, None)
        if model is not None and (e := self.by_model.get(model)) is not None and e.key == key:
            del self.by_model[model]

    # ----- feedback
    def remember(self, request_id: str, entry: ModelRouteEntry, pool: str, context: np.ndarray) -> None:
        now = time.monotonic()
        self.pending[request_id] = Pending(entry.key, pool, context, now)
        oldest = now - FEEDBACK_TTL_S
        while self.pending and (len(self.pending) > MAX_PENDING or next(iter(self.pending.values())).at < oldest):
            self.pending.popitem(last=False)

    def feedback(self, request_id: str, reward: float) -> tuple[ModelRouteEntry, str]:
        """Credit `reward` to the pool that served the request; the route and pool it went to."""
        if not 0 <= reward <= 1:
            raise InvalidRequest("reward must be within [0, 1]", "reward")
        pending = self.pending.get(request_id)
        if pending is None or pending.at < time.monotonic() - FEEDBACK_TTL_S:
            raise UnknownRequest(
                f"no routed request {request_id!r} awaits feedback (unknown, already rewarded, or older than "
                f"{FEEDBACK_TTL_S:.0f}s)",
                "id",
            )
        entry = self.entry(pending.route)
        if entry is None:
            raise UnknownRequest(f"the route of request {request_id!r} no longer exists", "id")
        if not entry.spec.learning.enabled:
            raise FeedbackConflict(f"ModelRoute {entry.name} does not learn (spec.learning.enabled is false)", "id")
        del self.pending[request_id]
        if pending.pool in entry.compiled.arms and len(pending.context) == entry.compiled.dimensions:
            entry.compiled.feedback(pending.pool, pending.context, reward)
        return entry, pending.pool
