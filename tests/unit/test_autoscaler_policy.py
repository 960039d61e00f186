"""The scaling policy on a virtual clock: what it does to demand steps, bursts, oscillation, Pending pods,
stale metrics, idle pools and restarts."""

from __future__ import annotations

import json
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from headway.api.modelpool import Autoscaling
from headway.autoscaler import policy
from headway.autoscaler.capacity import BucketCapacity, GpuCapacity, LatencyPoint
from headway.autoscaler.policy import Observation, PolicyState, VariantState, decide

B = (512, 256)
MIX = {B: 1.0}
SPEC = Autoscaling(enabled=True, scale_down_window_seconds=120, panic_window_seconds=10, max_scale_up_step=4)


def capacity(gpu: str, max_rps: float, itl_s: float = 0.04) -> GpuCapacity:
    points = [LatencyPoint(rps=r, ttft_s=0.2, itl_s=itl_s) for r in (0.0, max_rps)]
    return GpuCapacity(
        gpu=gpu, buckets=[BucketCapacity(input_tokens=512, output_tokens=256, max_rps=max_rps, points=points)]
    )


def variant(name: str, replicas: int, *, cost: float, max_rps: float, **kw: object) -> VariantState:
    return VariantState(
        name=name,
        replicas=replicas,
        ready=kw.pop("ready", replicas),  # type: ignore[arg-type]
        cost_per_gpu_hour_usd=cost,
        max_replicas=kw.pop("max_replicas", 20),  # type: ignore[arg-type]
        capacity=capacity(name, max_rps),
        **kw,  # type: ignore[arg-type]
    )


def a100(replicas: int, **kw: object) -> VariantState:
    return variant("a100", replicas, cost=2.5, max_rps=10.0, **kw)


def l4(replicas: int, **kw: object) -> VariantState:
    return variant("l4", replicas, cost=0.8, max_rps=1.5, **kw)


def obs(t: float, rps: float, **kw: object) -> Observation:
    return Observation(time=t, fresh=True, rps=rps, mix=MIX, **kw)  # type: ignore[arg-type]


class Fleet:
    """Applies each decision at once (pods ready immediately) and counts scale events."""

    def __init__(self, variants: list[VariantState], spec: Autoscaling = SPEC) -> None:
        self.variants, self.spec, self.state = variants, spec, PolicyState()
        self.events = 0
        self.history: list[dict[str, int]] = []

    def tick(self, o: Observation) -> policy.Decision:
        d, self.state = decide(self.spec, self.variants, o, self.state)
        if d.changed:
            self.events += 1
        self.variants = [replace(v, replicas=d.desired[v.name], ready=d.desired[v.name]) for v in self.variants]
        self.history.append(d.desired)
        return d


def test_a_step_in_rate_raises_the_fleet_within_one_tick() -> None:
    f = Fleet([a100(1)])
    for t in range(0, 300, 15):
        f.tick(obs(t, 5.0))
    d = f.tick(obs(300, 35.0))
    assert d.desired == {"a100": 4} and d.reason in (policy.REASON_SCALE_UP, policy.REASON_PANIC)


def test_scale_up_is_capped_per_decision() -> None:
    f = Fleet([a100(1)])
    d = f.tick(obs(0, 95.0))
    assert d.desired["a100"] == 1 + SPEC.max_scale_up_step


@settings(max_examples=8, deadline=None)
@given(st.lists(st.floats(-0.08, 0.08), min_size=40, max_size=80))
def test_oscillation_within_eight_percent_causes_no_scale_event_once_sized(noise: list[float]) -> None:
    f = Fleet([a100(4)])
    for i in range(10):
        f.tick(obs(i * 15, 35.0 * 1.08))  # sized for the peak of the band
    f.events = 0
    for i, n in enumerate(noise):
        f.tick(obs(150 + i * 15, 35.0 * (1 + n)))
    assert f.events == 0


def test_scale_down_waits_for_the_window_then_takes_the_window_maximum() -> None:
    f = Fleet([a100(6)])
    f.tick(obs(0, 55.0))
    downs = []
    for t in range(15, 400, 15):
        d = f.tick(obs(t, 15.0))
        if d.reason == policy.REASON_SCALE_DOWN:
            downs.append((t, d.desired["a100"]))
    assert downs, "never scaled down"
    first_t, first_n = downs[0]
    assert first_t >= SPEC.scale_down_window_seconds
    assert 2 < first_n < 6  # the largest recommendation still in the window, not the latest
    assert f.history[-1] == {"a100": 2}


@settings(max_examples=8, deadline=None)
@given(st.floats(2.5, 8.0), st.integers(2, 8))
def test_a_burst_gives_a_monotone_replica_series(factor: float, burst_ticks: int) -> None:
    f = Fleet([a100(2)])
    for t in range(0, 120, 5):
        f.tick(obs(t, 15.0))
    series = []
    for i in range(burst_ticks):
        series.append(f.tick(obs(120 + i * 5, 15.0 * factor)).desired["a100"])
    for i in range(3):  # the burst ends, panic lasts a stable window
        series.append(f.tick(obs(120 + (burst_ticks + i) * 5, 15.0)).desired["a100"])
    assert series == sorted(series)


def test_cheapest_variant_grows_first_and_the_big_one_takes_high_load() -> None:
    f = Fleet([l4(0), a100(0, min_replicas=0)])
    f.variants = [replace(v, replicas=1, ready=1) if v.name == "l4" else v for v in f.variants]
    d = f.tick(obs(0, 2.0))
    assert d.desired == {"l4": 2, "a100": 0}
    for t in range(15, 120, 15):
        d = f.tick(obs(t, 30.0))
    assert d.desired["a100"] == 3


def test_starting_pods_count_as_capacity_and_their_variant_keeps_growing() -> None:
    # 80 req/s at 10 per A100: 8 needed; 2 ready and 2 starting count, the step of 4 adds the rest
    v = a100(4, ready=2, pending=2)
    d, _ = decide(SPEC, [v], obs(0, 80.0), PolicyState())
    assert d.desired == {"a100": 8}
    # sized: the starting pods are not asked for again, nor is the queue they were asked to drain
    d, _ = decide(SPEC, [a100(8, ready=4, pending=4)], obs(15, 80.0, waiting=600.0), PolicyState())
    assert d.desired == {"a100": 8} and d.terms["backlogRps"] == 0
    d, _ = decide(SPEC, [a100(8)], obs(15, 80.0, waiting=600.0), PolicyState())
    assert d.desired == {"a100": 9} and d.terms["backlogRps"] == 10  # 600 queued over 60 s: 10 req/s more


def test_a_shrinking_fleet_gives_back_the_dearest_capacity_per_request_and_keeps_the_window_peak() -> None:
    # 30 req/s on 3 A100s ($0.25 per req/s) and 8 L4s ($0.53 per req/s), then 20 req/s: after a window the
    # L4s go first (the A100s alone serve the window's peak of 30), then an A100 once the 30 has left it
    f = Fleet([l4(8), a100(3)])
    for t in range(0, 60, 15):
        f.tick(obs(t, 30.0))
    downs = [
        (t, d.desired) for t in range(60, 400, 15) if (d := f.tick(obs(t, 20.0))).reason == policy.REASON_SCALE_DOWN
    ]
    assert downs and downs[0][0] >= SPEC.scale_down_window_seconds
    assert downs[0][1] == {"l4": 0, "a100": 3} and f.history[-1] == {"l4": 0, "a100": 2}


def test_a_variant_that_just_grew_is_not_shrunk_within_the_window() -> None:
    f = Fleet([l4(0), a100(2)])
    for t in range(0, 150, 15):
        f.tick(obs(t, 20.0))
    d = f.tick(obs(150, 21.0))  # a little more: the cheapest addition is one L4
    assert d.desired == {"l4": 1, "a100": 2}
    history = [f.tick(obs(t, 20.0)).desired for t in range(165, 150 + SPEC.scale_down_window_seconds, 15)]
    assert all(h["l4"] == 1 for h in history)


def test_unschedulable_pods_move_growth_to_another_variant_and_say_why() -> None:
    vs = [l4(3, ready=1, pending=2, unschedulable=2), a100(0)]
    d, state = decide(SPEC, vs, obs(0, 4.0), PolicyState())
    assert d.desired["a100"] >= 1
    assert d.reason == policy.REASON_UNSCHEDULABLE and "l4" in d.message
    # the cap holds after the pending pods are gone
    vs = [l4(3, ready=1), a100(d.desired["a100"])]
    d2, _ = decide(SPEC, vs, obs(15, 4.0), state)
    assert d2.desired["l4"] <= 3 and d2.terms["maxReplicas"]["l4"] == 1


def test_stale_metrics_hold_the_current_size_with_a_reason() -> None:
    stale = Observation(time=0, fresh=False, stale_reason="prometheus at http://127.0.0.1:9 refused the connection")
    d, state = decide(SPEC, [a100(3)], stale, PolicyState())
    assert d.desired == {"a100": 3} and not d.changed
    assert d.reason == policy.REASON_METRICS_STALE and "refused" in d.message
    assert state == PolicyState()


def test_a_slower_variant_than_profiled_gets_more_replicas() -> None:
    on_profile = a100(4, observed_itl_s=0.04)
    slow = a100(4, observed_itl_s=0.06)
    d1, _ = decide(SPEC, [on_profile], obs(0, 35.0), PolicyState())
    d2, _ = decide(SPEC, [slow], obs(0, 35.0), PolicyState())
    assert d1.desired["a100"] == 4 and d2.desired["a100"] == 6
    assert d2.terms["correction"]["a100"] == 1.5


def test_a_held_request_scales_a_pool_from_zero_to_one_cheapest_replica() -> None:
    spec = SPEC.model_copy(update={"scale_to_zero": True})
    d, _ = decide(spec, [l4(0), a100(0)], Observation(time=0, fresh=True, held_requests=1), PolicyState())
    assert d.desired == {"l4": 1, "a100": 0} and d.reason == policy.REASON_FROM_ZERO


def test_scale_to_zero_only_when_allowed_and_idle_for_the_window() -> None:
    spec = SPEC.model_copy(update={"scale_to_zero": True, "idle_window_seconds": 60})
    f = Fleet([l4(1)], spec)
    f.tick(obs(0, 1.0))
    reasons = [(t, f.tick(obs(t, 0.0)).reason) for t in range(15, 200, 15)]
    zero_at = next(t for t, r in reasons if r == policy.REASON_TO_ZERO)
    assert zero_at >= 60
    never = Fleet([l4(1)])  # scaleToZero off
    never.tick(obs(0, 1.0))
    for t in range(15, 2000, 15):
        never.tick(obs(t, 0.0))
    assert never.history[-1] == {"l4": 1}


def test_a_restart_mid_window_resumes_with_the_same_decisions() -> None:
    def run(restart_at: int | None) -> list[dict[str, int]]:
        f = Fleet([a100(6)])
        out = []
        for i, t in enumerate(range(0, 300, 15)):
            if i == restart_at:
                f.state = PolicyState.from_dict(json.loads(json.dumps(f.state.to_dict())))
            out.append(f.tick(obs(t, 55.0 if t == 0 else 12.0)).desired)
        return out

    assert run(None) == run(5)


def test_replicas_of_multi_gpu_variants_keep_whole_gangs() -> None:
    tp4 = replace(a100(1), gpus_per_replica=4)
    d, _ = decide(SPEC, [tp4], obs(0, 30.0), PolicyState(), gpu_budget=10)
    assert d.desired["a100"] * 4 <= 10 and d.terms["solverMix"]["a100"] == 2


def test_growth_heads_for_the_cheapest_fleet_to_keep_and_the_spare_replicas_go_after_the_window() -> None:
    # 27 req/s on 3 L4s and 2 A100s: two more L4s ($1.60) are the cheapest addition, but the fleet to keep
    # is 3 A100s ($7.50 against $9.00 for 5 L4s and 2 A100s); the A100 comes, no L4 is started, and the
    # L4s (dearest per request) go once a window has been seen
    f = Fleet([l4(3), a100(2)])
    d = f.tick(obs(0, 27.0))
    assert d.desired == {"l4": 3, "a100": 3} and d.reason == policy.REASON_SCALE_UP
    assert d.terms["solverMix"] == {"l4": 0, "a100": 3} and d.terms["grownMix"] == d.desired
    for t in range(15, 200, 15):
        d = f.tick(obs(t, 27.0))
    assert f.history[-1] == {"l4": 0, "a100": 3}
    # when the optimum is not cheaper to keep, the cheapest replicas are added to what is there
    d, _ = decide(SPEC, [l4(0), a100(2)], obs(0, 21.0), PolicyState())
    assert d.desired == {"l4": 1, "a100": 2}


def test_replicas_left_over_from_growth_go_after_the_window() -> None:
    # 3 A100s alone serve 29.5 req/s; the L4 adds under the 10% tolerance, so only the optimum being a
    # strict subset of the fleet marks it as spare
    f = Fleet([l4(1), a100(3)])
    removed_at = None
    for t in range(0, 400, 15):
        d = f.tick(obs(t, 29.5))
        if d.changed and removed_at is None:
            removed_at = t
    assert f.history[-1] == {"l4": 0, "a100": 3}
    assert removed_at is not None and removed_at >= SPEC.scale_down_window_seconds


def knee(gpu: str) -> GpuCapacity:
    """TTFT flat to 8 req/s, then steep: the SLO capacity (10 req/s) sits on the knee of the curve."""
    points = [LatencyPoint(rps=r, ttft_s=t, itl_s=0.04) for r, t in ((0.0, 0.2), (8.0, 0.2), (10.0, 0.9))]
    return GpuCapacity(
        gpu=gpu, buckets=[BucketCapacity(input_tokens=512, output_tokens=256, max_rps=10.0, points=points)]
    )


def test_latency_is_compared_with_the_profile_only_where_the_curve_is_flat() -> None:
    at_knee = replace(a100(4), capacity=knee("a100"), observed_ttft_s=1.4)  # 9.5 req/s each: on the knee
    d, state = decide(SPEC, [at_knee], obs(0, 38.0), PolicyState())
    assert d.terms["correction"]["a100"] == 1.0 and state.corrections == {}
    assert d.desired == {"a100": 4}
    flat = replace(a100(4), capacity=knee("a100"), observed_ttft_s=0.3)  # 5 req/s each: 1.5x the profile
    d, state = decide(SPEC, [flat], obs(0, 20.0), PolicyState())
    assert d.terms["correction"]["a100"] == 1.5 and state.corrections == {"a100": 1.5}


def test_a_correction_moves_smoothly_and_survives_a_restart() -> None:
    flat = replace(a100(4), capacity=knee("a100"), observed_ttft_s=0.3)
    _, state = decide(SPEC, [flat], obs(0, 20.0), PolicyState())
    state = PolicyState.from_dict(json.loads(json.dumps(state.to_dict())))
    on_profile = replace(flat, observed_ttft_s=0.2)
    d, state = decide(SPEC, [on_profile], obs(15, 20.0), state)
    assert d.terms["correction"]["a100"] == round(1.5 + policy.CORRECTION_SMOOTHING * (1.0 - 1.5), 4)
    # at the knee the last trusted value stands
    d, _ = decide(SPEC, [replace(on_profile, observed_ttft_s=1.8)], obs(30, 38.0), state)
    assert d.terms["correction"]["a100"] == state.corrections["a100"]
