"""The gateway's parsers: request bodies, engine metrics and answers; garbage fails cleanly."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headway.api.shape import INPUT_EDGES, le_label, representative
from headway.gateway.endpoints import Endpoint, parse_engine_metrics
from headway.gateway.errors import InvalidRequest
from headway.gateway.openai import GeneratedTokens, parse_routing_fields


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


def test_engine_metrics_parser_reads_load_and_block_size() -> None:
    e = Endpoint("http://127.0.0.1:1")
    parse_engine_metrics(
        'vllm:num_requests_waiting{engine="0",model_name="m"} 3.0\n'
        'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5\n'
        'vllm:cache_config_info{block_size="128",engine="0"} 1.0\n',
        e,
    )
    assert (e.waiting, e.kv_usage, e.block_size) == (3.0, 0.5, 128)


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
