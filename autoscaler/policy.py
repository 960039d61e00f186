"""The scaling decision for one pool: pure, clocked by its caller, with its memory in a serialisable state.

One call of `decide` turns an observation (demand, latency, replicas per variant) into desired replicas
per variant and a record of why:

1. Stale or missing metrics hold the current size (`MetricsStale`): acting on no data is how fleets
   collapse.
2. Demand is max(stable-window mean, panic-window mean, latest observation, forecast), plus the
   engines' queued requests drained over `BACKLOG_DRAIN_S`: a step in load counts in full within one
   tick, a dip does not. The stable window is `STABLE_WINDOWS_PER_PANIC` panic windows. Panic is on
   while the panic mean is ≥ 2× the stable mean, and for one stable window after; no variant shrinks
   in panic. The forecast (`headway.autoscaler.forecast`) looks one provisioning time ahead: the
   longest time the variants' recent pods took from creation to Ready.
3. The min-cost mix (`solver.solve`) over the variants' profiled capacity, each divided by its online
   correction: observed/predicted latency, clamped, smoothed, and read only where the profile's
   latency curve is flat (at its knee, noise reads as a slower GPU and the fleet would oscillate).
   A variant with Pending pods may not grow (never stack scale-ups on pods that have not started);
   one with Unschedulable pods is capped at its ready count for `BLOCK_S`, so the solver moves the
   demand to the next-cheapest variant.
4. Growth is immediate, at most `maxScaleUpStep` replicas per variant per decision, and happens only
   when the replicas asked for (ready or starting) lack the capacity the demand needs, taking the
   cheapest replicas to add to them (the solver with the fleet as lower bounds: a from-scratch
   optimum would start one mix and shed another a window later), or when the optimum costs
   `REMIX_SAVING` less than the fleet (a re-mix; the replaced replicas go by scale-down). A re-shuffle
   that saves less is not worth its cold starts. Shrinking needs the fleet over-provisioned by more
   than `TOLERANCE`, or holding replicas the optimum leaves out, for a whole
   `scaleDownWindowSeconds`; it takes the largest recommendation of that window (a sliding maximum, as
   the HPA's stabilisation does) and restarts the window, so a slow decline costs one scale event per
   window, not one per replica. Each removal keeps the remaining fleet serving the demand, taking the
   most expensive replicas first.
5. A pool at zero goes to one replica of its cheapest schedulable variant as soon as a request is held
   at the gateway or seen at all; a pool goes to zero only when allowed and idle for
   `idleWindowSeconds`; otherwise at least one replica stays.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from headway.api.labels import REASON_METRICS_STALE
from headway.api.modelpool import Autoscaling
from headway.api.status import DecisionRecord
from headway.autoscaler.capacity import Bucket, GpuCapacity, LatencyPoint, correction
from headway.autoscaler.forecast import Constant, Forecaster
from headway.autoscaler.solver import VariantOption, solve

STABLE_WINDOWS_PER_PANIC = 6
PANIC_RATIO = 2.0
TOLERANCE = 0.1
REMIX_SAVING = 0.3
"""A cheaper mix replaces a sufficient fleet only if it saves this share: each re-mix costs cold starts."""
BACKLOG_DRAIN_S = 60.0
"""A backlog of queued requests is sized to drain within this time, on top of the arrival rate."""
LOAD_ERROR = 0.15
"""How far off a variant's estimated load may be (spreading, noise of one interval): latency is compared
with the profile only where that much more load would not move the prediction by more."""
CORRECTION_SMOOTHING = 0.3
"""Weight of a new latency reading in a variant's correction (an exponential average over decisions)."""
BLOCK_S = 300.0
"""How long a variant whose pods were Unschedulable stays capped at its ready replicas."""

# Decision reasons (CamelCase, as condition reasons are). REASON_METRICS_STALE, imported above, is also
# the reason of the ScalingActive condition, so it lives with the condition reasons in headway.api.
REASON_SCALE_UP = "ScaleUp"
REASON_PANIC = "PanicScaleUp"
REASON_SCALE_DOWN = "ScaleDown"
REASON_HOLD = "Hold"
REASON_FROM_ZERO = "ScaleFromZero"
REASON_TO_ZERO = "ScaleToZero"
REASON_IDLE = "IdleAtZero"
REASON_UNSCHEDULABLE = "VariantUnschedulable"
REASON_SLO_UNREACHABLE = "SloUnreachable"


@dataclass(frozen=True)
class VariantState:
    """What the cluster shows of one variant."""

    name: str
    replicas: int
    """Replicas currently asked of the Deployment."""
    ready: int
    pending: int = 0
    unschedulable: int = 0
    gpus_per_replica: int = 1
    cost_per_gpu_hour_usd: float = 0.0
    min_replicas: int = 0
    max_replicas: int = 4
    capacity: GpuCapacity | None = None
    observed_ttft_s: float | None = None
    observed_itl_s: float | None = None
    provisioning_s: float | None = None
    """How long this variant's recent pods took from creation to Ready (None: none seen yet)."""


@dataclass(frozen=True)
class Observation:
    time: float
    fresh: bool
    """False when the metrics source failed or is older than allowed; `stale_reason` says why."""
    rps: float = 0.0
    mix: Mapping[Bucket, float] = field(default_factory=dict)
    held_requests: float = 0.0
    """Requests the gateway held for want of a ready endpoint since the previous observation."""
    in_flight: float = 0.0
    waiting: float = 0.0
    """Requests queued in the engines, not yet running: a backlog that new capacity must also drain."""
    attainment: float | None = None
    stale_reason: str = ""


@dataclass
class PolicyState:
    """Everything `decide` remembers; stored in the pool's status so a restarted autoscaler resumes."""

    samples: list[tuple[float, float]] = field(default_factory=list)
    """(time, rps) within the stable window."""
    panic_until: float = 0.0
    last_active: float | None = None
    down_recs: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    """Per variant, a sliding-maximum deque of (time, recommended replicas) over the scale-down window."""
    blocked_until: dict[str, tuple[float, int]] = field(default_factory=dict)
    """Variant → (until, replicas cap) after Unschedulable pods."""
    over_since: float | None = None
    """Since when the fleet has been over-provisioned beyond the tolerance (None: it is not)."""
    corrections: dict[str, float] = field(default_factory=dict)
    """Per variant, the smoothed observed/predicted latency (absent: never read where it can be trusted)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> PolicyState:
        if not d:
            return cls()
        return cls(
            samples=[(float(t), float(r)) for t, r in d.get("samples", [])],
            panic_until=float(d.get("panic_until", 0.0)),
            last_active=d.get("last_active"),
            down_recs={k: [(float(t), int(n)) for t, n in v] for k, v in (d.get("down_recs") or {}).items()},
            blocked_until={k: (float(v[0]), int(v[1])) for k, v in (d.get("blocked_until") or {}).items()},
            over_since=d.get("over_since"),
            corrections={k: float(c) for k, c in (d.get("corrections") or {}).items()},
        )


@dataclass(frozen=True)
class Decision:
    time: float
    reason: str
    desired: dict[str, int]
    changed: bool
    message: str
    inputs: dict[str, Any]
    terms: dict[str, Any]
    mix: dict[str, int]
    cost_per_hour_usd: float
    stale: bool = False

    def record(self, at: dt.datetime) -> DecisionRecord:
        """The decision as written to status at wall-clock time `at`: inputs, formula terms, chosen mix,
        cost, reason."""
        return DecisionRecord(
            time=at,
            reason=self.reason,
            message=self.message,
            inputs=self.inputs,
            terms=self.terms,
            mix=self.mix,
            cost_per_hour_usd=round(self.cost_per_hour_usd, 4),
        )


def _cost(v: VariantState) -> float:
    return v.cost_per_gpu_hour_usd * v.gpus_per_replica


TAIL_SHARE = 0.1
"""A bucket with at least this share of requests can set the pool's p90 latency on its own."""


def _predicted(cap: GpuCapacity, mix: Mapping[Bucket, float], utilisation: float) -> LatencyPoint | None:
    """The latency the profile expects of a replica loaded to `utilisation` of its SLO capacity for the
    mix: every bucket's requests see the same busy engine, so each bucket is read at that share of its
    own capacity, and the slowest bucket big enough to own the tail stands for the pool's percentile."""
    tail = [b for b, s in mix.items() if s >= TAIL_SHARE] or list(mix)
    points = [p for b in tail if (p := cap.bucket(b).predicted(utilisation * cap.bucket(b).max_rps)) is not None]
    if not points:
        return None
    return LatencyPoint(rps=points[0].rps, ttft_s=max(p.ttft_s for p in points), itl_s=max(p.itl_s for p in points))


def _mix_rps(capacity: Mapping[Bucket, float], mix: Mapping[Bucket, float]) -> float:
    """Requests/s of this mix one replica serves within the SLO, given its capacity per bucket
    (0: some bucket of the mix cannot be served)."""
    if any(s > 0 and capacity.get(b, 0.0) <= 0 for b, s in mix.items()):
        return 0.0
    load = sum(s / capacity[b] for b, s in mix.items() if s > 0)
    return 1 / load if load > 0 else 0.0


def _utilisations(variants: Sequence[VariantState], obs: Observation) -> dict[str, float]:
    """Each variant's share of its own SLO capacity in use. The gateway spreads every bucket's requests
    over the ready replicas that can serve it, in proportion to their capacity for it (what queue-depth
    balancing converges to); a variant that alone can prefill long prompts carries more of its capacity
    than the pool does on average, so one pool-wide utilisation would blame it for being busy."""
    load = {v.name: 0.0 for v in variants}
    for b, share in obs.mix.items():
        caps = {v.name: v.ready * v.capacity.bucket(b).max_rps for v in variants if v.capacity and v.ready > 0}
        total = sum(caps.values())
        if total <= 0:
            continue
        for name, c in caps.items():
            if c > 0:  # v gets c/total of b's rate, which uses (that rate)/c of its capacity
                load[name] += obs.rps * share / total
    return load


def _corrections(variants: Sequence[VariantState], obs: Observation, learned: Mapping[str, float]) -> dict[str, float]:
    """Observed/predicted latency per variant that has been read where it can be trusted (the others
    run at 1), the prediction taken at the variant's own utilisation, smoothed over decisions and kept
    in the policy state.

    A reading counts only where the latency curve is flat enough to trust it: if the load estimate
    being `LOAD_ERROR` off would move the prediction by more than that, the variant sits at the knee
    of its curve, where a few percent of noise reads as a GPU twice as slow, the fleet grows for it,
    the reading falls back once the fleet is bigger, and the fleet shrinks again. There the last
    trusted value stands."""
    util = _utilisations(variants, obs)
    out = {v.name: learned[v.name] for v in variants if v.name in learned}
    for v in variants:
        if v.capacity is not None and v.ready > 0 and obs.mix and (v.observed_itl_s or v.observed_ttft_s):
            p = _predicted(v.capacity, obs.mix, util[v.name])
            worse = _predicted(v.capacity, obs.mix, util[v.name] * (1 + LOAD_ERROR))
            if p is not None and worse is not None and _flat(p, worse):
                reading = max(correction(v.observed_itl_s, p.itl_s), correction(v.observed_ttft_s, p.ttft_s))
                c = out.get(v.name)
                out[v.name] = round(reading if c is None else c + CORRECTION_SMOOTHING * (reading - c), 4)
    return out


def _flat(p: LatencyPoint, worse: LatencyPoint) -> bool:
    return all(w <= a * (1 + LOAD_ERROR) for a, w in ((p.ttft_s, worse.ttft_s), (p.itl_s, worse.itl_s)) if a > 0)


def _window_max(recs: list[tuple[float, int]], now: float, window_s: float, value: int) -> list[tuple[float, int]]:
    """Push (now, value) onto a sliding-maximum deque and drop what left the window."""
    recs = [(t, n) for t, n in recs if t > now - window_s and n > value]
    recs.append((now, value))
    return recs


_CONSTANT = Constant()


def decide(
    spec: Autoscaling,
    variants: Sequence[VariantState],
    obs: Observation,
    state: PolicyState,
    *,
    headroom: float = 1.0,
    gpu_budget: int | None = None,
    forecaster: Forecaster = _CONSTANT,
) -> tuple[Decision, PolicyState]:
    """One decision for one pool. `state` is not modified; the new state is returned."""
    now = obs.time
    current = {v.name: v.replicas for v in variants}
    if not obs.fresh:
        return _hold(now, current, variants, REASON_METRICS_STALE, obs.stale_reason or "metrics unavailable"), state

    panic_s = float(spec.panic_window_seconds)
    stable_s = panic_s * STABLE_WINDOWS_PER_PANIC
    samples = [(t, r) for t, r in state.samples if t > now - stable_s] + [(now, obs.rps)]
    stable = sum(r for _, r in samples) / len(samples)
    recent = [r for t, r in samples if t > now - panic_s]
    panic_rps = sum(recent) / len(recent)
    panic_until = state.panic_until
    if stable > 0 and panic_rps >= PANIC_RATIO * stable:
        panic_until = now + stable_s
    in_panic = now < panic_until
    horizon_s = max((v.provisioning_s or 0.0 for v in variants), default=0.0)
    forecast = forecaster.forecast(samples, horizon_s)
    backlog_rps = obs.waiting / BACKLOG_DRAIN_S
    demand = max(stable, panic_rps, obs.rps, forecast) + backlog_rps
    active = obs.rps > 0 or obs.held_requests > 0 or obs.in_flight > 0
    last_active = now if active else state.last_active

    learned = _corrections(variants, obs, state.corrections)
    corr = {v.name: learned.get(v.name, 1.0) for v in variants}

    blocked = {k: b for k, b in state.blocked_until.items() if b[0] > now}
    notes: list[str] = []
    for v in variants:
        if v.unschedulable > 0 and v.name not in blocked:
            blocked[v.name] = (now + BLOCK_S, v.ready)
    options: list[VariantOption] = []
    for v in variants:
        hi = v.max_replicas
        if v.name in blocked:
            hi = min(hi, max(v.min_replicas, blocked[v.name][1]))
            notes.append(f"{v.name} has Unschedulable pods: capped at {hi} ready replicas")
        elif v.pending > 0:
            hi = min(hi, max(v.replicas, v.min_replicas))
        cap = {}
        if v.capacity is not None:
            for b in obs.mix:
                cap[b] = v.capacity.bucket(b).max_rps / corr[v.name]
        options.append(VariantOption(v.name, _cost(v), v.gpus_per_replica, v.min_replicas, hi, cap))

    demand_by_bucket = {b: demand * s for b, s in obs.mix.items()}
    mix = solve(options, demand_by_bucket, headroom=headroom, gpu_budget=gpu_budget)
    target = dict(mix.replicas)

    idle_s = now - last_active if last_active is not None else math.inf
    may_zero = spec.scale_to_zero and not active and idle_s >= spec.idle_window_seconds
    cheapest = _cheapest_open(variants, options)
    if sum(target.values()) == 0 and not may_zero and cheapest is not None:
        target[cheapest] = 1

    total = sum(current.values())
    desired = dict(current)
    reason = REASON_HOLD
    down_recs: dict[str, list[tuple[float, int]]] = {}
    window_s = float(spec.scale_down_window_seconds)
    asked = {o.name: min(current[o.name], o.hi) for o in options}
    short = not _covers(options, demand_by_bucket, asked, headroom)
    current_cost = sum(_cost(v) * current[v.name] for v in variants)
    cheaper = mix.unserved_rps == 0 and mix.cost_per_hour_usd < (1 - REMIX_SAVING) * current_cost
    roomy = _covers(options, demand_by_bucket, asked, headroom / (1 - TOLERANCE))
    # the optimum drops some replicas and adds none: they are left over from an earlier growth step
    redundant = mix.unserved_rps == 0 and all(mix.replicas[k] <= n for k, n in asked.items()) and mix.replicas != asked
    over = not short and (roomy or cheaper or redundant or not obs.mix)
    if short:
        # grow what is there at the least cost: the replicas asked for stay, the solver adds to them
        # (a from-scratch optimum would add a different mix and shed the old one a window later)
        grown = [replace(o, lo=max(o.lo, min(asked[o.name], o.hi))) for o in options]
        target = dict(solve(grown, demand_by_bucket, headroom=headroom, gpu_budget=gpu_budget).replicas)
    over_since = (state.over_since if state.over_since is not None else now) if over else None
    if total == 0:
        if active and cheapest is not None:
            desired = {k: 0 for k in current}
            desired[cheapest] = 1
            for k, n in target.items():
                desired[k] = max(desired[k], min(n, spec.max_scale_up_step))
            reason = REASON_FROM_ZERO
        else:
            reason = REASON_IDLE
    elif may_zero and sum(target.values()) == 0:
        desired = {k: 0 for k in current}
        reason = REASON_TO_ZERO
    else:
        grew = shrank = False
        downs: list[tuple[float, str, int]] = []
        settled_window = over_since is not None and now - over_since >= window_s
        for v in variants:
            cur, want = current[v.name], target[v.name]
            rec = want if over else max(want, cur)
            recs = _window_max(state.down_recs.get(v.name, [(now, cur)]), now, window_s, rec)
            down_recs[v.name] = recs
            if want > cur and (short or cheaper or cur < v.min_replicas):
                desired[v.name] = min(want, cur + spec.max_scale_up_step)
                grew = True
            elif want < cur and not in_panic and settled_window:
                settled = max(n for _, n in recs)
                if settled < cur:
                    downs.append((_cost(v), v.name, settled))
        # most expensive replicas go first, and only as far as the remaining fleet still covers the need
        for _, name, settled in sorted(downs, reverse=True):
            for n in range(settled, current[name]):
                trial = {**desired, name: n}
                if _covers(options, demand_by_bucket, trial, headroom):
                    desired[name] = n
                    shrank = True
                    break
        if shrank:
            over_since = now  # the next scale-down waits a whole window again
        if grew:
            reason = REASON_PANIC if in_panic else REASON_SCALE_UP
        elif shrank:
            reason = REASON_SCALE_DOWN
    if mix.unserved_rps > 0 and reason in (REASON_HOLD, REASON_SCALE_UP, REASON_PANIC):
        notes.append(f"{mix.unserved_rps:.3g} req/s do not fit within the variants' bounds or the GPU budget")
        if reason == REASON_HOLD:
            reason = REASON_SLO_UNREACHABLE
    if blocked and reason in (REASON_SCALE_UP, REASON_PANIC):
        reason = REASON_UNSCHEDULABLE
    cost = sum(_cost(v) * desired[v.name] for v in variants)
    message = _message(reason, current, desired, demand, notes)
    decision = Decision(
        time=now,
        reason=reason,
        desired=desired,
        changed=desired != current,
        message=message,
        inputs={
            "requestsPerSecond": round(obs.rps, 4),
            "stableRps": round(stable, 4),
            "panicRps": round(panic_rps, 4),
            "heldRequests": obs.held_requests,
            "inFlight": obs.in_flight,
            "waiting": obs.waiting,
            "mix": {f"{b[0]}x{b[1]}": round(s, 4) for b, s in obs.mix.items()},
            "sloAttainment": obs.attainment,
            "replicas": current,
            "ready": {v.name: v.ready for v in variants},
            "pending": {v.name: v.pending for v in variants},
            "provisioningSeconds": {v.name: v.provisioning_s for v in variants if v.provisioning_s is not None},
        },
        terms={
            "demandRps": round(demand, 4),
            "forecastRps": round(forecast, 4),
            "backlogRps": round(backlog_rps, 4),
            "forecaster": forecaster.name,
            "horizonSeconds": round(horizon_s, 1),
            "panic": in_panic,
            "headroom": headroom,
            "capacityRpsPerReplica": {o.name: _replica_rps(o, obs.mix) for o in options},
            "correction": corr,
            "maxReplicas": {o.name: o.hi for o in options},
            "solverMix": mix.replicas,
            **({"grownMix": target} if short else {}),
            "unservedRps": mix.unserved_rps,
        },
        mix=desired,
        cost_per_hour_usd=cost,
    )
    new_state = PolicyState(
        samples=samples,
        panic_until=panic_until,
        last_active=last_active,
        down_recs=down_recs or state.down_recs,
        blocked_until=blocked,
        over_since=over_since,
        corrections=learned,
    )
    return decision, new_state


def _replica_rps(o: VariantOption, mix: Mapping[Bucket, float]) -> float:
    return round(_mix_rps(o.capacity_rps, mix), 4)


def _covers(
    options: Sequence[VariantOption], demand: Mapping[Bucket, float], replicas: Mapping[str, int], headroom: float
) -> bool:
    """Whether exactly these replicas serve the demand at this headroom, each bucket split over the
    variants that can serve it as the solver would split it (a replica need not serve the whole mix:
    an L4 that cannot prefill long documents still takes the short chats)."""
    fixed = [replace(o, lo=replicas.get(o.name, 0), hi=replicas.get(o.name, 0)) for o in options]
    return solve(fixed, demand, headroom=headroom).unserved_rps <= 1e-9


def _cheapest_open(variants: Sequence[VariantState], options: Sequence[VariantOption]) -> str | None:
    """The cheapest variant that may take a replica (allowed by max, not blocked, can meet the SLO)."""
    open_ = [
        (_cost(v), -v.ready, v.name)
        for v, o in zip(variants, options, strict=True)
        if o.hi >= 1 and (v.capacity is None or any(c.max_rps > 0 for c in v.capacity.buckets))
    ]
    return min(open_)[2] if open_ else None


def _hold(now: float, current: dict[str, int], variants: Sequence[VariantState], reason: str, message: str) -> Decision:
    return Decision(
        time=now,
        reason=reason,
        desired=dict(current),
        changed=False,
        message=f"holding {current}: {message}",
        inputs={"replicas": current},
        terms={},
        mix=dict(current),
        cost_per_hour_usd=sum(_cost(v) * current[v.name] for v in variants),
        stale=True,
    )


def _message(
    reason: str, current: Mapping[str, int], desired: Mapping[str, int], demand: float, notes: list[str]
) -> str:
    base = f"{reason}: {dict(current)} -> {dict(desired)} for {demand:.3g} req/s"
    return "; ".join([base, *notes])
