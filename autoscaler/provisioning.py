"""How long a variant takes to add a serving replica, read from its pods' own timestamps.

A pod's life to Ready splits into three waits, each owned by something else and each worth knowing
when a pool is slow to grow:

- scheduling: created → PodScheduled (a free GPU node, or the cluster autoscaler providing one);
- starting: scheduled → the engine container running (image pull, container start);
- loading: running → Ready (weights loaded, engine warmed, readiness probe passed).

The total is the forecaster's horizon. The median of the variant's Ready pods is used, and remembered in
status, so a pool whose pods all went away still knows its last measured time.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from headway.api.status import ProvisioningStatus


@dataclass(frozen=True)
class Provisioning:
    scheduling_s: float
    starting_s: float
    loading_s: float
    pods: int = 1

    @property
    def total_s(self) -> float:
        return self.scheduling_s + self.starting_s + self.loading_s

    def to_status(self) -> ProvisioningStatus:
        return ProvisioningStatus(
            scheduling_seconds=round(self.scheduling_s, 1),
            starting_seconds=round(self.starting_s, 1),
            loading_seconds=round(self.loading_s, 1),
            total_seconds=round(self.total_s, 1),
            pods=self.pods,
        )

    @classmethod
    def from_status(cls, p: ProvisioningStatus | None) -> Provisioning | None:
        if p is None:
            return None
        return cls(p.scheduling_seconds, p.starting_seconds, p.loading_seconds, p.pods)


def _time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _condition_time(pod: Mapping[str, Any], kind: str) -> dt.datetime | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return _time(c.get("lastTransitionTime"))
    return None


def pod_provisioning(pod: Mapping[str, Any]) -> Provisioning | None:
    """The three waits of one Ready pod (None if it is not Ready or lacks a timestamp)."""
    created = _time(pod["metadata"].get("creationTimestamp"))
    scheduled = _condition_time(pod, "PodScheduled")
    ready = _condition_time(pod, "Ready")
    if created is None or scheduled is None or ready is None:
        return None
    starts = [
        t
        for cs in (pod.get("status") or {}).get("containerStatuses") or []
        if (t := _time(((cs.get("state") or {}).get("running") or {}).get("startedAt"))) is not None
    ]
    started = min(max(max(starts), scheduled), ready) if starts else scheduled
    return Provisioning(
        max(0.0, (scheduled - created).total_seconds()),
        max(0.0, (started - scheduled).total_seconds()),
        max(0.0, (ready - started).total_seconds()),
    )


def variant_provisioning(pods: Iterable[Mapping[str, Any]]) -> Provisioning | None:
    """The median of each wait over the given (Ready) pods."""
    seen = [p for p in map(pod_provisioning, pods) if p is not None]
    if not seen:
        return None
    return Provisioning(
        statistics.median(p.scheduling_s for p in seen),
        statistics.median(p.starting_s for p in seen),
        statistics.median(p.loading_s for p in seen),
        len(seen),
    )
