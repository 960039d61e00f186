"""The scaling decision for one pool: pure, clocked by its caller, with its memory in a serialisable state.

One call of `decide` turns an observation (demand, latency, replicas per variant) into desired replicas
per variant and a record of why, in named steps:

0. Stale or missing metrics hold the current size (`MetricsStale`): acting on no data is how fleets
   collapse.
1. Demand (`_demand`) is max(stable-window mean, panic-window mean, latest observation, forecast), plus
   the engines' queued requests drained over `BACKLOG_DRAIN_S` while no replica is starting: a step in
   load counts in full within one tick, a dip does not. The stable window is `STABLE_WINDOWS_PER_PANIC`
   panic windows. Panic is on while the panic mean is ≥ 2× the stable mean, and for one stable window
   after; nothing shrinks in panic. The forecast (`headway.autoscaler.forecast`) looks one provisioning
   time ahead: the longest time the variants' recent pods took from creation to Ready.
2. What may be bought (`_options`, `spread`): the variants' profiled capacity, each divided by its online
   correction (observed/predicted latency at the SLO's percentile, the prediction being the mixture's
   percentile over the token buckets; clamped, smoothed, and read only where the profile's latency curve
   is flat: at its knee, noise reads as a slower GPU and the fleet would oscillate). The gateway spreads
   requests by load, not length, so every replica serves the whole mix: a variant's capacity is its
   capacity for the mix. Pods scheduled and starting count as capacity; a variant with Unschedulable pods
   is capped at its ready count for `BLOCK_S`, so the solver moves the demand to the next-cheapest one.
3. The min-cost mix (`solver.solve`) for the demand.
4. Growth (`_growth`) is immediate, at most `maxScaleUpStep` replicas per variant per decision, when the
   replicas asked for (ready or starting) lack the capacity the demand needs: to the cheapest fleet to
   keep (the optimum's replicas beyond the fleet's, when it costs `TOLERANCE` less than the fleet grown by
   its cheapest additions), else by the cheapest additions from the variants the optimum uses; or to the
   optimum when it costs `REMIX_SAVING` less than the fleet (a re-mix). Shrinking (`_shrunk`) gives back
   replicas dearest per request first, each variant as far as the rest still serves the largest demand of
   the last `scaleDownWindowSeconds` (the HPA's stabilisation, on demand rather than on one variant's
   recommendation, so a mix that changes with the token mix does not pin every type at its maximum); not
   in panic, not while replicas start (make before break), not a variant that grew within the window,
   not before a whole window has been observed, and only for a saving of `TOLERANCE` of the fleet's cost
   or after a window without shrinking.
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
from headway.autoscaler.capacity import Bucket, GpuCapacity, LatencyPoint, correction, mixture_quantile
from headway.autoscaler.forecast import Constant, Forecaster
from headway.autoscaler.solver import Mix, VariantOption, solve

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
    ttft_quantile: float = 0.9
    """The quantile the variants' observed TTFT is (the SLO's percentile)."""
    itl_quantile: float = 0.9


@dataclass
class PolicyState:
    """Everything `decide` remembers; stored in the pool's status so a restarted autoscaler resumes."""

    samples: list[tuple[float, float]] = field(default_factory=list)
    """(time, rps) within the stable window."""
    panic_until: float = 0.0
    last_active: float | None = None
    peaks: list[tuple[float, float]] = field(default_factory=list)
    """A sliding-maximum deque of (time, demand in req/s) over the scale-down window."""
    since: float | None = None
    """When this state began observing the pool: nothing shrinks before a whole window has been seen."""
    grown_at: dict[str, float] = field(default_factory=dict)
    """Per variant, when it last grew: a variant does not shrink within a window of growing."""
    last_shrink: float | None = None
    blocked_until: dict[str, tuple[float, int]] = field(default_factory=dict)
    """Variant → (until, replicas cap) after Unschedulable pods."""
    corrections: dict[str, float] = field(default_factory=dict)
    """Per variant, the smoothed observed/predicted latency (absent: never read where it can be trusted)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> PolicyState:
        """A stored state; fields a previous version wrote and this one does not know are dropped."""
        if not d:
            return cls()
        return cls(
            samples=[(float(t), float(r)) for t, r in d.get("samples", [])],
            panic_until=float(d.get("panic_until", 0.0)),
            last_active=d.get("last_active"),
            peaks=[(float(t), float(r)) for t, r in d.get("peaks", [])],
            since=d.get("since"),
            grown_at={k: float(t) for k, t in (d.get("grown_at") or {}).items()},
            last_shrink=d.get("last_shrink"),
            blocked_until={k: (float(v[0]), int(v[1])) for k, v in (d.get("blocked_until") or {}).items()},
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


def _predicted(
    cap: GpuCapacity, mix: Mapping[Bucket, float], utilisation: float, quantiles: tuple[float, float]
) -> LatencyPoint | None:
    """The latency the profile expects of a replica loaded to `utilisation` of its SLO capacity for the
    mix, at the quantiles the engines' latency is observed at (TTFT, ITL): every bucket's requests see the
    same busy engine, so each bucket is read at that share of its own capacity, and the pool's percentile
    is the mixture's (`mixture_quantile`): long prompts as rare as the tail beyond the percentile set it."""
    points = [(s, p) for b, s in mix.items() if (p := cap.bucket(b).predicted(utilisation * cap.bucket(b).max_rps))]
    if not points:
        return None
    return LatencyPoint(
        rps=points[0][1].rps,
        ttft_s=mixture_quantile(((s, p.ttft_s) for s, p in points), quantiles[0]),
        itl_s=mixture_quantile(((s, p.itl_s) for s, p in points), quantiles[1]),
    )


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
            q = (obs.ttft_quantile, obs.itl_quantile)
            p = _predicted(v.capacity, obs.mix, util[v.name], q)
            worse = _predicted(v.capacity, obs.mix, util[v.name] * (1 + LOAD_ERROR), q)
            if p is not None and worse is not None and _flat(p, worse):
                reading = max(correction(v.observed_itl_s, p.itl_s), correction(v.observed_ttft_s, p.ttft_s))
                c = out.get(v.name)
                out[v.name] = round(reading if c is None else c + CORRECTION_SMOOTHING * (reading - c), 4)
    return out


def _flat(p: LatencyPoint, worse: LatencyPoint) -> bool:
    return all(w <= a * (1 + LOAD_ERROR) for a, w in ((p.ttft_s, worse.ttft_s), (p.itl_s, worse.itl_s)) if a > 0)


def _window_max(
    recs: list[tuple[float, float]], now: float, window_s: float, value: float
) -> list[tuple[float, float]]:
    """Push (now, value) onto a sliding-maximum deque and drop what left the window."""
    recs = [(t, n) for t, n in recs if t > now - window_s and n > value]
    recs.append((now, value))
    return recs


_CONSTANT = Constant()


@dataclass(frozen=True)
class Demand:
    """Step 1: the rate the fleet must serve now, and the terms it came from."""

    samples: list[tuple[float, float]]
    stable: float
    panic: float
    forecast: float
    backlog: float
    total: float
    panic_until: float
    in_panic: bool
    horizon_s: float


def _demand(
    spec: Autoscaling, variants: Sequence[VariantState], obs: Observation, state: PolicyState, forecaster: Forecaster
) -> Demand:
    """max(stable-window mean, panic-window mean, latest, forecast) plus the engines' queue drained over
    `BACKLOG_DRAIN_S`, the queue counted only while no replica is starting (the starting ones were asked
    for with it, and counting it again each decision until they serve would stack scale-ups)."""
    now = obs.time
    panic_s = float(spec.panic_window_seconds)
    stable_s = panic_s * STABLE_WINDOWS_PER_PANIC
    samples = [(t, r) for t, r in state.samples if t > now - stable_s] + [(now, obs.rps)]
    stable = sum(r for _, r in samples) / len(samples)
    recent = [r for t, r in samples if t > now - panic_s]
    panic_rps = sum(recent) / len(recent)
    panic_until = state.panic_until
    if stable > 0 and panic_rps >= PANIC_RATIO * stable:
        panic_until = now + stable_s
    horizon_s = max((v.provisioning_s or 0.0 for v in variants), default=0.0)
    forecast = forecaster.forecast(samples, horizon_s)
    starting = any(v.pending > v.unschedulable for v in variants)
    backlog = 0.0 if starting else obs.waiting / BACKLOG_DRAIN_S
    total = max(stable, panic_rps, obs.rps, forecast) + backlog
    return Demand(samples, stable, panic_rps, forecast, backlog, total, panic_until, now < panic_until, horizon_s)


def _options(
    variants: Sequence[VariantState],
    obs: Observation,
    corr: Mapping[str, float],
    blocked: Mapping[str, tuple[float, int]],
    notes: list[str],
) -> list[VariantOption]:
    """Step 2: what the solver may buy. Capacity is the profile's over the online correction. A variant
    with Unschedulable pods is capped at its ready replicas (its pods starting elsewhere would not help);
    pods scheduled and starting count as capacity, and their variant may still grow."""
    options: list[VariantOption] = []
    for v in variants:
        hi = v.max_replicas
        if v.name in blocked:
            hi = min(hi, max(v.min_replicas, blocked[v.name][1]))
            notes.append(f"{v.name} has Unschedulable pods: capped at {hi} ready replicas")
        cap = {b: v.capacity.bucket(b).max_rps / corr[v.name] for b in obs.mix} if v.capacity is not None else {}
        options.append(VariantOption(v.name, _cost(v), v.gpus_per_replica, v.min_replicas, hi, cap))
    return options


WHOLE_MIX: Bucket = (0, 0)
"""The one bucket of a spread fleet's demand: the whole mix, served alike by every replica."""


def spread(options: Sequence[VariantOption], mix: Mapping[Bucket, float]) -> tuple[list[VariantOption], float]:
    """The variants as a load-balancing gateway uses them, and the share of the mix the pool can serve at all.

    The gateway spreads every request over all replicas by their load, not by prompt length, so each
    replica serves the whole mix and a variant's capacity is its capacity for the mix (`_mix_rps`; 0 when
    it cannot serve a bucket some other variant serves). Exact when the variants' capacities have the same
    shape across buckets; otherwise a lower bound of what the spread fleet serves (capacity for a mix is
    concave and of degree one in the per-bucket capacities, so pooling replicas never serves less than
    the sum of their parts). The per-bucket split that Mélange optimises is the better plan only behind a
    gateway that routes by length. Buckets no variant serves are left out of the mix (and reported)."""
    servable = {b: s for b, s in mix.items() if s > 0 and any(o.capacity_rps.get(b, 0.0) > 0 for o in options)}
    share = sum(servable.values())
    norm = {b: s / share for b, s in servable.items()} if share > 0 else {}
    return [replace(o, capacity_rps={WHOLE_MIX: _mix_rps(o.capacity_rps, norm)}) for o in options], share


def _efficiency_order(options: Sequence[VariantOption], mix: Mapping[Bucket, float]) -> list[VariantOption]:
    """The variants by cost per request/s of the part of the mix each can serve, dearest first: the
    order in which a shrinking fleet gives replicas back."""

    def price(o: VariantOption) -> float:
        servable = {b: s for b, s in mix.items() if o.capacity_rps.get(b, 0.0) > 0}
        rps = _mix_rps(o.capacity_rps, servable) * sum(servable.values()) if servable else 0.0
        return o.cost_per_hour_usd / rps if rps > 0 else math.inf

    return sorted(options, key=price, reverse=True)


def _shrunk(
    options: Sequence[VariantOption],
    fleet: Mapping[str, int],
    peak: Mapping[Bucket, float],
    headroom: float,
    frozen: set[str],
) -> dict[str, int]:
    """Step 4b: the fleet with replicas given back, dearest per request first, each variant as far as the
    rest still serves the window's peak demand (`peak`); `frozen` variants keep theirs."""
    out = dict(fleet)
    for o in _efficiency_order(options, peak):
        lo, hi = max(o.lo, 0), out[o.name]
        if o.name in frozen or hi <= lo:
            continue
        while lo < hi:  # the fewest replicas of o that still cover: coverage only grows with replicas
            mid = (lo + hi) // 2
            if _covers(options, peak, {**out, o.name: mid}, headroom):
                hi = mid
            else:
                lo = mid + 1
        out[o.name] = hi
    return out


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

    demand = _demand(spec, variants, obs, state, forecaster)
    active = obs.rps > 0 or obs.held_requests > 0 or obs.in_flight > 0
    last_active = now if active else state.last_active
    learned = _corrections(variants, obs, state.corrections)
    corr = {v.name: learned.get(v.name, 1.0) for v in variants}
    blocked = {k: b for k, b in state.blocked_until.items() if b[0] > now}
    for v in variants:
        if v.unschedulable > 0 and v.name not in blocked:
            blocked[v.name] = (now + BLOCK_S, v.ready)
    notes: list[str] = []
    by_bucket = _options(variants, obs, corr, blocked, notes)
    options, servable = spread(by_bucket, obs.mix)
    if obs.mix and servable < 1:
        notes.append(f"{1 - servable:.1%} of requests are in buckets no variant serves within the SLO")

    # step 3: the optimum for the demand now
    demand_by_bucket = {WHOLE_MIX: demand.total * servable} if servable > 0 else {}
    mix = solve(options, demand_by_bucket, headroom=headroom, gpu_budget=gpu_budget)
    target = dict(mix.replicas)
    idle_s = now - last_active if last_active is not None else math.inf
    may_zero = spec.scale_to_zero and not active and idle_s >= spec.idle_window_seconds
    cheapest = _cheapest_open(variants, options)
    if sum(target.values()) == 0 and not may_zero and cheapest is not None:
        target[cheapest] = 1

    # step 4: grow what is short, or give back what the window's peak does not need
    window_s = float(spec.scale_down_window_seconds)
    peaks = _window_max(state.peaks, now, window_s, demand.total)
    peak = max(r for _, r in peaks)
    asked = {o.name: min(current[o.name], o.hi) for o in options}
    short = not _covers(options, demand_by_bucket, asked, headroom)
    current_cost = sum(_cost(v) * current[v.name] for v in variants)
    cheaper = mix.unserved_rps == 0 and mix.cost_per_hour_usd < (1 - REMIX_SAVING) * current_cost
    if short:
        target = _growth(options, asked, mix, demand_by_bucket, headroom, gpu_budget)
    since = state.since if state.since is not None else now
    grown_at = {k: t for k, t in state.grown_at.items() if t > now - window_s}
    last_shrink = state.last_shrink
    total = sum(current.values())
    desired = dict(current)
    reason = REASON_HOLD
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
        for v in variants:
            cur, want = current[v.name], target[v.name]
            if want > cur and (short or cheaper or cur < v.min_replicas):
                desired[v.name] = min(want, cur + spec.max_scale_up_step)
                grown_at[v.name] = now
        if desired != current:
            reason = REASON_PANIC if demand.in_panic else REASON_SCALE_UP
        elif _may_shrink(demand, variants, now - since, window_s, short):
            peak_by_bucket = {WHOLE_MIX: peak * servable} if servable > 0 else {}
            smaller = _shrunk(options, current, peak_by_bucket, headroom, set(grown_at))
            if sum(smaller.values()) == 0 and not may_zero:  # one replica stays: the cheapest one there is
                keep = min((v for v in variants if current[v.name] > 0), key=lambda v: (_cost(v), v.name))
                smaller[keep.name] = 1
            saving = sum(_cost(v) * (current[v.name] - smaller[v.name]) for v in variants)
            quiet = last_shrink is None or now - last_shrink >= window_s
            if saving > 0 and (saving >= TOLERANCE * current_cost or quiet):
                desired, reason, last_shrink = smaller, REASON_SCALE_DOWN, now
    if mix.unserved_rps > 0 and reason in (REASON_HOLD, REASON_SCALE_UP, REASON_PANIC):
        notes.append(f"{mix.unserved_rps:.3g} req/s do not fit within the variants' bounds or the GPU budget")
        if reason == REASON_HOLD:
            reason = REASON_SLO_UNREACHABLE
    if blocked and reason in (REASON_SCALE_UP, REASON_PANIC):
        reason = REASON_UNSCHEDULABLE
    decision = _decision(
        obs, variants, by_bucket, demand, mix, target if short else None, corr, headroom, peak, forecaster,
        current, desired, reason, notes,
    )  # fmt: skip
    new_state = PolicyState(
        samples=demand.samples,
        panic_until=demand.panic_until,
        last_active=last_active,
        peaks=peaks,
        since=since,
        grown_at=grown_at,
        last_shrink=last_shrink,
        blocked_until=blocked,
        corrections=learned,
    )
    return decision, new_state


def _growth(
    options: Sequence[VariantOption],
    asked: Mapping[str, int],
    optimum: Mix,
    demand: Mapping[Bucket, float],
    headroom: float,
    gpu_budget: int | None,
) -> dict[str, int]:
    """Step 4a: what a short fleet grows to. The replicas asked for stay (they serve now); what is added
    is either the cheapest replicas to add to them, or what the optimum for the demand has beyond them
    (the rest then goes by scale-down, dearest per request first), whichever leaves the cheaper fleet
    once the spare replicas are gone. Adding the cheapest replica each time a little is missing would
    pile up small GPUs that cost more per request than the one big one the optimum buys."""
    grown = [replace(o, lo=max(o.lo, min(asked[o.name], o.hi))) for o in options]
    # additions come from the variants the optimum uses: each other type added for a sliver of demand is
    # a replica the next scale-down gives back, and a cold start spent on it
    kept = [o if optimum.replicas.get(o.name) else replace(o, hi=o.lo) for o in grown]
    added = solve(kept, demand, headroom=headroom, gpu_budget=gpu_budget)
    if added.unserved_rps > optimum.unserved_rps:
        added = solve(grown, demand, headroom=headroom, gpu_budget=gpu_budget)
    if optimum.unserved_rps == 0 and optimum.cost_per_hour_usd < (1 - TOLERANCE) * added.cost_per_hour_usd:
        return {k: max(n, asked[k]) for k, n in optimum.replicas.items()}
    return dict(added.replicas)


def _may_shrink(demand: Demand, variants: Sequence[VariantState], seen_s: float, window_s: float, short: bool) -> bool:
    """Not in panic, not short, nothing starting (make before break: a re-mix's old replicas stay until
    the new ones serve), and a whole window observed (a restarted autoscaler without its state must not
    give back what the last window needed)."""
    starting = any(v.pending > v.unschedulable for v in variants)
    return not demand.in_panic and not short and not starting and seen_s >= window_s


def _decision(
    obs: Observation,
    variants: Sequence[VariantState],
    options: Sequence[VariantOption],
    demand: Demand,
    mix: Mix,
    grown: Mapping[str, int] | None,
    corr: Mapping[str, float],
    headroom: float,
    peak: float,
    forecaster: Forecaster,
    current: dict[str, int],
    desired: dict[str, int],
    reason: str,
    notes: list[str],
) -> Decision:
    """Step 5: the record of the decision: inputs, formula terms, chosen mix, cost, reason."""
    return Decision(
        time=obs.time,
        reason=reason,
        desired=desired,
        changed=desired != current,
        message=_message(reason, current, desired, demand.total, notes),
        inputs={
            "requestsPerSecond": round(obs.rps, 4),
            "stableRps": round(demand.stable, 4),
            "panicRps": round(demand.panic, 4),
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
            "demandRps": round(demand.total, 4),
            "forecastRps": round(demand.forecast, 4),
            "backlogRps": round(demand.backlog, 4),
            "windowPeakRps": round(peak, 4),
            "forecaster": forecaster.name,
            "horizonSeconds": round(demand.horizon_s, 1),
            "panic": demand.in_panic,
            "headroom": headroom,
            "capacityRpsPerReplica": {o.name: _replica_rps(o, obs.mix) for o in options},
            "correction": dict(corr),
            "maxReplicas": {o.name: o.hi for o in options},
            "solverMix": mix.replicas,
            **({"grownMix": dict(grown)} if grown is not None else {}),
            "unservedRps": mix.unserved_rps,
        },
        mix=desired,
        cost_per_hour_usd=sum(_cost(v) * desired[v.name] for v in variants),
    )


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
