"""The min-cost mix equals brute force, respects bounds and the GPU budget, and avoids infeasible buckets."""

from __future__ import annotations

import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from headway.autoscaler.solver import VariantOption, solve

B = (512, 256)


def brute_force(options: list[VariantOption], rps: float) -> float:
    best = math.inf
    for ns in itertools.product(*(range(o.lo, o.hi + 1) for o in options)):
        if sum(n * o.capacity_rps[B] for n, o in zip(ns, options, strict=True)) >= rps - 1e-9:
            best = min(best, sum(n * o.cost_per_hour_usd for n, o in zip(ns, options, strict=True)))
    return best


option = st.builds(
    lambda cost, cap, lo, span: VariantOption(f"v{cost}-{cap}", cost, 1, lo, lo + span, {B: cap}),
    st.floats(0.5, 10).map(lambda x: round(x, 2)),
    st.floats(0.5, 20).map(lambda x: round(x, 2)),
    st.integers(0, 1),
    st.integers(0, 4),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(option, min_size=1, max_size=3, unique_by=lambda o: o.name), st.floats(0.1, 60))
def test_the_mix_costs_what_brute_force_finds_cheapest(options: list[VariantOption], rps: float) -> None:
    best = brute_force(options, rps)
    mix = solve(options, {B: rps})
    if math.isinf(best):
        assert mix.unserved_rps > 0
    else:
        assert mix.unserved_rps == 0
        assert math.isclose(mix.cost_per_hour_usd, best, rel_tol=1e-6, abs_tol=1e-6)
    for o in options:
        assert o.lo <= mix.replicas[o.name] <= o.hi


def test_cheap_small_gpus_serve_low_load_and_a_big_gpu_wins_at_high_load() -> None:
    l4 = VariantOption("l4", 0.8, 1, 0, 20, {B: 1.5})
    h100 = VariantOption("h100", 4.0, 1, 0, 20, {B: 30.0})
    assert solve([l4, h100], {B: 2.0}).replicas == {"l4": 2, "h100": 0}
    assert solve([l4, h100], {B: 32.0}).replicas == {"l4": 2, "h100": 1}
    assert solve([l4, h100], {B: 60.0}).replicas == {"l4": 0, "h100": 2}


def test_a_bucket_a_variant_cannot_serve_goes_to_one_that_can() -> None:
    long_prompt, short = (4096, 64), (256, 64)
    l4 = VariantOption("l4", 0.8, 1, 0, 10, {long_prompt: 0.0, short: 5.0})
    a100 = VariantOption("a100", 2.5, 1, 0, 10, {long_prompt: 2.0, short: 40.0})
    mix = solve([l4, a100], {long_prompt: 1.0, short: 25.0})
    assert mix.replicas == {"l4": 1, "a100": 1}
    assert "4096x64" not in mix.shares["l4"]


def test_over_the_gpu_budget_the_mix_fits_the_budget_and_reports_the_shortfall() -> None:
    a100 = VariantOption("a100", 5.0, 2, 0, 10, {B: 10.0})
    mix = solve([a100], {B: 100.0}, gpu_budget=8)
    assert mix.replicas == {"a100": 4}
    assert math.isclose(mix.unserved_rps, 60.0, rel_tol=1e-6)


def test_headroom_keeps_replicas_below_their_slo_capacity() -> None:
    a100 = VariantOption("a100", 2.5, 1, 0, 10, {B: 10.0})
    assert solve([a100], {B: 20.0}).replicas == {"a100": 2}
    assert solve([a100], {B: 20.0}, headroom=1.2).replicas == {"a100": 3}
