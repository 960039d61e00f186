"""Whatever a client sends, the gateway answers 4xx with OpenAI's error JSON, never a 5xx or a crash; a
client that hangs up aborts the engine's work and frees the gateway's in-flight slot."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headway.devenv import procs
from tests.conftest import eventually
from tests.e2e.fleet import metric_value, start_engines, start_gateway


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    work = tmp_path_factory.mktemp("robust")
    port = procs.free_port()
    gw, gpid = start_gateway(work, [port], "--max-body-bytes", str(256 * 1024))
    engines = start_engines(work, [port], f"tcp://127.0.0.1:{procs.free_port()}")
    eventually(
        lambda: _status(gw, b'{"model":"tiny","prompt":"hi","max_tokens":1}')[0] == 200,
        timeout_s=30,
        what="gateway serving",
    )
    yield gw, f"http://127.0.0.1:{port}"
    for pid in [*engines, gpid]:
        procs.stop(pid)


def _status(gw: str, body: bytes, path: str = "/v1/completions") -> tuple[int, bytes]:
    req = urllib.request.Request(f"{gw}{path}", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["tiny", "other"]) | json_values,
        "prompt": json_values,
        "messages": json_values,
        "max_tokens": json_values,
        "stream": json_values,
        "n": json_values,
        "temperature": json_values,
    },
)
bodies = st.one_of(st.binary(max_size=300), fields.map(lambda d: json.dumps(d).encode()))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, chat=st.booleans())
def test_malformed_requests_get_4xx_error_json_never_5xx(single: tuple[str, str], body: bytes, chat: bool) -> None:
    gw, _ = single
    status, raw = _status(gw, body, "/v1/chat/completions" if chat else "/v1/completions")
    assert status < 500, (status, raw[:300])
    if status >= 400:
        err = json.loads(raw)["error"]
        assert err["message"] and err["code"] == status


def test_client_hanging_up_aborts_the_engine_request_and_frees_the_slot(single: tuple[str, str]) -> None:
    gw, engine = single

    async def hang_up() -> None:
        body = {"model": "tiny", "prompt": "tell me everything", "max_tokens": 2000, "ignore_eos": True, "stream": True}
        async with aiohttp.ClientSession() as s:
            resp = await s.post(f"{gw}/v1/completions", json=body)
            for _ in range(3):
                await resp.content.readline()
            resp.close()

    asyncio.run(hang_up())

    eventually(
        lambda: metric_value(engine, "vllm:request_success_total", finished_reason="abort") >= 1,
        timeout_s=10,
        what="the engine aborted the request",
    )
    eventually(
        lambda: metric_value(gw, "headway_gateway_in_flight_requests", model="tiny") == 0,
        timeout_s=10,
        what="the gateway freed the in-flight slot",
    )


def test_routing_decisions_are_observable_in_gateway_metrics(single: tuple[str, str]) -> None:
    gw, _ = single
    prompt = json.dumps({"model": "tiny", "prompt": "observe the routing decision " * 8, "max_tokens": 1})
    assert _status(gw, prompt.encode())[0] == 200
    assert metric_value(gw, "headway_kvcache_lookup_duration_seconds_count") >= 1
    assert metric_value(gw, "headway_gateway_routing_decision_duration_seconds_count", strategy="kv-aware") >= 1
    assert metric_value(gw, "headway_gateway_requests_total", strategy="kv-aware", code="200") >= 1
