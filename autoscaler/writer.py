"""What the autoscaler writes for one pool's decision: the status (through the api models), an Event when
something changed, a structured log line, and its `headway_autoscaler_*` metrics."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client as k8s

from headway.api.events import build_event
from headway.api.labels import CONDITION_SCALING_ACTIVE, GROUP
from headway.api.modelpool import PLURAL, VERSION, ModelPool
from headway.api.status import AutoscalingStatus, ModelPoolStatus, find_condition
from headway.autoscaler.metrics import AutoscalerMetrics
from headway.autoscaler.policy import Decision, PolicyState, VariantState
from headway.autoscaler.provisioning import Provisioning
from headway.autoscaler.status import build_autoscaling_status, slo_status

log = logging.getLogger("headway.autoscaler")
COMPONENT = "headway-autoscaler"


class StatusWriter:
    """Timestamps come from the injected clock (the decision's own time base)."""

    def __init__(self, api: k8s.ApiClient, metrics: AutoscalerMetrics, clock: Callable[[], float] = time.time) -> None:
        self.core, self.custom = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
        self.metrics, self.clock = metrics, clock

    def write(
        self,
        body: Mapping[str, Any],
        pool: ModelPool,
        d: Decision,
        state: PolicyState,
        old: AutoscalingStatus,
        attained: float | None,
        provisioning: Mapping[str, Provisioning],
    ) -> None:
        status = build_autoscaling_status(d, state, old, provisioning, dt.datetime.fromtimestamp(self.clock(), dt.UTC))
        slo = slo_status(attained, pool.spec.slo.attainment, d.stale)
        self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            pool.namespace,
            PLURAL,
            pool.name,
            {"status": ModelPoolStatus(autoscaling=status, slo_status=slo).as_patch()},
            _content_type="application/merge-patch+json",
        )
        prev = find_condition(old.conditions, CONDITION_SCALING_ACTIVE)
        flipped = prev is None or prev.status != ("False" if d.stale else "True")
        if d.changed or (flipped and d.stale):
            self.post_event(body, d.reason, d.message, warning=d.stale)
        log.info(
            "pool %s/%s: %s desired=%s cost=%.2f/h changed=%s inputs=%s terms=%s",
            pool.namespace,
            pool.name,
            d.reason,
            d.desired,
            d.cost_per_hour_usd,
            d.changed,
            json.dumps(d.inputs, separators=(",", ":")),
            json.dumps(d.terms, separators=(",", ":")),
        )

    def post_event(self, body: Mapping[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
        meta = body["metadata"]
        event = build_event(body, reason, message, COMPONENT, warning=warning)
        try:
            self.core.create_namespaced_event(meta["namespace"], event)
        except k8s.ApiException as e:  # an Event is best effort; the decision already stands in status
            log.warning("could not post event %s for %s/%s: %s", reason, meta["namespace"], meta["name"], e.reason)

    def observe(
        self,
        pool: ModelPool,
        d: Decision,
        variants: list[VariantState],
        att: float | None,
        provisioning: Mapping[str, Provisioning],
    ) -> None:
        key = f"{pool.namespace}/{pool.name}"
        for name, p in provisioning.items():
            for phase, s in (
                ("scheduling", p.scheduling_s),
                ("starting", p.starting_s),
                ("loading", p.loading_s),
                ("total", p.total_s),
            ):
                self.metrics.provisioning.labels(key, name, phase).set(s)
        for v in variants:
            self.metrics.current.labels(key, v.name).set(v.replicas)
            self.metrics.desired.labels(key, v.name).set(d.desired[v.name])
        if att is not None:
            self.metrics.attainment.labels(key, "ttft+itl").set(att)
        self.metrics.cost.labels(key).set(d.cost_per_hour_usd)
        self.metrics.decisions.labels(key, d.reason).inc()
        self.metrics.demand.labels(key).set(d.terms.get("demandRps", 0.0))
