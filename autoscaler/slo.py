"""SLO attainment and percentiles from Prometheus histogram buckets.

Engines export cumulative `le` buckets; the share of requests under a latency target is read off the
bucket counts, interpolating linearly inside the bucket that holds the target (what
`histogram_quantile` does in reverse), so a target that sits between bucket bounds is neither rounded up
to a pass nor down to a miss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Buckets = Sequence[tuple[float, float]]
"""Cumulative (upper bound, count) pairs sorted by bound; the last bound is +Inf."""


def _sorted(buckets: Mapping[float, float] | Buckets) -> list[tuple[float, float]]:
    items = buckets.items() if isinstance(buckets, Mapping) else buckets
    return sorted((float(le), float(c)) for le, c in items)


def fraction_within(buckets: Mapping[float, float] | Buckets, target: float) -> float | None:
    """Share of observations ≤ target; None when the histogram saw nothing."""
    pairs = _sorted(buckets)
    if not pairs or pairs[-1][1] <= 0:
        return None
    total = pairs[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for le, c in pairs:
        if target < le:
            if math.isinf(le):
                return prev_c / total
            share = (target - prev_le) / (le - prev_le) if le > prev_le else 1.0
            return (prev_c + (c - prev_c) * max(0.0, share)) / total
        prev_le, prev_c = le, c
    return 1.0


def quantile(buckets: Mapping[float, float] | Buckets, q: float) -> float | None:
    """The q-quantile (0 < q < 1) as Prometheus' histogram_quantile computes it; None when empty."""
    pairs = _sorted(buckets)
    if not pairs or pairs[-1][1] <= 0:
        return None
    rank = q * pairs[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for le, c in pairs:
        if c >= rank:
            if math.isinf(le):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_c) / (c - prev_c) if c > prev_c else 1.0)
        prev_le, prev_c = le, c
    return pairs[-1][0]


def delta(now: Mapping[float, float], before: Mapping[float, float] | None) -> dict[float, float]:
    """Buckets observed between two scrapes of a cumulative histogram; a counter reset (an engine
    restart) makes the newer scrape the whole window instead of a negative count."""
    if not before or any(now.get(le, 0.0) < c for le, c in before.items()):
        return dict(now)
    return {le: c - before.get(le, 0.0) for le, c in now.items()}


@dataclass(frozen=True)
class Attainment:
    """How a pool did against its SLO over one window."""

    ttft_within: float | None
    itl_within: float | None
    ttft_quantile_s: float | None
    itl_quantile_s: float | None

    @property
    def value(self) -> float | None:
        """A request meets the SLO when both its TTFT and its ITL do; with the two independent the joint
        share is at most the smaller one, which is what is reported (the conservative bound)."""
        parts = [p for p in (self.ttft_within, self.itl_within) if p is not None]
        return min(parts) if parts else None


def attainment(
    ttft: Mapping[float, float],
    itl: Mapping[float, float],
    ttft_s: float,
    itl_s: float,
    ttft_pct: float,
    itl_pct: float,
) -> Attainment:
    return Attainment(
        ttft_within=fraction_within(ttft, ttft_s),
        itl_within=fraction_within(itl, itl_s),
        ttft_quantile_s=quantile(ttft, ttft_pct / 100),
        itl_quantile_s=quantile(itl, itl_pct / 100),
    )
