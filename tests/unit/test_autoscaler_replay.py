"""The trace replay of the autoscaler benchmark: deterministic, honest about GPU types that cannot serve a
trace, reading the real trace as documented, and comparing frontiers as it says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import _autoscaling_traces as traces
from bench import autoscaler as bench
from headway.autoscaler.capacity import load_profile
from headway.sim.prices import PRICE_SETS

PROFILE = load_profile(bench.DEFAULT_PROFILE)
GRID = sorted({(b.input_tokens, b.output_tokens) for g in PROFILE.gpus for b in g.buckets})


def gpus(names: tuple[str, ...] = bench.GPUS) -> dict[str, bench.Gpu]:
    return bench.make_gpus(PROFILE, PRICE_SETS["aws"], names, 1.0)


def test_two_replays_of_a_trace_give_identical_decisions() -> None:
    trace = bench.make_trace(hours=1.5, tick_s=5)
    first, decisions = bench.run_headway(trace, gpus(), PROFILE, 90, 15, bench.SPEC, 1.0)
    again, decisions_again = bench.run_headway(trace, gpus(), PROFILE, 90, 15, bench.SPEC, 1.0)
    assert decisions == decisions_again and len(decisions) == 1.5 * 3600 / 15
    assert first.summary() == again.summary()
    assert first.cost > 0 and 0 < first.met <= first.total


def test_the_perfect_reactive_reference_buys_attainment_with_headroom() -> None:
    trace = bench.make_trace(hours=3, tick_s=5)  # holds the 4x burst at 2.5 h of the compressed day
    tight = bench.run_perfect_reactive(trace, gpus(), 90, headroom=1.0)
    roomy = bench.run_perfect_reactive(trace, gpus(), 90, headroom=2.0)
    assert roomy.cost > tight.cost and roomy.attainment > tight.attainment
    assert 0 < tight.met <= tight.total and tight.scale_events > 0


def test_the_azure_trace_keeps_its_arrivals_and_token_counts_at_the_documented_scale() -> None:
    trace = traces.azure_conv(5, GRID)
    raw = 19_366 / (58 * 60)
    assert len(trace.rps) == pytest.approx(57.5 * 60 / 5, rel=0.02)
    assert np.mean(trace.rps) == pytest.approx(raw * traces.AZURE_RATE_SCALE, rel=0.1)
    assert all(abs(sum(m.values()) - 1) < 1e-9 and set(m) <= set(GRID) for m in trace.mix)
    # its own token mix: about a third of its prompts are near 1,024 tokens with ~256-token answers
    shares = {b: np.mean([m.get(b, 0) for m in trace.mix]) for b in GRID}
    assert 0.25 < shares[(1024, 256)] < 0.5 and shares[(4096, 64)] > 0.03
    slower = traces.azure_conv(5, GRID, time_scale=2)
    assert len(slower.rps) == pytest.approx(2 * len(trace.rps), rel=0.01)
    assert np.mean(slower.rps) == pytest.approx(np.mean(trace.rps) / 2, rel=0.1)


def test_a_malformed_azure_row_fails_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n2023-11-16,x,1\n")
    with pytest.raises(ValueError, match=r"trace.csv:3"):
        traces._read_azure(str(path))


def test_a_gpu_type_that_cannot_serve_part_of_a_trace_is_reported_not_a_crash() -> None:
    trace = traces.azure_conv(5, GRID)
    l4 = gpus(("L4",))
    share = bench.unservable_share(trace, l4, ["L4"])
    assert 0.05 < share < 0.3  # the long prompts: an L4 cannot prefill them within the TTFT target
    static = bench.run_static("L4", trace, l4, 90)
    assert static.attainment <= 1 - share + 1e-6 and static.cost > 0
    assert bench.clairvoyant_cost(trace, l4, ["L4"]) > 0
    assert bench.unservable_share(trace, gpus(("H100",)), ["H100"]) == 0


def _run(attainment: float, cost: float, knob: float = 1.0) -> bench.Run:
    return bench.Run("x", "anchor", ["H100"], knob, met=attainment * 1000, total=1000, cost=cost)


def test_a_frontier_keeps_only_settings_nothing_else_beats_on_both_cost_and_attainment() -> None:
    runs = [_run(0.9, 10), _run(0.95, 12), _run(0.93, 15), _run(0.99, 20), _run(0.99, 25)]
    assert [(r.attainment, r.cost) for r in bench.frontier(runs)] == [(0.9, 10), (0.95, 12), (0.99, 20)]


def test_headway_is_compared_with_each_anchor_at_every_level_the_anchor_reaches() -> None:
    families = {
        "aibrix-kpa": [_run(0.9, 10), _run(0.99, 20)],
        "headway": [_run(0.92, 6), _run(0.995, 14)],
        "perfect-reactive": [_run(0.99, 30)],
    }
    out = bench.compare(families, clairvoyant=10.0)
    points = out["per_anchor"]["aibrix-kpa"]["points"]
    assert [p["cost_ratio"] for p in points] == [0.6, 0.7]
    assert out["goal_every_level_at_most_0.75x"] and out["worst_ratio_over_anchors"] == 0.7
    assert out["at_99"] == {
        "any_policy_reaches": True,
        "headway_cost": 14.0,
        "cheapest_anchor_cost": 20.0,
        "vs_cheapest_anchor": 0.7,
        "vs_clairvoyant": 1.4,
    }
    families["headway"] = [_run(0.92, 6)]
    assert bench.compare(families, clairvoyant=10.0)["per_anchor"]["aibrix-kpa"]["headway_reaches_every_level"] is False
