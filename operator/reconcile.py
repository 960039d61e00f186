"""One pool's reconcile: apply the built children, remove those no longer wanted, write status.

Level-triggered and idempotent: it reads what exists each time, names are derived, and server-side
apply of an unchanged manifest changes nothing (no resourceVersion moves), so running it twice, or
after a crash half-way, converges on the same objects.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from headway.api.events import build_event
from headway.api.labels import CONDITION_DEGRADED, CONDITION_READY, REASON_INVALID_SPEC, VARIANT_LABEL
from headway.api.modelpool import ModelPool
from headway.api.status import Condition, ModelPoolStatus, set_condition
from headway.operator import metrics
from headway.operator.builders import build_children, desired_replicas
from headway.operator.config import OperatorConfig
from headway.operator.kube import Kube
from headway.operator.status import build_status, inference_pool_status, observe_variant

log = logging.getLogger(__name__)
COMPONENT = "headway-operator"
INFERENCE_POOL_RECHECK_S = 30.0


class InvalidSpec(ValueError):
    """The pool's spec (or status) fails validation (admission should have refused it)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _invalid_message(err: ValidationError) -> str:
    first = err.errors()[0]
    path = ".".join(str(p) for p in first["loc"])
    return f"{path}: {first['msg']}"


@dataclass
class Outcome:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


class PoolReconciler:
    def __init__(self, kube: Kube, cfg: OperatorConfig) -> None:
        self.kube = kube
        self.cfg = cfg
        self._applied_generation: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._inference_pools: tuple[float, bool] | None = None
        """(when checked, whether the API server serves InferencePools)."""

    def serves_inference_pools(self) -> bool:
        """Whether to keep InferencePools, re-checked at most every INFERENCE_POOL_RECHECK_S (the operator
        also re-checks at once when the CRD appears or goes: `forget_apis`)."""
        with self._lock:
            cached = self._inference_pools
        if cached is not None and time.monotonic() - cached[0] < INFERENCE_POOL_RECHECK_S:
            return cached[1]
        served = self.kube.serves_inference_pools()
        with self._lock:
            self._inference_pools = (time.monotonic(), served)
        return served

    def forget_apis(self) -> None:
        with self._lock:
            self._inference_pools = None

    # ----- events
    def post_event(self, body: Mapping[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
        meta = body["metadata"]
        event = build_event(body, reason, message, COMPONENT, warning=warning)
        try:
            self.kube.core.create_namespaced_event(meta["namespace"], event)
        except Exception as e:  # an event is best effort; the reconcile itself must not fail on it
            log.warning("could not post event %s for %s/%s: %s", reason, meta["namespace"], meta["name"], e)

    # ----- reconcile
    def parse(self, body: Mapping[str, Any]) -> ModelPool:
        try:
            return ModelPool.from_body(body)
        except ValidationError as e:
            raise InvalidSpec(_invalid_message(e)) from None

    def reconcile(self, body: Mapping[str, Any]) -> Outcome:
        pool = self.parse(body)
        out = Outcome()
        existing = {d["metadata"]["name"]: d for d in self.kube.deployments(pool.namespace, pool.name)}
        wanted = set()
        inference_pools = self.serves_inference_pools()
        for obj in build_children(pool, self.cfg, inference_pools=inference_pools):
            name = obj["metadata"]["name"]
            result = self.kube.apply(obj)
            if obj["kind"] != "Deployment":
                continue
            wanted.add(name)
            with self._lock:
                self._applied_generation[(pool.namespace, name)] = result["metadata"].get("generation", 0)
            before = existing.get(name)
            if before is None:
                out.created.append(name)
            elif result["metadata"].get("generation") != before["metadata"].get("generation"):
                out.updated.append(name)
        if inference_pools and not pool.spec.inference_pool.enabled and self._delete_own_inference_pool(pool):
            self.post_event(body, "Deleted", f"Deleted InferencePool {pool.name}: spec.inferencePool.enabled is false")
        for name, dep in existing.items():
            if name not in wanted:
                self.kube.delete_deployment(pool.namespace, name)
                out.deleted.append(f"{name} (variant {dep['metadata']['labels'].get(VARIANT_LABEL)} removed)")
        for verb, names in (("Created", out.created), ("Updated", out.updated), ("Deleted", out.deleted)):
            for n in names:
                self.post_event(body, verb, f"{verb} Deployment {n}")
        self.refresh_status(pool.namespace, pool.name)
        return out

    def _delete_own_inference_pool(self, pool: ModelPool) -> bool:
        """Delete the pool's InferencePool if this pool owns it (one made by someone else stays)."""
        obj = self.kube.get_inference_pool(pool.namespace, pool.name)
        owners = (obj or {}).get("metadata", {}).get("ownerReferences") or []
        if not any(o.get("uid") == pool.uid for o in owners):
            return False
        return self.kube.delete_inference_pool(pool.namespace, pool.name)

    def is_foreign_change(self, deployment: Mapping[str, Any]) -> bool:
        """True when a Deployment's spec moved past what the operator last applied (edited by hand)."""
        meta = deployment["metadata"]
        with self._lock:
            applied = self._applied_generation.get((meta["namespace"], meta["name"]))
        return applied is not None and meta.get("generation", 0) > applied

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._applied_generation.pop((namespace, name), None)

    # ----- status
    def record_invalid(self, body: Mapping[str, Any], message: str) -> None:
        try:
            conditions = ModelPoolStatus.model_validate(body.get("status") or {}).conditions
        except ValidationError:  # the invalid part may be the status itself: start its conditions afresh
            conditions = None
        gen = body["metadata"].get("generation", 0)
        now = _now()
        for c in (
            Condition(type=CONDITION_DEGRADED, status="True", reason=REASON_INVALID_SPEC, message=message),
            Condition(type=CONDITION_READY, status="False", reason=REASON_INVALID_SPEC, message=message),
        ):
            conditions = set_condition(conditions, c.model_copy(update={"observed_generation": gen}), now)
        meta = body["metadata"]
        status = ModelPoolStatus(observed_generation=gen, conditions=conditions)
        self.kube.patch_pool_status(meta["namespace"], meta["name"], status.as_patch())
        self.post_event(body, REASON_INVALID_SPEC, message, warning=True)

    def refresh_status(self, namespace: str, name: str) -> ModelPoolStatus | None:
        body = self.kube.get_pool(namespace, name)
        if body is None:
            return None
        try:
            pool = self.parse(body)
        except InvalidSpec:
            return None
        deployments = {d["metadata"]["labels"].get(VARIANT_LABEL): d for d in self.kube.deployments(namespace, name)}
        pods: dict[str | None, list[dict[str, Any]]] = {}
        for p in self.kube.pods(namespace, name):
            pods.setdefault(p["metadata"]["labels"].get(VARIANT_LABEL), []).append(p)
        observed = [
            observe_variant(
                v.name, v.gpu_product, desired_replicas(pool, v), deployments.get(v.name), pods.get(v.name, [])
            )
            for v in pool.spec.variants
        ]
        inference_pool = None
        if pool.spec.inference_pool.enabled and self.serves_inference_pools():
            obj = self.kube.get_inference_pool(namespace, name)
            inference_pool = inference_pool_status(obj) if obj is not None else None
        status = build_status(pool, observed, _now(), inference_pool)
        for v in observed:
            labels = (namespace, name, v.name, v.gpu_product)
            metrics.DESIRED.labels(*labels).set(v.desired)
            metrics.READY.labels(*labels).set(v.ready)
        old, new = pool.status.as_patch(), status.as_patch()
        if pool.status.inference_pool is not None and status.inference_pool is None:
            new["inferencePool"] = None  # a merge patch removes a field only when told to
        if any(old.get(k) != v for k, v in new.items()):
            self.kube.patch_pool_status(namespace, name, new)
            metrics.STATUS_UPDATES.inc()
            self._announce_flips(body, pool.status.conditions or [], status.conditions or [])
        return status

    def _announce_flips(self, body: Mapping[str, Any], old: list[Condition], new: list[Condition]) -> None:
        before = {c.type: (c.status, c.reason) for c in old}
        for c in new:
            if before.get(c.type) == (c.status, c.reason):
                continue
            bad = (c.type == CONDITION_DEGRADED and c.status == "True") or (
                c.type == CONDITION_READY and c.status == "False" and before.get(c.type, ("",))[0] == "True"
            )
            if c.type == CONDITION_DEGRADED and c.status == "False" and c.type not in before:
                continue  # "not degraded" on a new pool is not news
            self.post_event(body, c.reason, f"{c.type}={c.status}: {c.message}", warning=bad)
