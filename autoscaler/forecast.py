"""Demand forecasters: what the request rate will be when a replica asked for now starts serving.

A replica takes its pool's provisioning time (node, image pull, weight load: minutes on real GPUs) to
serve. Sizing for the rate seen now is sizing for the past: on a rising diurnal slope the fleet is
always one provisioning time short. A forecaster looks `horizon_s` ahead from the samples of the stable
window. It only ever raises demand (the policy takes max(window mean, panic mean, forecast)); falling
demand is the scale-down window's business, which must not be hurried by a guess.

- `constant`: the future is the window mean (the HPA's and KPA's implicit model).
- `trend`: a straight line fitted to the window's samples (least squares), extrapolated to the horizon
  with damping so a short burst does not project a runaway, and capped at `MAX_RATIO` × the window mean.
- `arima`: ARIMA(2,1,0): an autoregression with drift on the window's differences, fitted by
  conditional least squares and rolled forward step by step to the horizon, with the same cap.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from typing import Protocol

import numpy as np

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


class Arima:
    """ARIMA(p,1,0) with drift: Δr_t = c + Σ φ_i·Δr_(t−i) + ε, fitted by least squares on the window.

    Differencing removes the diurnal level, so what is fitted is how changes follow changes: a ramp's
    steady increments carry on (the drift). On a window of a dozen samples a one-off jump also leaks
    into the drift, so the projection is capped like the trend's. The forecast rolls the fitted
    recursion forward one sampling interval at a time to the horizon. With fewer than `min_fit`
    differences, or an explosive fit, it falls back to the window mean.
    """

    name = "arima"

    def __init__(self, p: int = 2, min_fit: int = 4) -> None:
        self.p, self.min_fit = p, min_fit

    def forecast(self, samples: Sequence[tuple[float, float]], horizon_s: float) -> float:
        if not samples:
            return 0.0
        rates = np.array([r for _, r in samples], dtype=float)
        mean_r = float(rates.mean())
        diffs = np.diff(rates)
        rows = len(diffs) - self.p
        if rows < self.min_fit:
            return mean_r
        design = np.column_stack([np.ones(rows)] + [diffs[self.p - i - 1 : len(diffs) - i - 1] for i in range(self.p)])
        coef, *_ = np.linalg.lstsq(design, diffs[self.p :], rcond=None)
        drift, phi = float(coef[0]), coef[1:]
        if float(np.abs(phi).sum()) >= 1.0:  # not stationary: its roll-out would run away
            return mean_r
        step_s = statistics.median(b[0] - a[0] for a, b in itertools.pairwise(samples))
        steps = max(1, math.ceil(max(0.0, horizon_s) / step_s)) if step_s > 0 else 1
        history, level = list(diffs[-self.p :]), float(rates[-1])
        for _ in range(steps):
            nxt = drift + float(np.dot(phi, history[::-1][: self.p]))
            history.append(nxt)
            level += nxt
        return max(0.0, min(level, MAX_RATIO * mean_r))


FORECASTERS: dict[str, type[Constant] | type[Trend] | type[Arima]] = {
    "constant": Constant,
    "trend": Trend,
    "arima": Arima,
}


def make_forecaster(name: str) -> Forecaster:
    try:
        return FORECASTERS[name]()
    except KeyError:
        raise ValueError(f"unknown forecaster {name!r}; choose one of {', '.join(FORECASTERS)}") from None
