"""The benchmark backend reads chunked request bodies (Envoy forwards a body it streamed through an
ext_proc server that way)."""

from __future__ import annotations

import pytest

from bench._zero_backend import _dechunk


def test_a_chunked_body_is_joined_and_the_next_request_found() -> None:
    raw = b"HEAD\r\n\r\n" + b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nNEXT"
    body, after = _dechunk(raw, 8)  # type: ignore[misc]
    assert body == b"hello world"
    assert raw[after:] == b"NEXT"


@pytest.mark.parametrize("cut", [2, 10, 15, 23, 25])
def test_an_incomplete_chunked_body_waits_for_more(cut: int) -> None:
    raw = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    assert _dechunk(raw[:cut], 0) is None


def test_a_malformed_chunk_size_is_an_error() -> None:
    with pytest.raises(ValueError):
        _dechunk(b"zz\r\nhello\r\n", 0)
