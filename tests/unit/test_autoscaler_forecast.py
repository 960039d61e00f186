"""Demand forecasts one provisioning time ahead, and the provisioning time read off pods' timestamps."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from headway.api.status import ProvisioningStatus
from headway.autoscaler.forecast import MAX_RATIO, Arima, Constant, Trend, make_forecaster
from headway.autoscaler.policy import PolicyState, decide
from headway.autoscaler.provisioning import Provisioning, pod_provisioning, variant_provisioning
from tests.unit.test_autoscaler_policy import SPEC, a100, obs


def ramp(slope: float, base: float = 10.0, n: int = 12, dt: float = 15.0) -> list[tuple[float, float]]:
    return [(i * dt, base + slope * i * dt) for i in range(n)]


def test_the_trend_forecast_sees_a_rising_ramp_ahead_and_the_constant_one_does_not() -> None:
    samples = ramp(slope=0.05)  # +0.05 req/s per second
    now_value, ahead = samples[-1][1], samples[-1][1] + 0.05 * 120
    trend = Trend().forecast(samples, horizon_s=120)
    constant = Constant().forecast(samples, horizon_s=120)
    assert constant < now_value
    assert now_value < trend <= ahead * 1.05


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.floats(min_value=1.0, max_value=100.0))
def test_on_flat_noise_the_trend_stays_near_the_mean(seed: int, level: float) -> None:
    rng = random.Random(seed)
    samples = [(i * 5.0, level * (1 + rng.uniform(-0.1, 0.1))) for i in range(36)]
    mean = sum(r for _, r in samples) / len(samples)
    assert Trend().forecast(samples, horizon_s=90) == pytest.approx(mean, rel=0.2)


def test_a_steep_burst_is_capped_and_forecasts_are_never_negative() -> None:
    samples = ramp(slope=2.0, base=1.0)
    mean = sum(r for _, r in samples) / len(samples)
    assert Trend().forecast(samples, horizon_s=600) == pytest.approx(MAX_RATIO * mean)
    assert Trend().forecast(ramp(slope=-1.0, base=50.0), horizon_s=600) == 0.0
    assert Trend().forecast([], 60) == 0.0 and Constant().forecast([], 60) == 0.0


def test_arima_carries_a_ramp_forward_and_its_projection_is_capped() -> None:
    samples = ramp(slope=0.05)
    ahead = samples[-1][1] + 0.05 * 120
    assert Arima().forecast(samples, horizon_s=120) == pytest.approx(ahead, rel=0.01)
    # a jump at the end of a short window leaks into the fitted drift: the cap bounds what it projects
    flat_then_jump = [(i * 15.0, 20.0) for i in range(11)] + [(165.0, 30.0)]
    mean = sum(r for _, r in flat_then_jump) / len(flat_then_jump)
    assert 30.0 < Arima().forecast(flat_then_jump, horizon_s=600) <= MAX_RATIO * mean
    assert Arima().forecast(ramp(slope=2.0, base=1.0), horizon_s=600) == pytest.approx(MAX_RATIO * ramp_mean(2.0, 1.0))
    assert Arima().forecast(samples[:4], horizon_s=120) == pytest.approx(sum(r for _, r in samples[:4]) / 4)
    assert Arima().forecast([], 60) == 0.0


def ramp_mean(slope: float, base: float) -> float:
    samples = ramp(slope=slope, base=base)
    return sum(r for _, r in samples) / len(samples)


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.floats(min_value=1.0, max_value=100.0))
def test_on_flat_noise_arima_stays_near_the_level(seed: int, level: float) -> None:
    rng = random.Random(seed)
    samples = [(i * 15.0, level * (1 + rng.uniform(-0.1, 0.1))) for i in range(12)]
    assert 0.0 <= Arima().forecast(samples, horizon_s=90) <= MAX_RATIO * level * 1.1


def test_an_unknown_forecaster_is_named_in_the_error() -> None:
    assert make_forecaster("trend").name == "trend"
    with pytest.raises(ValueError, match="unknown forecaster 'prophet'; choose one of constant, trend, arima"):
        make_forecaster("prophet")


def test_on_a_ramp_the_trend_sizes_for_the_rate_one_provisioning_time_ahead() -> None:
    """Same samples, same fleet: the trend forecaster asks for more than the constant one, and says
    why in the decision's terms (forecast, horizon = the variant's provisioning time)."""
    results = {}
    for name in ("constant", "trend"):
        state, variants = PolicyState(), [a100(3, provisioning_s=240.0)]
        for t, r in ramp(slope=0.1, base=20.0, n=5, dt=2.0):
            d, state = decide(SPEC, variants, obs(t, r), state, forecaster=make_forecaster(name))
        results[name] = d
    assert results["trend"].desired["a100"] > results["constant"].desired["a100"]
    terms = results["trend"].terms
    assert terms["horizonSeconds"] == 240.0 and terms["forecaster"] == "trend"
    assert terms["forecastRps"] > results["constant"].terms["demandRps"]
    assert results["trend"].inputs["provisioningSeconds"] == {"a100": 240.0}


def pod(created: str, scheduled: str | None, started: str | None, ready: str | None) -> dict:
    conds = []
    if scheduled:
        conds.append({"type": "PodScheduled", "status": "True", "lastTransitionTime": scheduled})
    if ready:
        conds.append({"type": "Ready", "status": "True", "lastTransitionTime": ready})
    statuses = [{"name": "engine", "state": {"running": {"startedAt": started}}}] if started else []
    return {
        "metadata": {"creationTimestamp": created},
        "status": {"conditions": conds, "containerStatuses": statuses},
    }


def test_a_pods_provisioning_splits_into_scheduling_starting_and_loading() -> None:
    p = pod("2026-11-24T10:00:00Z", "2026-11-24T10:00:40Z", "2026-11-24T10:01:10Z", "2026-11-24T10:03:10Z")
    assert pod_provisioning(p) == Provisioning(40.0, 30.0, 120.0)
    assert pod_provisioning(p).total_s == 190.0  # type: ignore[union-attr]
    assert pod_provisioning(pod("2026-11-24T10:00:00Z", "2026-11-24T10:00:01Z", None, None)) is None
    no_start = pod("2026-11-24T10:00:00Z", "2026-11-24T10:00:05Z", None, "2026-11-24T10:00:25Z")
    assert pod_provisioning(no_start) == Provisioning(5.0, 0.0, 20.0)


def test_a_variants_provisioning_is_the_median_of_its_pods_and_round_trips_through_status() -> None:
    t = "2026-11-24T10:00:{:02d}Z"
    pods = [
        pod(t.format(0), t.format(s), t.format(s + 1), t.format(s + 1 + load))
        for s, load in ((1, 10), (2, 20), (30, 25))
    ]
    v = variant_provisioning(pods)
    assert v == Provisioning(2.0, 1.0, 20.0, pods=3)
    assert Provisioning.from_status(v.to_status()) == v  # type: ignore[union-attr]
    assert variant_provisioning([]) is None and Provisioning.from_status(None) is None
    with pytest.raises(ValidationError, match="schedulingSeconds"):  # a partial record never reaches the policy
        ProvisioningStatus.model_validate({"totalSeconds": 3})
