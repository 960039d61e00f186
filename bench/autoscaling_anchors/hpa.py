"""A Kubernetes HPA (via KEDA) on vllm:num_requests_waiting, as the vLLM production-stack tutorial sets it up
(vllm-project/production-stack: tutorials/20-keda-autoscaling.md: threshold 5, pollingInterval 15 s).

The HPA's algorithm (kubernetes.io, Horizontal Pod Autoscaling):

    desired = ceil(current · avg_waiting / target), skipped while |avg_waiting/target - 1| ≤ 0.1
    scale-up at most max(+100 %, +4 pods) per 15 s; scale-down to the largest recommendation of the
    last 300 s (stabilisation window)
"""

from __future__ import annotations

import math
from collections import deque

from bench.autoscaling_anchors import PodMetrics

TARGET_WAITING = 5.0
SYNC_S = 15.0
TOLERANCE = 0.1
STABILIZATION_DOWN_S = 300.0


class Hpa:
    name = "hpa-waiting"
    interval_s = SYNC_S

    def __init__(self, min_replicas: int = 1, max_replicas: int = 1000, target: float = TARGET_WAITING) -> None:
        self.min, self.max, self.target = min_replicas, max_replicas, target
        self.recs: deque[tuple[float, int]] = deque()

    def desired(self, now: float, current: int, m: PodMetrics) -> int:
        ratio = m.waiting_avg / self.target
        want = current if abs(ratio - 1) <= TOLERANCE else math.ceil(max(current, 1) * ratio)
        want = max(self.min, min(self.max, want))
        self.recs.append((now, want))
        while self.recs and self.recs[0][0] <= now - STABILIZATION_DOWN_S:
            self.recs.popleft()
        if want < current:
            want = min(current, max(n for _, n in self.recs))
        elif want > current:
            want = min(want, max(2 * current, current + 4))
        return want
