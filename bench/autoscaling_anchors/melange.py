"""AIBrix's GPU optimizer, a port of Mélange (vllm-project/aibrix@e3e10f9:
python/aibrix/aibrix/gpu_optimizer/optimizer/solver/melange/solver.py, load_monitor/monitor.py; Griggs et
al., arXiv 2404.14527), driving one Deployment per GPU type through AIBrix KPA
(samples/autoscaling/optimizer-kpa.yaml: KPA on the optimizer's `vllm:deployment_replicas`).

Every 10 s the load monitor takes the request rate as max(240 s window mean, current) and the solver
splits each token bucket's rate into `slice_factor` slices, assigns every slice to one GPU type and buys
whole GPUs:

    min Σ_g cost_g·y_g  s.t.  Σ_g x_sg = 1 ∀s;  Σ_s x_sg·r_s/tput_g(bucket(s)) ≤ y_g ∀g;  x ∈ {0,1}, y ∈ ℤ≥0

tput_g is the profile's highest throughput meeting the SLO (gen_profile.py). The replicas it asks for go
through KPA's limits (≤2× up, ≥½ down per step, 300 s scale-down cooldown), as the sample deploys it.
`slice_factor` 4 is this re-implementation's choice (the value in AIBrix's deployment was not confirmed).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from bench.autoscaling_anchors.kpa import MAX_DOWN_RATE, MAX_UP_RATE, SCALE_DOWN_COOLDOWN_S

INTERVAL_S = 10.0
WINDOW_S = 240.0
SLICE_FACTOR = 4

Bucket = tuple[int, int]


def solve(
    cost: Mapping[str, float], tput: Mapping[str, Mapping[Bucket, float]], rate: Mapping[Bucket, float]
) -> dict[str, int]:
    gpus = list(cost)
    slices = [(b, r / SLICE_FACTOR) for b, r in rate.items() if r > 0 for _ in range(SLICE_FACTOR)]
    ng, ns = len(gpus), len(slices)
    if not ns:
        return dict.fromkeys(gpus, 0)
    size = ng + ns * ng  # y_g, then x_sg
    c = np.zeros(size)
    c[:ng] = [cost[g] for g in gpus]
    rows, lo, hi = [], [], []
    for s in range(ns):
        row = np.zeros(size)
        row[ng + s * ng : ng + (s + 1) * ng] = 1
        rows.append(row)
        lo.append(1)
        hi.append(1)
    upper = np.full(size, np.inf)
    for gi, g in enumerate(gpus):
        row = np.zeros(size)
        row[gi] = -1
        for s, (b, r) in enumerate(slices):
            t = tput[g].get(b, 0.0)
            if t > 0:
                row[ng + s * ng + gi] = r / t
            else:
                upper[ng + s * ng + gi] = 0  # this GPU cannot serve the bucket within the SLO
        rows.append(row)
        lo.append(-np.inf)
        hi.append(0)
    upper[ng:] = np.minimum(upper[ng:], 1)
    res = milp(
        c,
        constraints=[LinearConstraint(np.array(rows), lo, hi)],
        bounds=Bounds(np.zeros(size), upper),
        integrality=np.ones(size),
    )
    if res.x is None:
        return dict.fromkeys(gpus, 0)
    return {g: round(res.x[gi]) for gi, g in enumerate(gpus)}


class Melange:
    name = "aibrix-gpu-optimizer"
    interval_s = INTERVAL_S

    def __init__(
        self, cost: Mapping[str, float], tput: Mapping[str, Mapping[Bucket, float]], max_replicas: int
    ) -> None:
        self.cost, self.tput, self.max = cost, tput, max_replicas
        self.samples: deque[tuple[float, float]] = deque()
        self.last_change = dict.fromkeys(cost, -math.inf)

    def desired(
        self, now: float, current: Mapping[str, int], ready: Mapping[str, int], rps: float, mix: Mapping[Bucket, float]
    ) -> dict[str, int]:
        self.samples.append((now, rps))
        while self.samples and self.samples[0][0] <= now - WINDOW_S:
            self.samples.popleft()
        rate = max(sum(r for _, r in self.samples) / len(self.samples), rps)
        target = solve(self.cost, self.tput, {b: rate * s for b, s in mix.items()})
        out = {}
        for g, want in target.items():
            cur, r = current[g], max(ready[g], 1)
            want = max(math.floor(r / MAX_DOWN_RATE), min(max(1, math.ceil(MAX_UP_RATE * r)), want))
            if want < cur and now - self.last_change[g] < SCALE_DOWN_COOLDOWN_S:
                want = cur
            want = min(self.max, want)
            if want != cur:
                self.last_change[g] = now
            out[g] = want
        if not any(out.values()):  # the optimizer keeps at least one replica of the cheapest type
            out[min(self.cost, key=lambda g: self.cost[g])] = 1
        return out
