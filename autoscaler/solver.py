"""The cheapest replica mix that serves a demand, as a mixed-integer program (scipy.optimize.milp / HiGHS).

Mélange's formulation, with the bucket split made continuous: n_v replicas of variant v (integer,
within its bounds), f_bv the share of bucket b's rate λ_b that v serves. Each replica offers one
replica-second per second, a request of bucket b on v uses 1/cap_bv of it:

    minimise   Σ_v cost_v·n_v  +  M·Σ_b λ_b·u_b
    subject to Σ_v f_bv + u_b = 1                 every bucket b with demand
               Σ_b f_bv·λ_b·headroom/cap_bv ≤ n_v every variant v
               Σ_v gpus_v·n_v ≤ budget            when a GPU budget is set
               lo_v ≤ n_v ≤ hi_v,  0 ≤ f_bv, u_b ≤ 1

u_b is the share left unserved. Its penalty M is larger than any fleet's price, so it is non-zero only
when bounds or the budget leave no feasible mix; the result then says how much demand does not fit
instead of failing, and the budget is spent where it serves the most.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from headway.autoscaler.capacity import Bucket

_UNSERVED_PENALTY_USD = 1e6
_TIE_BREAK = 1e-6
"""Per replica, so that among equal-cost mixes the one with fewer replicas wins."""


@dataclass(frozen=True)
class VariantOption:
    name: str
    cost_per_hour_usd: float
    """Price of one replica (all its GPUs)."""
    gpus: int
    lo: int
    hi: int
    capacity_rps: Mapping[Bucket, float]
    """Rate one replica serves within the SLO, per bucket (0: it cannot meet the SLO there)."""


@dataclass(frozen=True)
class Mix:
    replicas: dict[str, int]
    cost_per_hour_usd: float
    unserved_rps: float = 0.0
    shares: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per variant, the share of each bucket ("<in>x<out>") it serves."""


def solve(
    options: Sequence[VariantOption],
    demand_rps: Mapping[Bucket, float],
    *,
    headroom: float = 1.0,
    gpu_budget: int | None = None,
) -> Mix:
    """Min-cost mix; `headroom` > 1 keeps replicas below their SLO capacity by that factor."""
    buckets = [b for b, r in demand_rps.items() if r > 0]
    nv, nb = len(options), len(buckets)
    pairs = [(bi, vi) for bi, b in enumerate(buckets) for vi, o in enumerate(options) if o.capacity_rps.get(b, 0) > 0]
    # variable layout: n_v (nv) | f_bv (len(pairs)) | u_b (nb)
    nf = len(pairs)
    size = nv + nf + nb
    cost = np.zeros(size)
    cost[:nv] = [o.cost_per_hour_usd + _TIE_BREAK for o in options]
    cost[nv + nf :] = [_UNSERVED_PENALTY_USD * demand_rps[b] for b in buckets]
    rows, lo_b, hi_b = [], [], []
    for bi in range(nb):
        row = np.zeros(size)
        for k, (pb, _) in enumerate(pairs):
            if pb == bi:
                row[nv + k] = 1.0
        row[nv + nf + bi] = 1.0
        rows.append(row)
        lo_b.append(1.0)
        hi_b.append(1.0)
    for vi, o in enumerate(options):
        row = np.zeros(size)
        row[vi] = -1.0
        for k, (pb, pv) in enumerate(pairs):
            if pv == vi:
                b = buckets[pb]
                row[nv + k] = demand_rps[b] * headroom / o.capacity_rps[b]
        rows.append(row)
        lo_b.append(-np.inf)
        hi_b.append(0.0)
    if gpu_budget is not None:
        row = np.zeros(size)
        row[:nv] = [o.gpus for o in options]
        rows.append(row)
        lo_b.append(-np.inf)
        hi_b.append(float(gpu_budget))
    lower = np.concatenate([[o.lo for o in options], np.zeros(nf + nb)])
    upper = np.concatenate([[o.hi for o in options], np.ones(nf + nb)])
    integrality = np.concatenate([np.ones(nv), np.zeros(nf + nb)])
    constraints = [LinearConstraint(np.array(rows), lo_b, hi_b)] if rows else []
    res = milp(cost, constraints=constraints, bounds=Bounds(lower, upper), integrality=integrality)
    if res.x is None:  # only the bounds themselves can be infeasible (mins over the budget)
        replicas = {o.name: o.lo for o in options}
        return Mix(replicas, sum(o.cost_per_hour_usd * o.lo for o in options), sum(demand_rps.values()))
    x = res.x
    replicas = {o.name: round(x[vi]) for vi, o in enumerate(options)}
    shares: dict[str, dict[str, float]] = {o.name: {} for o in options}
    for k, (bi, vi) in enumerate(pairs):
        if x[nv + k] > 1e-6:
            b = buckets[bi]
            shares[options[vi].name][f"{b[0]}x{b[1]}"] = round(float(x[nv + k]), 4)
    unserved = sum(float(x[nv + nf + bi]) * demand_rps[b] for bi, b in enumerate(buckets))
    total = sum(o.cost_per_hour_usd * replicas[o.name] for o in options)
    return Mix(replicas, total, round(unserved, 6), shares)
