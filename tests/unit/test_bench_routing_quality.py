"""Model-routing quality measures: labelled-prompt CSVs load as RouteLLM ships them, bad files fail naming
themselves, and APGR / AIQ score the reference routers as their definitions say (random mix 0.5)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench._routing_quality import (
    LabelledPrompt,
    accuracy,
    aiq,
    apgr,
    load_labels,
    nondecreasing_hull,
    oracle_curve,
    pgr,
)
from headway.devenv.paths import REPO_ROOT

MMLU = REPO_ROOT.parent / "shared" / "datasets" / "routellm-mmlu"
WEAK, STRONG = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"


def test_a_folder_of_csvs_loads_multiline_prompts_labels_and_subjects(tmp_path: Path) -> None:
    (tmp_path / "algebra.csv").write_text(
        'prompt,weak,note,strong\n"What is 2+2?\nA. 3\nB. 4\nAnswer:",False,x,True\n"1+1?",true,y,FALSE\n'
    )
    (tmp_path / "biology.csv").write_text('prompt,weak,strong\n"Cells?",True,True\n')
    models, rows = load_labels(tmp_path)
    assert models == ["weak", "strong"]  # `note` is not True/False: ignored
    assert [r.subject for r in rows] == ["algebra", "algebra", "biology"]
    assert rows[0].prompt.endswith("B. 4\nAnswer:") and rows[0].correct == {"weak": False, "strong": True}
    assert rows[1].correct == {"weak": True, "strong": False}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("question,weak\nx,True\n", "first column must be `prompt`", id="no-prompt-column"),
        pytest.param("prompt,weak\nx,maybe\n", "no column of True/False", id="no-labels"),
        pytest.param("prompt,weak\n", "no rows", id="empty"),
    ],
)
def test_a_bad_file_fails_naming_itself(tmp_path: Path, text: str, message: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    with pytest.raises(ValueError, match=message) as e:
        load_labels(bad)
    assert str(bad) in str(e.value)


def test_files_labelling_different_models_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("prompt,weak,strong\nx,True,True\n")
    (tmp_path / "b.csv").write_text("prompt,weak,other\nx,True,True\n")
    with pytest.raises(ValueError, match=r"b\.csv: labels models"):
        load_labels(tmp_path)


def test_the_routellm_mmlu_data_loads_whole() -> None:
    models, rows = load_labels(MMLU)
    assert models == [WEAK, STRONG]
    assert len(rows) == 14_042 and len({r.subject for r in rows}) == 57
    weak, strong = accuracy(rows, WEAK), accuracy(rows, STRONG)
    assert 0.6 < weak < strong < 0.9
    # the oracle spends strong calls only where they help: above 1 APGR, best accuracy well below 100% calls
    curve = oracle_curve(rows, WEAK, STRONG)
    assert apgr(curve, weak, strong) > 1.2
    assert curve[-1][1] > strong and curve[2][1] == curve[-1][1]  # saturated by 20% strong calls


@given(
    weak=st.floats(0.05, 0.9),
    gap=st.floats(0.01, 0.09),
    steps=st.integers(1, 20),
)
def test_a_random_mix_scores_half(weak: float, gap: float, steps: int) -> None:
    strong = weak + gap
    curve = [(k / steps, weak + k / steps * gap) for k in range(steps + 1)]
    assert apgr(curve, weak, strong) == pytest.approx(0.5)
    assert pgr(weak, weak, strong) == 0 and pgr(strong, weak, strong) == pytest.approx(1)


def test_always_weak_scores_zero_and_an_early_leap_scores_near_one() -> None:
    assert apgr([(0, 0.6), (1, 0.6)], 0.6, 0.8) == 0
    assert apgr([(0, 0.6), (0.1, 0.8), (1, 0.8)], 0.6, 0.8) == pytest.approx(0.95)
    with pytest.raises(ValueError, match="two different"):
        apgr([(0.5, 0.7)], 0.6, 0.8)


@given(st.lists(st.tuples(st.floats(0, 10), st.floats(0, 1)), min_size=1, max_size=30))
def test_the_hull_never_decreases_and_covers_every_point(points: list[tuple[float, float]]) -> None:
    hull = nondecreasing_hull(points)
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in itertools.pairwise(hull))
    for x, y in points:
        # at its cost, the hull reaches at least the point's quality (by a mix, or a cheaper point)
        below = [(hx, hy) for hx, hy in hull if hx <= x]
        above = [(hx, hy) for hx, hy in hull if hx >= x]
        assert below, (x, hull)  # the cheapest point is always on the hull
        if above:
            (x0, y0), (x1, y1) = below[-1], above[0]
            at = y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
            assert at >= y - 1e-9
        else:
            assert below[-1][1] >= y - 1e-9


def test_aiq_is_the_mean_best_quality_over_the_cost_range() -> None:
    assert aiq([(0, 0.5)], (0, 10)) == pytest.approx(0.5)
    # a mix line from (0, 0.5) to (10, 0.9); the dominated (5, 0.6) changes nothing
    assert aiq([(0, 0.5), (10, 0.9), (5, 0.6)], (0, 10)) == pytest.approx(0.7)
    # reaching 0.9 at cost 2 lifts the mean; flat after the dearest point
    assert aiq([(0, 0.5), (2, 0.9)], (0, 10)) == pytest.approx((2 * 0.7 + 8 * 0.9) / 10)
    with pytest.raises(ValueError, match="positive width"):
        aiq([(0, 0.5)], (1, 1))


def test_a_labelled_prompt_keeps_its_labels() -> None:
    p = LabelledPrompt("s", "q", {"m": True})
    assert accuracy([p, LabelledPrompt("s", "r", {"m": False})], "m") == 0.5
