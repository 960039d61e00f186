"""The routing benchmark's workloads and arrival schedule: trace replay keeps the trace's prefix structure
and burstiness, every router gets the same schedule, and KV sizing puts the working set where asked."""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import pytest

from bench import _workloads
from bench._workloads import Words, distinct_blocks, requests, trace_rows, trace_scale
from bench.routing import BLOCK_SIZES, kv_sizing, schedule
from headway.devenv.tinymodel import tiny_model_dir


@pytest.fixture(scope="module")
def words() -> Words:
    return Words(tiny_model_dir())


@pytest.mark.parametrize("block", sorted(set(BLOCK_SIZES.values())))
def test_a_trace_row_becomes_a_prompt_of_its_scaled_length_sharing_text_where_hash_ids_are_equal(
    words: Words, block: int
) -> None:
    """For each engine's KV block size: one trace block is one KV block."""
    rows = trace_rows("mooncake-conversation")[:40]
    scale = trace_scale(block)
    stream = requests("mooncake-conversation", words, scale=20, seed=1, trace_scale=scale)
    reqs = list(itertools.islice(stream, len(rows)))
    ids = [words.ids(r.prompt) for r in reqs]
    for row, req, tokens in zip(rows, reqs, ids, strict=True):
        assert req.prompt_tokens == len(tokens)  # exact, as the oracle and the engines count
        assert req.prompt_tokens - words.special == min(row.input_length // scale, len(row.hash_ids) * block)
        assert req.output_tokens == max(1, row.output_length // scale)
    special = words.special
    for (ra, ta), (rb, tb) in itertools.combinations(zip(rows, ids, strict=True), 2):
        common = next(
            (i for i, (x, y) in enumerate(zip(ra.hash_ids, rb.hash_ids, strict=False)) if x != y),
            min(len(ra.hash_ids), len(rb.hash_ids)),
        )
        n = min(common * block, len(ta) - special, len(tb) - special)
        assert ta[: special + n] == tb[: special + n]  # equal ids: equal text
        if common < min(len(ra.hash_ids), len(rb.hash_ids)) and min(len(ta), len(tb)) > special + (common + 1) * block:
            assert (
                ta[special + common * block : special + (common + 1) * block]
                != tb[special + common * block : special + (common + 1) * block]
            )
    gaps = [r.gap_s for r in reqs]
    assert gaps[0] == 0.0
    assert gaps[1:] == [b.at_s - a.at_s for a, b in itertools.pairwise(rows)]


def test_the_schedule_is_the_same_for_every_router_and_loses_no_request_between_stages(words: Words) -> None:
    def plan() -> list[list[tuple[float, object]]]:
        return schedule(requests("shared-prefix", words, scale=20, seed=3), [5.0, 20.0], 4.0, seed=3)

    a, b = plan(), plan()
    assert [[(t, r.prompt) for t, r in s] for s in a] == [[(t, r.prompt) for t, r in s] for s in b]
    sent = [r.prompt for stage in a for _, r in stage]
    stream = requests("shared-prefix", words, scale=20, seed=3)
    assert sent == [next(stream).prompt for _ in sent]
    assert all(0 <= t < 4.0 for stage in a for t, _ in stage)
    assert len(a[1]) > 2 * len(a[0])


def test_trace_arrivals_keep_their_gaps_scaled_to_the_stage_rate(words: Words) -> None:
    rate = _workloads.trace_mean_rate("mooncake-synthetic")
    stream = requests("mooncake-synthetic", words, scale=20, seed=1)
    (stage,) = schedule(stream, [2 * rate], 30.0, seed=1, trace_rate=rate)
    rows = trace_rows("mooncake-synthetic")
    times = [t for t, _ in stage]
    expected = [(r.at_s - rows[0].at_s) / 2 for r in rows[: len(times)]]
    assert times == pytest.approx(expected)
    assert rows[len(times)].at_s - rows[0].at_s >= 60.0  # the stage ended where the trace, twice as fast, did


def test_kv_pressure_sizes_the_engines_so_the_working_set_is_that_many_times_the_capacity(words: Words) -> None:
    stream = requests("mooncake-conversation", words, scale=20, seed=1)
    plan = schedule(stream, [20.0], 10.0, seed=1, trace_rate=_workloads.trace_mean_rate("mooncake-conversation"))
    prompts = [words.ids(r.prompt) for s in plan for _, r in s]
    args = argparse.Namespace(kv_pressure=None, engines=4, scale=20, block_size=16)
    sized = kv_sizing("mooncake-conversation", prompts, plan, args)
    assert sized["kv_pressure_requested"] == 2.0  # the trace workloads' default
    assert sized["working_set_blocks"] == len(distinct_blocks(prompts, 16))
    assert sized["kv_blocks_per_engine"] >= 2 * sized["largest_request_blocks"]
    if sized["kv_blocks_per_engine"] > 2 * sized["largest_request_blocks"]:
        assert 1.9 <= sized["working_set_over_capacity"] <= 2.0
    args.kv_pressure = 1e-6  # a capacity far above the working set is what the floor never limits
    assert kv_sizing("mooncake-conversation", prompts, plan, args)["working_set_over_capacity"] < 0.01


def test_a_malformed_trace_fails_naming_its_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mooncake_synthetic_trace.jsonl").write_text(
        json.dumps({"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": [0]}) + "\n{not json}\n"
    )
    monkeypatch.setattr(_workloads, "TRACE_DIR", tmp_path)
    trace_rows.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"mooncake_synthetic_trace.jsonl:2"):
            trace_rows("mooncake-synthetic")
    finally:
        trace_rows.cache_clear()
