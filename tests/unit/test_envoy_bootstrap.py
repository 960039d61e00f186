"""The Envoy bootstrap refuses a configuration Envoy would accept but not honour."""

from __future__ import annotations

import pytest

from headway.devenv.envoy import bootstrap


def _ext_proc(cfg: dict) -> dict:
    filters = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return next(f for f in filters["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")["typed_config"]


def test_failing_open_needs_a_buffered_request_body() -> None:
    common = {"listen_port": 1, "admin_port": 2, "epp_port": 3, "upstream": "override_host", "endpoints": ["a:1"]}
    with pytest.raises(ValueError, match="BUFFERED"):
        bootstrap(**common, fail_open=True)
    ext = _ext_proc(bootstrap(**common, fail_open=True, request_body_mode="BUFFERED", response_body=True))
    assert ext["failure_mode_allow"] is True
    assert ext["processing_mode"]["request_body_mode"] == "BUFFERED"
    assert ext["processing_mode"]["response_body_mode"] == "FULL_DUPLEX_STREAMED"
