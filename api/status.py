"""The ModelPool status: its typed shape, and the one rule by which a condition changes.

Two components write the status, each its own part, each through a JSON merge patch: the operator
the top level (replicas, conditions, per-variant observations), the autoscaler `autoscaling` (its
recommendations, the record of its last decision, its memory) and `sloStatus`. A merge patch leaves
alone every field it omits, so every field here is optional and `as_patch` omits what is unset: a
writer says only what it owns. The CRD's status schema is generated from these models
(`headway.api.crd`), so the API server prunes and refuses what they would refuse.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, PlainSerializer

from headway.api.camel import CAMEL_CASE

ConditionStatus = Literal["True", "False", "Unknown"]
SloStatus = Literal["Met", "Breached", "Unknown"]
"""Met/Breached against the pool's attainment target over the autoscaler's last window; Unknown without data."""


def _rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


Timestamp = Annotated[AwareDatetime, PlainSerializer(_rfc3339, return_type=str, when_used="json")]
"""A point in time written as Kubernetes writes one (RFC 3339, UTC, whole seconds), so a value read back
from the API server serialises to the same string and an unchanged status compares equal."""


def _list_map(key: str) -> dict[str, Any]:
    """A list the API server treats as a map keyed by `key`: it refuses two items with the same key."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key]}


_Count = Annotated[int, Field(ge=0)]


class _Status(BaseModel):
    model_config = CAMEL_CASE

    def as_patch(self) -> dict[str, Any]:
        """The JSON (merge patch) form: camelCase keys, times as strings, unset fields left out, so the
        fields other writers own stay as they are on the server."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Condition(_Status):
    """One observation about the pool, in the shape of metav1.Condition. Types and reasons are the
    constants of `headway.api.labels`; a message says what to do next."""

    type: str = Field(min_length=1, max_length=316, description="Condition type, e.g. Ready.")
    status: ConditionStatus
    reason: str = Field(min_length=1, max_length=1024, description="CamelCase reason of the current status.")
    message: str = Field(description="What is the case and what to do about it.")
    last_transition_time: Timestamp | None = Field(
        None, description="When status last changed (set by set_condition, not by the writer)."
    )
    observed_generation: int | None = Field(None, ge=0, description="metadata.generation the condition is about.")


class VariantStatus(_Status):
    """What the operator observed of one variant's Deployment and pods."""

    name: str
    gpu_product: str
    desired_replicas: _Count
    replicas: _Count = Field(description="Pods not being deleted.")
    ready_replicas: _Count
    pending_replicas: _Count
    unschedulable_replicas: _Count | None = Field(None, description="Pending pods the scheduler could not place.")
    message: str | None = Field(None, description="The scheduler's reason for the first unschedulable pod.")


class VariantRecommendation(_Status):
    """The autoscaler's desired replicas for one variant; the operator clamps it to the variant's bounds."""

    name: str
    desired_replicas: _Count


class ProvisioningStatus(_Status):
    """How long a variant's Ready pods took from creation to Ready, by phase (median over its pods).
    Remembered so a pool whose pods all went away still knows its last measured time."""

    scheduling_seconds: float = Field(ge=0, description="Created to PodScheduled.")
    starting_seconds: float = Field(ge=0, description="Scheduled to the engine container running.")
    loading_seconds: float = Field(ge=0, description="Running to Ready (weights loaded, probe passed).")
    total_seconds: float = Field(ge=0)
    pods: int = Field(ge=1, description="Ready pods the median is taken over.")


class DecisionRecord(_Status):
    """The autoscaler's last decision taken on fresh metrics, with what it saw and how it weighed it, so
    `kubectl get -o yaml` answers "why this many replicas". `inputs` and `terms` are open maps: the
    policy adds terms as it learns to weigh more, and a reader looks up the ones it knows."""

    time: Timestamp
    reason: str = Field(min_length=1, description="CamelCase decision reason, e.g. ScaleUp.")
    message: str
    inputs: dict[str, Any] = Field(description="What the policy observed (rates, replicas, mix, attainment).")
    terms: dict[str, Any] = Field(description="The terms of its formula (demand, forecast, capacity, corrections).")
    mix: dict[str, _Count] = Field(description="Replicas per variant the decision asks for.")
    cost_per_hour_usd: float = Field(ge=0, description="Price of that mix.")


class AutoscalingStatus(_Status):
    """What the autoscaler writes, and the operator reads only `variants` of."""

    conditions: list[Condition] | None = Field(None, json_schema_extra=_list_map("type"))
    variants: list[VariantRecommendation] | None = Field(
        None, description="Desired replicas per variant.", json_schema_extra=_list_map("name")
    )
    decision: DecisionRecord | None = None
    provisioning: dict[str, ProvisioningStatus] | None = Field(None, description="Per variant.")
    state: dict[str, Any] | None = Field(
        None,
        description="The policy's memory (windows, panic, blocked variants, corrections), so a restarted or newly "
        "elected autoscaler resumes. Its shape belongs to the policy; nothing else reads it.",
    )


class InferencePoolStatus(_Status):
    """The InferencePool the operator keeps for the pool, as the Gateways that use it report."""

    name: str = Field(description="The InferencePool (inference.networking.k8s.io/v1), same name and namespace.")
    gateways: int = Field(0, ge=0, description="Gateways that list it among their parents.")
    accepted: int = Field(0, ge=0, description="Of those, how many accepted it (condition Accepted=True).")
    message: str | None = Field(None, description="Why a Gateway has not accepted it, when one has not.")


class ModelPoolStatus(_Status):
    """The whole status subresource of a ModelPool."""

    observed_generation: int | None = Field(None, ge=0, description="metadata.generation the status is about.")
    replicas: str | None = Field(None, pattern=r"^[0-9]+/[0-9]+$", description="ready/desired over all variants.")
    ready_replicas: _Count | None = None
    desired_replicas: _Count | None = None
    slo_status: SloStatus | None = Field(None, description="Met, Breached or Unknown (set by the autoscaler).")
    conditions: list[Condition] | None = Field(None, json_schema_extra=_list_map("type"))
    variants: list[VariantStatus] | None = Field(None, json_schema_extra=_list_map("name"))
    autoscaling: AutoscalingStatus | None = None
    inference_pool: InferencePoolStatus | None = Field(
        None, description="Set while the cluster serves InferencePools and the pool has one."
    )


def find_condition(conditions: Sequence[Condition] | None, kind: str) -> Condition | None:
    """The condition of type `kind`, or None where the writer has not set it yet."""
    return next((c for c in conditions or () if c.type == kind), None)


def set_condition(conditions: Sequence[Condition] | None, new: Condition, now: dt.datetime) -> list[Condition]:
    """`conditions` with the one of `new.type` replaced by `new` (added last if absent), keeping the order.

    lastTransitionTime is `now` only when the status flips (or the type is new); a change of reason or
    message alone keeps the old time, so it says how long the pool has been in this state. Pure: the
    caller owns the clock, and the input list is not modified."""
    out: list[Condition] = []
    found = False
    for c in conditions or ():
        if c.type != new.type:
            out.append(c)
            continue
        found = True
        kept = c.last_transition_time if c.status == new.status else None
        out.append(Condition(**{**dict(new), "last_transition_time": kept or now}))
    if not found:
        out.append(Condition(**{**dict(new), "last_transition_time": now}))
    return out
