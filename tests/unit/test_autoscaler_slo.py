"""SLO attainment and percentiles read off histogram buckets."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from headway.autoscaler.slo import attainment, delta, fraction_within, quantile

BOUNDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, math.inf)


def histogram(latencies: list[float]) -> dict[float, float]:
    return {le: float(sum(1 for x in latencies if x <= le)) for le in BOUNDS}


@given(st.lists(st.floats(0.001, 5.0), min_size=1, max_size=200), st.sampled_from(BOUNDS[:-1]))
def test_a_synthetic_latency_trace_yields_its_exact_attainment_at_a_bucket_bound(
    latencies: list[float], target: float
) -> None:
    exact = sum(1 for x in latencies if x <= target) / len(latencies)
    assert math.isclose(fraction_within(histogram(latencies), target), exact)


def test_a_target_between_bounds_interpolates_inside_the_bucket() -> None:
    h = histogram([0.3] * 10 + [0.05] * 10)  # half in (0.025, 0.05], half in (0.25, 0.5]
    assert math.isclose(fraction_within(h, 0.375), 0.75)


def test_an_empty_histogram_has_no_attainment_rather_than_a_perfect_one() -> None:
    assert fraction_within(histogram([]), 0.5) is None
    assert attainment({}, {}, 0.5, 0.05, 90, 90).value is None


def test_quantile_matches_prometheus_histogram_quantile() -> None:
    h = histogram([0.2] * 90 + [2.0] * 10)
    assert math.isclose(quantile(h, 0.9), 0.25)  # rank 90 at the top of the (0.1, 0.25] bucket
    assert 1.0 < quantile(h, 0.95) <= 2.5


def test_attainment_is_the_worse_of_ttft_and_itl() -> None:
    ttft = histogram([0.1] * 99 + [3.0])
    itl = histogram([0.02] * 90 + [0.2] * 10)
    a = attainment(ttft, itl, 0.5, 0.05, 90, 90)
    assert math.isclose(a.value, 0.9)


def test_a_counter_reset_makes_the_new_scrape_the_whole_window() -> None:
    before = {0.1: 50.0, math.inf: 100.0}
    assert delta({0.1: 5.0, math.inf: 10.0}, before) == {0.1: 5.0, math.inf: 10.0}
    assert delta({0.1: 55.0, math.inf: 110.0}, before) == {0.1: 5.0, math.inf: 10.0}
