"""Demand forecasters: what the request rate will be when a replica asked for now starts serving.

A replica takes its pool's provisioning time (node, image pull, weight load: minutes on real GPUs) to
serve. Sizing for the rate seen now is sizing for the past: on a rising diurnal slope the fleet is
always one provisioning time short. A forecaster looks `horizon_s` ahead from the samples of the stable
window. It only ever raises demand (the policy takes max(window mean, panic mean, forecast)); falling
demand is the scale-down window's business, which must not be hurried by a guess.

- `constant`: the future is the window mean (the HPA's and KPA's implicit model).
- `trend`: a straight line fitted to the window's samples (least squares), extrapolated to the horizon
  with damping so a short burst does not project a runaway, and capped at `MAX_RATIO` × the window mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

MAX_RATIO = 2.0


class Forecaster(Protocol):
    name: str

    def forecast(self, samples: Sequence[tuple[float, float]], horizon_s: float) -> float:
        """Requests/s expected `horizon_s` after the last sample; samples are (time, rps), oldest first."""
        ...


class Constant:
    name = "constant"

    def forecast(self, samples: Sequence[tuple[float, float]], horizon_s: float) -> float:
        return sum(r for _, r in samples) / len(samples) if samples else 0.0


class Trend:
    """A least-squares line through the window's samples, extrapolated from the last one.

    The extrapolation is damped with time constant `tau_s`: the effective horizon is
    τ(1 − e^(−h/τ)), so a trend is believed for minutes, not for hours, whatever the sampling interval.
    """

    name = "trend"

    def __init__(self, tau_s: float = 600.0) -> None:
        self.tau_s = tau_s

    def forecast(self, samples: Sequence[tuple[float, float]], horizon_s: float) -> float:
        if not samples:
            return 0.0
        n = len(samples)
        mean_r = sum(r for _, r in samples) / n
        mean_t = sum(t for t, _ in samples) / n
        var_t = sum((t - mean_t) ** 2 for t, _ in samples)
        if n < 3 or var_t <= 0:
            return mean_r
        slope = sum((t - mean_t) * (r - mean_r) for t, r in samples) / var_t
        last_t = samples[-1][0]
        ahead = self.tau_s * (1 - math.exp(-max(0.0, horizon_s) / self.tau_s))
        value = mean_r + slope * (last_t - mean_t + ahead)
        return max(0.0, min(value, MAX_RATIO * mean_r))


FORECASTERS: dict[str, type[Constant] | type[Trend]] = {"constant": Constant, "trend": Trend}


def make_forecaster(name: str) -> Forecaster:
    try:
        return FORECASTERS[name]()
    except KeyError:
        raise ValueError(f"unknown forecaster {name!r}; choose one of {', '.join(FORECASTERS)}") from None
