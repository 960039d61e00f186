"""What one decision writes to the pool's status. Pure: the controller passes the decision, the policy's
new memory, what the status said before and `now`, so the merge patch is unit-tested without a cluster."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from headway.api.labels import CONDITION_SCALING_ACTIVE, REASON_METRICS_AVAILABLE
from headway.api.status import AutoscalingStatus, Condition, SloStatus, VariantRecommendation, set_condition
from headway.autoscaler.policy import Decision, PolicyState
from headway.autoscaler.provisioning import Provisioning


def slo_status(attained: float | None, target: float, stale: bool) -> SloStatus:
    """`Met`/`Breached` against the pool's attainment target over the last window; `Unknown` without data."""
    if stale or attained is None:
        return "Unknown"
    return "Met" if attained >= target else "Breached"


def build_autoscaling_status(
    d: Decision, state: PolicyState, old: AutoscalingStatus, provisioning: Mapping[str, Provisioning], now: dt.datetime
) -> AutoscalingStatus:
    """What one decision writes to `status.autoscaling`, as a merge patch: a field left None keeps its value
    on the server. A decision on stale metrics changes neither the recommendation nor the policy's memory
    (acting on no data is how fleets collapse), except that a pool never decided for gets its current
    size as its first recommendation; the last fresh decision's record stays, for `kubectl` to show why."""
    fresh = not d.stale
    active = Condition(
        type=CONDITION_SCALING_ACTIVE,
        status="True" if fresh else "False",
        reason=REASON_METRICS_AVAILABLE if fresh else d.reason,
        message="deciding from fresh metrics" if fresh else d.message,
    )
    recommend = fresh or old.decision is None
    return AutoscalingStatus(
        conditions=set_condition(old.conditions, active, now),
        state=state.to_dict() if fresh else None,
        provisioning={k: p.to_status() for k, p in provisioning.items()},
        variants=[VariantRecommendation(name=k, desired_replicas=n) for k, n in d.desired.items()]
        if recommend
        else None,
        decision=d.record(now) if fresh else None,
    )
