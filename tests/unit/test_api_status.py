"""The typed ModelPool status: what the operator and the autoscaler write round-trips through the models and
is kept whole by the generated CRD schema; set_condition moves lastTransitionTime only on a flip."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import types
import typing
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from headway.api.crd import status_schema
from headway.api.labels import CONDITION_SCALING_ACTIVE, REASON_METRICS_AVAILABLE, REASON_METRICS_STALE
from headway.api.modelpool import ModelPool
from headway.api.status import (
    AutoscalingStatus,
    Condition,
    ModelPoolStatus,
    find_condition,
    set_condition,
)
from headway.autoscaler.policy import Observation, PolicyState, decide
from headway.autoscaler.provisioning import Provisioning
from headway.autoscaler.status import build_autoscaling_status
from headway.devenv.paths import REPO_ROOT
from headway.operator.status import build_status, observe_variant
from tests.unit.test_autoscaler_policy import SPEC as AUTOSCALING
from tests.unit.test_autoscaler_policy import a100, l4, obs
from tests.unit.test_operator_builders import SPEC, pool

T0 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)


def _pod(phase: str, unschedulable: str | None = None) -> dict[str, Any]:
    conds = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable}]
    return {"metadata": {"name": "x"}, "status": {"phase": phase, "conditions": conds if unschedulable else []}}


READY = {"status": {"readyReplicas": 2, "updatedReplicas": 2}}
OPERATOR_CASES = [
    pytest.param(
        [("h100", 2, READY, [_pod("Running")] * 2), ("l4", 1, None, [_pod("Pending")])],
        id="one-variant-starting",
    ),
    pytest.param(
        [("h100", 2, READY, [_pod("Running"), _pod("Pending", "0/4 nodes: Insufficient nvidia.com/gpu.")])],
        id="unschedulable",
    ),
    pytest.param([("h100", 0, None, []), ("l4", 0, None, [])], id="scaled-to-zero"),
]


def _operator_status(observed: list[tuple[str, int, Any, list[dict[str, Any]]]]) -> ModelPoolStatus:
    return build_status(pool(), [observe_variant(n, "GPU", d, dep, pods) for n, d, dep, pods in observed], T0)


def _merge(stored: Any, patch: Any) -> Any:
    """A JSON merge patch (RFC 7386), as the API server applies the writers' patches."""
    if not isinstance(patch, dict):
        return patch
    out = dict(stored) if isinstance(stored, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(out.get(k), v)
    return out


STEPS = ["grow", "burst", "blocked", "stale", "recover"]


def _autoscaling_history() -> list[tuple[AutoscalingStatus, PolicyState]]:
    """Successive autoscaling statuses of a pool driven through growth, a burst, an Unschedulable variant,
    stale metrics and recovery on a virtual clock, each built on what the server holds after the patch
    before, as the controller does."""
    state, stored, out = PolicyState(), {}, []
    variants = [l4(1), a100(1)]
    seen = {"l4": Provisioning(3.0, 1.5, 40.25, pods=2)}
    for t, o in [
        (0, obs(0, 2.0)),
        (15, obs(15, 9.0, attainment=0.97, held_requests=1.0)),
        (30, obs(30, 30.0, waiting=12.0)),
        (45, Observation(time=45, fresh=False, stale_reason="prometheus: connection refused")),
        (60, obs(60, 4.0, attainment=None)),
    ]:
        if t == 30:
            variants = [l4(2, pending=1, unschedulable=1), a100(2)]
        old = AutoscalingStatus.model_validate(stored)
        d, state = decide(AUTOSCALING, variants, o, state)
        status = build_autoscaling_status(d, state, old, seen, T0 + dt.timedelta(seconds=t))
        out.append((status, state))
        stored = json.loads(json.dumps(_merge(stored, status.as_patch())))
    return out


AUTOSCALING_HISTORY = [status for status, _ in _autoscaling_history()]


# ----- round trips


@pytest.mark.parametrize("observed", OPERATOR_CASES)
def test_what_the_operator_writes_round_trips_through_the_models_and_a_pool_body(observed: Any) -> None:
    st = _operator_status(observed)
    patch = st.as_patch()
    wire = json.loads(json.dumps(patch))
    assert ModelPoolStatus.model_validate(wire) == st
    assert (
        ModelPool.from_body({"metadata": {"name": "p", "namespace": "ns"}, "spec": SPEC, "status": wire}).status == st
    )
    assert {c["type"] for c in patch["conditions"]} == {"Ready", "Progressing", "Degraded"}
    assert all(c["lastTransitionTime"] == "2026-12-01T10:00:00Z" for c in patch["conditions"])


@pytest.mark.parametrize("i", range(len(STEPS)), ids=STEPS)
def test_what_the_autoscaler_writes_round_trips_through_the_models(i: int) -> None:
    written, state = _autoscaling_history()[i]
    wire = json.loads(json.dumps(ModelPoolStatus(autoscaling=written, slo_status="Met").as_patch()))
    assert ModelPoolStatus.model_validate(wire).as_patch() == wire
    if STEPS[i] != "stale":  # the policy resumes from the memory it wrote
        assert PolicyState.from_dict(wire["autoscaling"]["state"]) == state


def test_a_stale_decision_writes_neither_recommendation_nor_memory_and_keeps_the_transition_time() -> None:
    fresh, stale, recovered = (p.as_patch() for p in AUTOSCALING_HISTORY[2:5])
    assert set(stale) == {"conditions", "provisioning"}, "a merge patch must leave variants, decision, state alone"
    (active,) = stale["conditions"]
    assert active["type"] == CONDITION_SCALING_ACTIVE and active["status"] == "False"
    assert active["reason"] == REASON_METRICS_STALE and active["lastTransitionTime"] == "2026-12-01T10:00:45Z"
    assert fresh["conditions"][0]["reason"] == REASON_METRICS_AVAILABLE
    assert recovered["conditions"][0]["lastTransitionTime"] == "2026-12-01T10:01:00Z"
    assert {"variants", "decision", "state"} <= set(recovered)


def test_a_pool_never_decided_for_gets_its_current_size_even_on_stale_metrics() -> None:
    d, state = decide(AUTOSCALING, [l4(2)], Observation(time=0, fresh=False), PolicyState())
    patch = build_autoscaling_status(d, state, AutoscalingStatus(), {}, T0).as_patch()
    assert patch["variants"] == [{"name": "l4", "desiredReplicas": 2}] and "decision" not in patch


def test_the_record_of_a_decision_keeps_its_open_terms() -> None:
    record = AUTOSCALING_HISTORY[1].as_patch()["decision"]
    assert record["time"] == "2026-12-01T10:00:15Z" and record["reason"]
    assert {"demandRps", "forecastRps", "capacityRpsPerReplica", "correction", "solverMix"} <= set(record["terms"])
    assert record["inputs"]["sloAttainment"] == 0.97 and record["inputs"]["replicas"] == {"l4": 1, "a100": 1}


# ----- negative cases: a typo or a value the API server refuses fails here first

GOOD_CONDITION = {"type": "Ready", "status": "True", "reason": "AllReplicasReady", "message": "2/2 replicas ready"}


@pytest.mark.parametrize(
    ("status", "where"),
    [
        pytest.param({"observedGeneraton": 3}, "observedGeneraton", id="typo-top-level"),
        pytest.param({"sloStatus": "Good"}, "sloStatus", id="slo-status-not-an-enum-value"),
        pytest.param({"replicas": "3 of 3"}, "replicas", id="replicas-not-ready-slash-desired"),
        pytest.param({"readyReplicas": -1}, "readyReplicas", id="negative-count"),
        pytest.param({"conditions": [{**GOOD_CONDITION, "status": "Yes"}]}, "conditions.0.status", id="condition-yes"),
        pytest.param({"conditions": [{"type": "Ready", "status": "True"}]}, "conditions.0.reason", id="no-reason"),
        pytest.param(
            {"conditions": [{**GOOD_CONDITION, "lastTransitionTime": "yesterday"}]},
            "conditions.0.lastTransitionTime",
            id="time-not-rfc3339",
        ),
        pytest.param(
            {"conditions": [{**GOOD_CONDITION, "lastTransitionTime": "2026-12-01T10:00:00"}]},
            "conditions.0.lastTransitionTime",
            id="time-without-zone",
        ),
        pytest.param(
            {"variants": [{"name": "h100", "gpuProduct": "H", "desiredReplicas": 1}]},
            "variants.0.replicas",
            id="variant-missing-counts",
        ),
        pytest.param(
            {"autoscaling": {"variants": [{"name": "h100", "desiredReplica": 2}]}},
            "autoscaling.variants.0.desiredReplica",
            id="typo-in-recommendation",
        ),
        pytest.param(
            {"autoscaling": {"provisioning": {"l4": {"totalSeconds": 3}}}},
            "autoscaling.provisioning.l4.schedulingSeconds",
            id="partial-provisioning",
        ),
        pytest.param(
            {"autoscaling": {"decision": {"reason": "ScaleUp", "message": "", "inputs": {}, "terms": {}}}},
            "autoscaling.decision.time",
            id="decision-without-time",
        ),
    ],
)
def test_the_models_refuse_what_no_writer_may_write(status: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as e:
        ModelPoolStatus.model_validate(status)
    assert where in {".".join(str(x) for x in err["loc"]) for err in e.value.errors()}


def test_a_field_name_typo_in_a_writer_fails() -> None:
    with pytest.raises(ValidationError, match="desired_replica"):
        ModelPoolStatus(
            autoscaling=AutoscalingStatus.model_validate({"variants": [{"name": "a", "desired_replica": 1}]})
        )


def test_an_invalid_status_is_reported_at_its_own_path() -> None:
    body = {"metadata": {"name": "p", "namespace": "ns"}, "spec": SPEC, "status": {"sloStatus": "Good"}}
    with pytest.raises(ValidationError) as e:
        ModelPool.from_body(body)
    assert e.value.errors()[0]["loc"] == ("status", "sloStatus")


# ----- set_condition


def cond(status: str = "True", reason: str = "A", at: dt.datetime | None = None, kind: str = "Ready") -> Condition:
    return Condition.model_validate(
        {"type": kind, "status": status, "reason": reason, "message": reason.lower(), "lastTransitionTime": at}
    )


LATER = T0 + dt.timedelta(minutes=5)


@pytest.mark.parametrize(
    ("before", "new", "want_time"),
    [
        pytest.param([], cond(), LATER, id="empty-adds-at-now"),
        pytest.param([cond(at=T0)], cond(reason="B"), T0, id="same-status-new-reason-keeps-time"),
        pytest.param([cond(at=T0)], cond(), T0, id="all-equal-keeps-time"),
        pytest.param([cond(at=T0)], cond("False", "B"), LATER, id="flip-moves-time"),
        pytest.param([cond("Unknown", at=T0)], cond("True"), LATER, id="unknown-to-true-is-a-flip"),
        pytest.param([cond()], cond(reason="B"), LATER, id="no-time-before-gets-now"),
        pytest.param([cond(kind="Degraded", at=T0)], cond(), LATER, id="other-type-only-adds"),
    ],
)
def test_set_condition_moves_last_transition_time_only_on_a_flip(
    before: list[Condition], new: Condition, want_time: dt.datetime
) -> None:
    snapshot = copy.deepcopy(before)
    after = set_condition(before, new, LATER)
    got = find_condition(after, new.type)
    assert got is not None and got.last_transition_time == want_time
    assert (got.status, got.reason, got.message) == (new.status, new.reason, new.message)
    assert before == snapshot, "set_condition must not modify its input"
    assert len(after) == len({c.type for c in [*before, new]})


def test_set_condition_keeps_the_order_and_the_other_conditions() -> None:
    before = [cond(kind="Ready", at=T0), cond(kind="Progressing", at=T0), cond(kind="Degraded", at=T0)]
    after = set_condition(before, cond("False", "B", kind="Progressing"), LATER)
    assert [c.type for c in after] == ["Ready", "Progressing", "Degraded"]
    assert after[0] == before[0] and after[2] == before[2] and after[1].last_transition_time == LATER


def test_set_condition_refuses_a_clock_without_a_zone() -> None:
    with pytest.raises(ValidationError):
        set_condition([], cond(), dt.datetime(2026, 12, 1, 10, 0))


def test_a_condition_time_serialises_as_kubernetes_writes_it() -> None:
    at = dt.datetime(2026, 12, 1, 11, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    (c,) = set_condition(None, cond(), at)
    assert c.as_patch()["lastTransitionTime"] == "2026-12-01T10:00:00Z"
    assert Condition.model_validate(c.as_patch()).as_patch() == c.as_patch()


# ----- the generated CRD schema keeps what the models allow


def _model_of(annotation: Any) -> tuple[str, type[BaseModel] | None]:
    """How a field's type nests: ('', M) a model, ('items', M) a list of M, ('additionalProperties', M) a map of
    M, ('open', None) an open map, ('', None) a scalar."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return _model_of(args[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "", annotation
    if origin is list and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return "items", args[0]
    if origin is dict:
        inner = _model_of(args[1])[1]
        return ("additionalProperties", inner) if inner else ("open" if args[1] is Any else "", None)
    return "", None


def _assert_schema_covers(model: type[BaseModel], schema: dict[str, Any], path: str) -> None:
    props = schema["properties"]
    aliases = {f.serialization_alias or n: f for n, f in model.model_fields.items()}
    assert set(props) == set(aliases), f"{path}: schema and model fields differ"
    assert set(schema.get("required", [])) == {a for a, f in aliases.items() if f.is_required()}, path
    assert "x-kubernetes-preserve-unknown-fields" not in schema, f"{path} would keep typos"
    for alias, field in aliases.items():
        how, inner = _model_of(field.annotation)
        sub = props[alias]
        if how == "open":
            assert sub.get("x-kubernetes-preserve-unknown-fields") is True, f"{path}.{alias} is open-ended"
        elif inner is not None:
            _assert_schema_covers(inner, sub[how] if how else sub, f"{path}.{alias}")
            assert "default" not in sub, f"{path}.{alias}: the server must not invent an empty {inner.__name__}"


def test_the_crd_status_schema_has_exactly_the_models_fields() -> None:
    _assert_schema_covers(ModelPoolStatus, status_schema(), "status")


def test_the_committed_crd_carries_the_generated_status_schema() -> None:
    crd = yaml.safe_load((REPO_ROOT / "deploy" / "crds" / "inference.headway.dev_modelpools.yaml").read_text())
    committed = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert committed == status_schema()
    for keyed, key in (("conditions", "type"), ("variants", "name")):
        assert committed["properties"][keyed]["x-kubernetes-list-map-keys"] == [key]
        assert committed["properties"]["autoscaling"]["properties"][keyed]["x-kubernetes-list-type"] == "map"


def _admitted(value: Any, schema: dict[str, Any], path: str = "status") -> list[str]:
    """What a structural schema would prune or refuse of `value` (types, required, enums, bounds, patterns),
    as the API server checks a status write; [] when it keeps every field as written."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    kind = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float), "boolean": bool}
    if not isinstance(value, kind[schema["type"]]) or (schema["type"] == "integer" and isinstance(value, bool)):
        return [f"{path}: not {schema['type']}"]
    problems = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        problems.append(f"{path}: below {schema['minimum']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        problems.append(f"{path}: does not match {schema['pattern']}")
    if isinstance(value, list):
        problems += [p for i, v in enumerate(value) for p in _admitted(v, schema["items"], f"{path}[{i}]")]
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        problems += [f"{path}.{r}: required" for r in schema.get("required", []) if r not in value]
        for k, v in value.items():
            sub = props.get(k, extra)
            problems += _admitted(v, sub, f"{path}.{k}") if sub else [f"{path}.{k}: pruned"]
    return problems


@pytest.mark.parametrize(
    "status",
    [
        *(pytest.param(p.values[0], id=f"operator-{p.id}") for p in OPERATOR_CASES),
        *(pytest.param(i, id=f"autoscaler-{n}") for i, n in enumerate(STEPS)),
    ],
)
def test_the_api_server_schema_keeps_every_field_the_writers_write(status: Any) -> None:
    if isinstance(status, int):
        patch = ModelPoolStatus(autoscaling=AUTOSCALING_HISTORY[status], slo_status="Breached").as_patch()
    else:
        patch = _operator_status(status).as_patch()
    assert _admitted(json.loads(json.dumps(patch)), status_schema()) == []


@pytest.mark.parametrize(
    ("status", "problem"),
    [
        pytest.param({"observedGeneraton": 1}, "status.observedGeneraton: pruned", id="typo-pruned"),
        pytest.param({"sloStatus": "Good"}, "status.sloStatus: 'Good' not in", id="enum"),
        pytest.param({"conditions": [{"type": "Ready"}]}, "status.conditions[0].status: required", id="required"),
        pytest.param({"autoscaling": {"variants": [{"name": "a", "desiredReplicas": -1}]}}, "below 0", id="min"),
    ],
)
def test_the_schema_check_itself_catches_what_the_server_would_drop_or_refuse(
    status: dict[str, Any], problem: str
) -> None:
    assert any(p.startswith(problem) or problem in p for p in _admitted(status, status_schema()))
