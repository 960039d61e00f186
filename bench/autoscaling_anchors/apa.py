"""AIBrix APA (vllm-project/aibrix@e3e10f9: pkg/controller/podautoscaler/algorithm/apa.go, defaults from
pkg/controller/podautoscaler/context/context.go).

    r = per_pod / target
    r > 1 + tol_up:   desired = min(ceil(N·r), ceil(2N))
    r < 1 - tol_down: desired = max(ceil(N·r), floor(N/2))
    otherwise hold

with tolerances 0.1, the 300 s scale-down cooldown, the metric averaged over the 180 s window, and the
same sample metric as KPA (vllm:kv_cache_usage_perc, target 0.5).
"""

from __future__ import annotations

import math
from collections import deque

from bench.autoscaling_anchors import PodMetrics
from bench.autoscaling_anchors.kpa import SCALE_DOWN_COOLDOWN_S, STABLE_WINDOW_S, TARGET, TOLERANCE


class Apa:
    name = "aibrix-apa"

    def __init__(self, min_replicas: int = 1, max_replicas: int = 1000, target: float = TARGET) -> None:
        self.min, self.max, self.target = min_replicas, max_replicas, target
        self.samples: deque[tuple[float, float]] = deque()
        self.last_change = -math.inf

    def desired(self, now: float, current: int, m: PodMetrics) -> int:
        self.samples.append((now, m.kv_cache_usage_avg))
        while self.samples and self.samples[0][0] <= now - STABLE_WINDOW_S:
            self.samples.popleft()
        per_pod = sum(v for _, v in self.samples) / len(self.samples)
        n = max(current, 1)
        r = per_pod / self.target
        if r > 1 + TOLERANCE:
            want = min(math.ceil(n * r), math.ceil(2 * n))
        elif r < 1 - TOLERANCE:
            want = max(math.ceil(n * r), math.floor(n / 2))
            if now - self.last_change < SCALE_DOWN_COOLDOWN_S:
                want = current
        else:
            want = current
        want = max(self.min, min(self.max, want))
        if want != current:
            self.last_change = now
        return want
