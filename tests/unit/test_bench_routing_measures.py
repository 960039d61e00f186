"""The routing benchmark's fault measures: counter deltas across an engine restart, the hit-rate recovery
time, the added engine's share, and the --fault syntax."""

from __future__ import annotations

import pytest

from bench.routing import Drive, Fault, _delta, added_share, recovery


def _timeline(rates: list[float], queries_per_s: float = 100.0) -> list[tuple[float, float, float]]:
    """Cumulative (t, hits, queries) once a second for the given per-second hit rates."""
    out, hits, queries = [], 0.0, 0.0
    for t, rate in enumerate(rates):
        hits += rate * queries_per_s
        queries += queries_per_s
        out.append((float(t), hits, queries))
    return out


def test_recovery_is_the_first_trailing_window_back_to_ninety_percent() -> None:
    rates = [0.5] * 21 + [0.0] * 3 + [0.5] * 20  # the fault at t=20 costs the seconds ending at 21, 22, 23
    got = recovery(_timeline(rates), at_s=20.0)
    assert got["hit_rate_before"] == pytest.approx(0.5)
    # a trailing window (t-5, t] holding a zero second stays under 0.45 until t - 4 > 23
    assert got["recovery_s"] == pytest.approx(8.0)
    assert got["hit_rate_next_20s"] < 0.5


def test_a_rate_that_never_comes_back_reports_no_recovery() -> None:
    got = recovery(_timeline([0.6] * 16 + [0.1] * 20), at_s=15.0)
    assert got["recovery_s"] is None and got["hit_rate_before"] == pytest.approx(0.6)


def test_counter_deltas_count_a_restarted_engine_from_zero_and_an_added_one_from_its_first_value() -> None:
    before = {"a": {"hits": 50.0, "queries": 100.0, "prompt_tokens": 0.0}}
    after = {
        "a": {"hits": 5.0, "queries": 10.0, "prompt_tokens": 0.0},  # restarted: went back
        "b": {"hits": 7.0, "queries": 20.0, "prompt_tokens": 0.0},  # added
    }
    assert _delta(after, before, "queries") == {"a": 10.0, "b": 20.0}
    assert _delta(after, before, "hits") == {"a": 5.0, "b": 7.0}


def test_the_added_engines_share_is_of_the_work_after_it_joined() -> None:
    run = Drive([], [], [], _timeline([0.0] * 10), [], {"http://127.0.0.1:9": 250.0})
    fault = {"kind": "add", "at_s": 4.0, "ready_s": 1.0, "engine": "127.0.0.1:9"}
    assert added_share(run, fault) == pytest.approx(250.0 / 400.0)  # 500 at t=5, 900 at the end


@pytest.mark.parametrize("text", ["restart", "restart@", "reboot@3", "add@-1", "add@soon"])
def test_bad_fault_options_are_refused_naming_the_syntax(text: str) -> None:
    with pytest.raises(ValueError, match="KIND@SECONDS"):
        Fault.parse(text)


def test_fault_options_parse() -> None:
    assert Fault.parse("restart@30") == Fault("restart", 30.0)
    assert Fault.parse("add@2.5") == Fault("add", 2.5)
