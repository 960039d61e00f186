"""The gateway's request parser and routing plugins: garbage fails cleanly, scorers stay in [0, 1]."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headway.api.modelpool import ScorerWeights
from headway.api.shape import INPUT_EDGES, le_label, representative
from headway.gateway.endpoints import Endpoint, parse_engine_metrics
from headway.gateway.errors import InvalidRequest
from headway.gateway.openai import GeneratedTokens, parse_routing_fields
from headway.gateway.routing.pipeline import STRATEGIES, build_pipeline
from headway.gateway.routing.plugins import (
    InFlightScorer,
    KvUtilizationScorer,
    PrefillBacklogScorer,
    PrefixCacheScorer,
    QueueScorer,
)
from headway.gateway.routing.types import RoutingRequest
from headway.kvcache.index import InMemoryIndex


@given(st.binary(max_size=4096), st.booleans())
def test_routing_parser_rejects_garbage_cleanly(raw: bytes, chat: bool) -> None:
    with contextlib.suppress(InvalidRequest):
        parse_routing_fields(raw, chat=chat)


@pytest.mark.parametrize(
    ("body", "chat", "param"),
    [
        pytest.param(b'{"prompt": "x"}', False, "model", id="missing-model"),
        pytest.param(b'{"model": 3, "prompt": "x"}', False, "model", id="model-not-string"),
        pytest.param(b'{"model": "m", "messages": "hi"}', True, "messages", id="messages-not-list"),
        pytest.param(b'{"model": "m"', False, "body", id="truncated"),
    ],
)
def test_routing_parser_names_the_bad_field(body: bytes, chat: bool, param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_routing_fields(body, chat=chat)
    assert err.value.param == param


def eps(n: int, **kw: list[float]) -> list[Endpoint]:
    out = []
    for i in range(n):
        e = Endpoint(f"http://127.0.0.1:{8000 + i}")
        for k, vals in kw.items():
            setattr(e, k, vals[i])
        out.append(e)
    return out


@given(st.lists(st.tuples(st.floats(0, 1000), st.floats(0, 1), st.integers(0, 500)), min_size=1, max_size=8))
def test_every_scorer_stays_in_unit_range(rows: list[tuple[float, float, int]]) -> None:
    endpoints = eps(
        len(rows), waiting=[r[0] for r in rows], kv_usage=[r[1] for r in rows], in_flight=[r[2] for r in rows]
    )
    req = RoutingRequest("m", list(range(64)))
    scorers = (
        QueueScorer(),
        KvUtilizationScorer(),
        InFlightScorer(),
        PrefixCacheScorer(InMemoryIndex(), {}),
        PrefillBacklogScorer(),
    )
    for scorer in scorers:
        scores = scorer.score(req, endpoints)
        assert set(scores) == {e.id for e in endpoints}
        assert all(0.0 <= s <= 1.0 for s in scores.values())


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_preset_ranks_all_routable_endpoints_and_handles_empty(strategy: str) -> None:
    pipe = build_pipeline(
        strategy,
        ScorerWeights(),
        index=InMemoryIndex(),
        history=InMemoryIndex(),
        block_sizes={},
        stale_after_s=1e9,
        load_bound=1.25,
        rng=random.Random(1),
    )
    endpoints = eps(3)
    ranked = pipe.decide(RoutingRequest("m", [1, 2, 3]), endpoints).ranked
    assert sorted(e.id for e in ranked) == sorted(e.id for e in endpoints)
    assert pipe.decide(RoutingRequest("m", [1]), []).ranked == []


def test_unknown_strategy_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="kv-aware"):
        build_pipeline(
            "fastest",
            ScorerWeights(),
            index=InMemoryIndex(),
            history=InMemoryIndex(),
            block_sizes={},
            stale_after_s=1,
            load_bound=1.25,
        )


def test_engine_metrics_parser_reads_load_and_block_size() -> None:
    e = Endpoint("http://127.0.0.1:1")
    parse_engine_metrics(
        'vllm:num_requests_waiting{engine="0",model_name="m"} 3.0\n'
        'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5\n'
        'vllm:cache_config_info{block_size="128",engine="0"} 1.0\n',
        e,
    )
    assert (e.waiting, e.kv_usage, e.block_size) == (3.0, 0.5, 128)


def test_prefill_backlog_prices_the_cache_hit_against_the_work_queued_ahead() -> None:
    index = InMemoryIndex()
    holder, idle = eps(2)
    tokens = list(range(160))
    index.store(holder.id, "m", list(range(10)), None, tokens, 16)
    req = RoutingRequest("m", tokens)
    PrefixCacheScorer(index, {}).score(req, [holder, idle])
    assert req.uncached_tokens(holder.id) == 1 and req.uncached_tokens(idle.id) == 160
    backlog = PrefillBacklogScorer()
    scores = backlog.score(req, [holder, idle])
    assert scores[holder.id] == 1.0 and scores[idle.id] < 0.02
    holder.prefill_backlog = 500  # the holder is busy prefilling others: its hit no longer saves time
    scores = backlog.score(req, [holder, idle])
    assert scores[idle.id] == 1.0 and scores[holder.id] < 0.35


def _sse(*frames: str) -> bytes:
    return b"".join(f"data: {f}\n\n".encode() for f in (*frames, "[DONE]"))


@given(st.integers(min_value=1, max_value=64), st.integers(min_value=0, max_value=40), st.booleans())
def test_generated_tokens_of_a_stream_survive_any_chunking(cut: int, n: int, chat: bool) -> None:
    """One frame per token (plus the role frame of a chat), however the bytes are split."""
    frames = ['{"choices":[{"delta":{"role":"assistant","content":""}}]}'] if chat else []
    frames += [f'{{"choices":[{{"text":"t{i}","finish_reason":null}}]}}' for i in range(n)]
    raw = _sse(*frames)
    g = GeneratedTokens(stream=True, chat=chat)
    for i in range(0, len(raw), cut):
        g.feed(raw[i : i + cut])
    assert g.total() == n


def test_generated_tokens_prefer_the_usage_the_response_reports() -> None:
    usage = '{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":37,"total_tokens":46}}'
    g = GeneratedTokens(stream=True, chat=False)
    g.feed(_sse('{"choices":[{"text":"a"}]}', usage))
    assert g.total() == 37
    whole = GeneratedTokens(stream=False, chat=True)
    whole.feed(b'{"id":"x","choices":[{"message":{"content":"hi"}}],')
    whole.feed(b'"usage":{"prompt_tokens":3,"completion_tokens":12,"total_tokens":15}}')
    assert whole.total() == 12


def test_generated_tokens_are_unknown_for_an_unreadable_or_oversized_body() -> None:
    g = GeneratedTokens(stream=False, chat=False)
    g.feed(b"not json")
    assert g.total() is None
    big = GeneratedTokens(stream=False, chat=False)
    for _ in range(5):
        big.feed(b" " * (1 << 20))
    big.feed(b'{"usage":{"completion_tokens":1}}')
    assert big.total() is None


@pytest.mark.parametrize(
    ("tokens", "edges", "label"),
    [(1, INPUT_EDGES, "64"), (64, INPUT_EDGES, "64"), (65, INPUT_EDGES, "128"), (10**6, INPUT_EDGES, "+Inf")],
)
def test_shape_labels_are_the_upper_edge_of_a_power_of_two_bucket(
    tokens: int, edges: tuple[int, ...], label: str
) -> None:
    assert le_label(tokens, edges) == label
    assert le_label(round(representative(label, edges)), edges) == label
