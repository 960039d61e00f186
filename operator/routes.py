"""A ModelRoute's status as the operator sees it: whether the pools it sends to exist and serve, and how
well its classifier does on the route's own examples.

`Ready` is True when every pool the route names exists and at least one candidate has a ready replica;
False says which pools are missing or have none. The classifier's held-out accuracy (cross-validated on
the examples written in the resource) tells the author whether the examples separate their classes
before any traffic comes. Traffic shares and rewards are each gateway replica's own: they are in the
gateways' metrics (`headway_model_route_*`), not here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from headway.api.modelroute import ClassifierStatus, ModelRoute, ModelRouteStatus
from headway.api.status import Condition, set_condition
from headway.gateway.modelrouting.classifier import held_out_accuracy

CONDITION_READY = "Ready"
REASON_POOLS_READY = "PoolsReady"
REASON_POOLS_MISSING = "PoolsMissing"
REASON_NO_READY_POOL = "NoReadyPool"
REASON_INVALID = "InvalidSpec"


def classifier_status(route: ModelRoute) -> ClassifierStatus | None:
    clf = route.spec.signals.classifier
    if clf is None:
        return None
    examples = [(e.label, p) for e in clf.examples for p in e.prompts]
    acc = held_out_accuracy(examples)
    return ClassifierStatus(
        labels=len(clf.examples), examples=len(examples), held_out_accuracy=None if acc is None else round(acc, 4)
    )


def _ready_replicas(pool: Mapping[str, Any]) -> int:
    return int((pool.get("status") or {}).get("readyReplicas") or 0)


def route_status(
    route: ModelRoute,
    pools: Mapping[str, Mapping[str, Any]],
    previous: ModelRouteStatus,
    now: dt.datetime,
    classifier: ClassifierStatus | None,
) -> ModelRouteStatus:
    """`pools`: the ModelPools of the route's namespace by name."""
    names = route.spec.pools()
    missing = [p for p in names if p not in pools]
    serving = [c.pool for c in route.spec.candidates if c.pool in pools and _ready_replicas(pools[c.pool]) > 0]
    if missing:
        cond = Condition(
            type=CONDITION_READY,
            status="False",
            reason=REASON_POOLS_MISSING,
            message=f"no ModelPool {', '.join(missing)} in namespace {route.namespace}: create it or edit the route",
        )
    elif not serving:
        cond = Condition(
            type=CONDITION_READY,
            status="False",
            reason=REASON_NO_READY_POOL,
            message="no candidate pool has a ready replica yet; requests wait at the gateway",
        )
    else:
        cond = Condition(
            type=CONDITION_READY,
            status="True",
            reason=REASON_POOLS_READY,
            message=f"serving through {', '.join(serving)}",
        )
    cond = cond.model_copy(update={"observed_generation": route.generation})
    return ModelRouteStatus(
        observed_generation=route.generation,
        conditions=set_condition(previous.conditions, cond, now),
        classifier=classifier,
    )


def invalid_status(message: str, generation: int, previous: ModelRouteStatus, now: dt.datetime) -> ModelRouteStatus:
    """A route no component can load (it got in without the admission webhook)."""
    cond = Condition(
        type=CONDITION_READY, status="False", reason=REASON_INVALID, message=message, observed_generation=generation
    )
    return ModelRouteStatus(observed_generation=generation, conditions=set_condition(previous.conditions, cond, now))
