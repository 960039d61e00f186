"""KubeAI's model autoscaler (substratusai/kubeai@2f32ef4: internal/modelautoscaler/autoscaler.go,
internal/modelclient/scale.go; defaults from charts/kubeai/values.yaml and api/k8s/v1/model_types.go).

    desired = ceil( SMA over timeWindow/interval samples( Σ proxies active_requests ) / targetRequests )

interval 10 s, timeWindow 10 min (60 samples), targetRequests 100; a scale-down needs
ceil(scaleDownDelaySeconds/interval) = 3 consecutive scale-down decisions, and any other decision resets
the count.
"""

from __future__ import annotations

import math
from collections import deque

from bench.autoscaling_anchors import PodMetrics

INTERVAL_S = 10.0
TIME_WINDOW_S = 600.0
TARGET_REQUESTS = 100.0
SCALE_DOWN_DELAY_S = 30.0


class KubeAi:
    name = "kubeai"
    interval_s = INTERVAL_S

    def __init__(self, min_replicas: int = 1, max_replicas: int = 1000, target: float = TARGET_REQUESTS) -> None:
        self.min, self.max, self.target = min_replicas, max_replicas, target
        self.samples: deque[float] = deque(maxlen=int(TIME_WINDOW_S / INTERVAL_S))
        self.down_streak = 0

    def desired(self, now: float, current: int, m: PodMetrics) -> int:
        self.samples.append(m.active_requests_total)
        want = math.ceil(sum(self.samples) / len(self.samples) / self.target)
        want = max(self.min, min(self.max, want))
        if want < current:
            self.down_streak += 1
            if self.down_streak < math.ceil(SCALE_DOWN_DELAY_S / INTERVAL_S):
                return current
        self.down_streak = 0
        return want
