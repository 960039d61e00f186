"""The trace replay of the autoscaler benchmark: a dry run that is deterministic and reports its costs."""

from __future__ import annotations

from bench import autoscaler as bench
from headway.api.modelpool import Autoscaling
from headway.autoscaler.capacity import load_profile
from headway.sim.profiles import PRESETS


def test_two_replays_of_a_trace_give_identical_decisions() -> None:
    profile = load_profile(bench.DEFAULT_PROFILE)
    gpus = {
        g: bench.Gpu(g, PRESETS[g].cost_per_hour_usd, profile.for_variant(g, 1), 1.0, PRESETS[g].kv_cache_tokens)
        for g in bench.GPUS
    }
    trace = bench.make_trace(hours=1.5, tick_s=5)
    spec = Autoscaling(enabled=True, scale_down_window_seconds=300, panic_window_seconds=30, max_scale_up_step=8)
    first, decisions = bench.run_headway(trace, gpus, profile, 90, 15, spec, 1.0)
    again, decisions_again = bench.run_headway(trace, gpus, profile, 90, 15, spec, 1.0)
    assert decisions == decisions_again and len(decisions) == 1.5 * 3600 / 15
    assert first.summary() == again.summary()
    assert first.cost > 0 and 0 < first.met <= first.total


def test_the_perfect_reactive_reference_buys_attainment_with_headroom() -> None:
    profile = load_profile(bench.DEFAULT_PROFILE)
    gpus = {
        g: bench.Gpu(g, PRESETS[g].cost_per_hour_usd, profile.for_variant(g, 1), 1.0, PRESETS[g].kv_cache_tokens)
        for g in bench.GPUS
    }
    trace = bench.make_trace(hours=3, tick_s=5)  # holds the 4x burst at 2.5 h of the compressed day
    tight = bench.run_perfect_reactive(trace, gpus, 90, headroom=1.0)
    roomy = bench.run_perfect_reactive(trace, gpus, 90, headroom=2.0)
    assert roomy.cost > tight.cost and roomy.met / roomy.total > tight.met / tight.total
    assert 0 < tight.met <= tight.total and tight.scale_events > 0
