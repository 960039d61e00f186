"""A ModelRoute's status: Ready says whether its pools exist and serve, with what to do; the classifier's
held-out accuracy is measured on the route's own examples; an unchanged state keeps its transition time."""

from __future__ import annotations

import datetime as dt
from typing import Any

from headway.api.modelroute import ModelRoute, ModelRouteStatus
from headway.operator.routes import classifier_status, invalid_status, route_status

T0 = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


def route(**spec: Any) -> ModelRoute:
    body = {"model": "auto", "candidates": [{"pool": "small"}, {"pool": "large"}], **spec}
    return ModelRoute.from_body({"metadata": {"name": "auto", "namespace": "ns", "generation": 3}, "spec": body})


def pool(ready: int) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "status": {"readyReplicas": ready}}


def ready_of(status: ModelRouteStatus) -> Any:
    return next(c for c in status.conditions or [] if c.type == "Ready")


def test_ready_names_missing_pools_then_waits_for_a_ready_replica_then_serves() -> None:
    empty = ModelRouteStatus()
    missing = ready_of(route_status(route(), {"small": pool(1)}, empty, T0, None))
    assert (missing.status, missing.reason) == ("False", "PoolsMissing") and "large" in missing.message
    waiting = ready_of(route_status(route(), {"small": pool(0), "large": pool(0)}, empty, T0, None))
    assert (waiting.status, waiting.reason) == ("False", "NoReadyPool")
    first = route_status(route(), {"small": pool(0), "large": pool(2)}, empty, T0, None)
    serving = ready_of(first)
    assert (serving.status, serving.reason, serving.observed_generation) == ("True", "PoolsReady", 3)
    assert serving.message == "serving through large"
    later = route_status(route(), {"small": pool(1), "large": pool(2)}, first, T0 + dt.timedelta(minutes=5), None)
    assert ready_of(later).last_transition_time == T0  # still Ready: the transition time stays


def test_a_redirect_pool_must_exist_too() -> None:
    examples = {"examples": [{"label": "a", "prompts": ["x y"]}]}
    guarded = route(
        signals={"classifier": examples}, guard={"minSimilarity": 0.1, "action": "redirect", "redirectTo": "other"}
    )
    cond = ready_of(route_status(guarded, {"small": pool(1), "large": pool(1)}, ModelRouteStatus(), T0, None))
    assert cond.reason == "PoolsMissing" and "other" in cond.message


def test_the_classifier_status_cross_validates_the_examples() -> None:
    maths = ["solve 2x + 3 = 9", "integrate x squared", "derivative of sine x", "factor x^2 - 4"]
    food = ["bake bread at home", "roast a chicken", "boil pasta al dente", "make tomato soup"]
    r = route(
        signals={"classifier": {"examples": [{"label": "maths", "prompts": maths}, {"label": "food", "prompts": food}]}}
    )
    status = classifier_status(r)
    assert status is not None and (status.labels, status.examples) == (2, 8)
    assert status.held_out_accuracy is not None and 0 <= status.held_out_accuracy <= 1
    assert classifier_status(route()) is None


def test_an_invalid_route_is_not_ready_with_the_reason() -> None:
    s = invalid_status("spec.candidates: too short", 4, ModelRouteStatus(), T0)
    cond = ready_of(s)
    assert (cond.status, cond.reason, cond.message, s.observed_generation) == (
        "False",
        "InvalidSpec",
        "spec.candidates: too short",
        4,
    )
