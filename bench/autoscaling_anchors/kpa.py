"""AIBrix KPA (vllm-project/aibrix@e3e10f9: pkg/controller/podautoscaler/algorithm/kpa.go, defaults from
pkg/controller/podautoscaler/context/context.go).

Knative's algorithm with AIBrix's defaults: stable window 180 s, panic window 60 s, panic threshold 2.0,
tolerance 0.1 up and down, at most 2× up and ½ down per step, scale-down cooldown 300 s. The sample
metric and target are AIBrix's own sample: gpu_cache_usage_perc (vllm:kv_cache_usage_perc) at 0.5.

    desired = ceil(total / target)   only when the per-pod value leaves [target(1-tol), target(1+tol)]
    clamped to [floor(ready/2), max(1, ceil(2·ready))]
    panic when panic/stable > 2: desired = max(stable, panic) and never below the current count
"""

from __future__ import annotations

import math
from collections import deque

from bench.autoscaling_anchors import PodMetrics

STABLE_WINDOW_S = 180.0
PANIC_WINDOW_S = 60.0
PANIC_THRESHOLD = 2.0
TOLERANCE = 0.1
MAX_UP_RATE = 2.0
MAX_DOWN_RATE = 2.0
SCALE_DOWN_COOLDOWN_S = 300.0
TARGET = 0.5


class Kpa:
    name = "aibrix-kpa"

    def __init__(self, min_replicas: int = 1, max_replicas: int = 1000, target: float = TARGET) -> None:
        self.min, self.max, self.target = min_replicas, max_replicas, target
        self.samples: deque[tuple[float, float]] = deque()  # (time, total metric)
        self.last_change = -math.inf
        self.panic_until = -math.inf

    def _avg(self, now: float, window: float) -> float:
        vals = [v for t, v in self.samples if t > now - window]
        return sum(vals) / len(vals) if vals else 0.0

    def desired(self, now: float, current: int, m: PodMetrics) -> int:
        self.samples.append((now, m.kv_cache_usage_avg * m.ready))
        while self.samples and self.samples[0][0] <= now - STABLE_WINDOW_S:
            self.samples.popleft()
        ready = max(m.ready, 1)
        stable, panic = self._avg(now, STABLE_WINDOW_S), self._avg(now, PANIC_WINDOW_S)
        want_stable, want_panic = math.ceil(stable / self.target), math.ceil(panic / self.target)
        if stable > 0 and panic / stable > PANIC_THRESHOLD:
            self.panic_until = now + STABLE_WINDOW_S
        per_pod = stable / ready
        if self.target * (1 - TOLERANCE) <= per_pod <= self.target * (1 + TOLERANCE):
            want = current
        elif now < self.panic_until:
            want = max(want_stable, want_panic, current)
        else:
            want = want_stable
        lo, hi = math.floor(ready / MAX_DOWN_RATE), max(1, math.ceil(MAX_UP_RATE * ready))
        want = max(lo, min(hi, want))
        if want < current and now - self.last_change < SCALE_DOWN_COOLDOWN_S:
            want = current
        want = max(self.min, min(self.max, want))
        if want != current:
            self.last_change = now
        return want
