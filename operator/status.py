"""What the pool's status says, computed from what the cluster shows. Pure: the handlers gather the
observations (Deployments, pods) and pass `now`, so every condition is unit-tested without a cluster."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from headway.api.labels import (
    CONDITION_DEGRADED,
    CONDITION_PROGRESSING,
    CONDITION_READY,
    REASON_ALL_READY,
    REASON_AS_EXPECTED,
    REASON_REPLICAS_STARTING,
    REASON_SCALED_TO_ZERO,
    REASON_STABLE,
    REASON_UNSCHEDULABLE,
)
from headway.api.modelpool import ModelPool
from headway.api.status import Condition, InferencePoolStatus, ModelPoolStatus, VariantStatus, set_condition


@dataclass(frozen=True)
class VariantObservation:
    name: str
    gpu_product: str
    desired: int
    replicas: int
    ready: int
    updated: int
    pending: int
    unschedulable: int
    unschedulable_message: str

    def as_status(self) -> VariantStatus:
        stuck = bool(self.unschedulable)
        return VariantStatus(
            name=self.name,
            gpu_product=self.gpu_product,
            desired_replicas=self.desired,
            replicas=self.replicas,
            ready_replicas=self.ready,
            pending_replicas=self.pending,
            unschedulable_replicas=self.unschedulable if stuck else None,
            message=self.unschedulable_message if stuck else None,
        )


def observe_variant(
    name: str, gpu_product: str, desired: int, deployment: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]
) -> VariantObservation:
    dstatus = (deployment or {}).get("status") or {}
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    pending = [p for p in live if (p.get("status") or {}).get("phase") == "Pending"]
    unschedulable = []
    for p in pending:
        for c in (p.get("status") or {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
                unschedulable.append(c.get("message") or "")
    return VariantObservation(
        name=name,
        gpu_product=gpu_product,
        desired=desired,
        replicas=len(live),
        ready=int(dstatus.get("readyReplicas") or 0),
        updated=int(dstatus.get("updatedReplicas") or 0),
        pending=len(pending),
        unschedulable=len(unschedulable),
        unschedulable_message=unschedulable[0] if unschedulable else "",
    )


def _condition(kind: str, ok: bool, reason: str, message: str) -> Condition:
    return Condition(type=kind, status="True" if ok else "False", reason=reason, message=message)


def inference_pool_status(obj: Mapping[str, Any]) -> InferencePoolStatus:
    """Summarise an InferencePool's `status.parents` (one entry per Gateway that references it)."""
    parents = (obj.get("status") or {}).get("parents") or []
    accepted, reasons = 0, []
    for p in parents:
        cond = next((c for c in p.get("conditions") or [] if c.get("type") == "Accepted"), None)
        if cond is not None and cond.get("status") == "True":
            accepted += 1
        else:
            who = (p.get("parentRef") or {}).get("name", "?")
            reasons.append(f"{who}: {cond.get('message') or cond.get('reason') if cond else 'not yet reported'}")
    return InferencePoolStatus(
        name=obj["metadata"]["name"], gateways=len(parents), accepted=accepted, message="; ".join(reasons) or None
    )


def build_status(
    pool: ModelPool,
    observed: Sequence[VariantObservation],
    now: dt.datetime,
    inference_pool: InferencePoolStatus | None = None,
) -> ModelPoolStatus:
    desired = sum(v.desired for v in observed)
    ready = sum(min(v.ready, v.desired) for v in observed)
    stuck = [v for v in observed if v.unschedulable]
    starting = [v for v in observed if v.ready < v.desired or v.updated < v.desired]
    if desired == 0:
        ready_c = _condition(
            CONDITION_READY,
            False,
            REASON_SCALED_TO_ZERO,
            "no replicas are desired; requests wait at the gateway until the pool scales up",
        )
    elif not starting:
        ready_c = _condition(CONDITION_READY, True, REASON_ALL_READY, f"{ready}/{desired} replicas ready")
    else:
        missing = ", ".join(f"{v.name} {v.ready}/{v.desired}" for v in starting)
        ready_c = _condition(CONDITION_READY, False, REASON_REPLICAS_STARTING, f"waiting for replicas: {missing}")
    if stuck:
        detail = "; ".join(
            f"variant {v.name} ({v.gpu_product}): {v.unschedulable} pod(s) unschedulable: {v.unschedulable_message}"
            for v in stuck
        )
        degraded_c = _condition(
            CONDITION_DEGRADED,
            True,
            REASON_UNSCHEDULABLE,
            f"{detail}; add nodes with nvidia.com/gpu.product={stuck[0].gpu_product} or lower that variant's replicas",
        )
        progressing_c = _condition(CONDITION_PROGRESSING, False, REASON_UNSCHEDULABLE, detail)
    else:
        degraded_c = _condition(CONDITION_DEGRADED, False, REASON_AS_EXPECTED, "all pods are scheduled")
        progressing_c = (
            _condition(CONDITION_PROGRESSING, True, REASON_REPLICAS_STARTING, ready_c.message)
            if starting and desired
            else _condition(CONDITION_PROGRESSING, False, REASON_STABLE, "no rollout in progress")
        )
    conditions = pool.status.conditions
    for c in (ready_c, progressing_c, degraded_c):
        conditions = set_condition(conditions, c.model_copy(update={"observed_generation": pool.generation}), now)
    return ModelPoolStatus(
        observed_generation=pool.generation,
        replicas=f"{ready}/{desired}",
        ready_replicas=ready,
        desired_replicas=desired,
        conditions=conditions,
        variants=[v.as_status() for v in observed],
        inference_pool=inference_pool,
    )
