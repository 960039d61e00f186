"""The answer's `model` field is rewritten to the virtual name as the bytes are relayed, across any chunking."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from headway.gateway.modelrouting.rewrite import ModelNameRewriter

STREAM = (
    b'data: {"id":"1","object":"chat.completion.chunk","model":"large-model","choices":[]}\n\n'
    b'data: {"id":"1","object":"chat.completion.chunk","model":"large-model","choices":[]}\n\n'
    b"data: [DONE]\n\n"
)


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), max_size=12, unique=True))
def test_every_occurrence_is_rewritten_however_the_stream_is_cut(cuts: list[int]) -> None:
    r = ModelNameRewriter("large-model", "auto")
    bounds = [0, *sorted(cuts), len(STREAM)]
    out = b"".join(r.feed(STREAM[a:b]) for a, b in itertools.pairwise(bounds)) + r.flush()
    assert out == STREAM.replace(b'"model":"large-model"', b'"model":"auto"')


def test_bytes_that_cannot_start_the_field_are_not_held_back() -> None:
    r = ModelNameRewriter("m", "auto")
    assert r.feed(b'{"a":1}\n') == b'{"a":1}\n'
    assert r.feed(b'{"mod') == b"{"  # might begin `"model":`: held until the next chunk says
    assert r.feed(b'el":"m"}') == b'"model":"auto"}'
    assert r.flush() == b""
