"""The gateway's request path in-process, against stand-in engines that each cause one fault a real
engine cannot be made to cause on demand (never answering, stalling mid-stream, trickling forever,
a full accept queue). Admission holds every request from body read to release; each upstream timeout
is honoured in its own phase."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web

from headway.devenv import procs
from headway.gateway.app import SERVE_OPTIONS, Gateway
from headway.gateway.config import GatewayConfig
from tests.conftest import eventually_async

METRICS = (
    'vllm:num_requests_waiting{engine="0",model_name="m"} 0.0\n'
    'vllm:num_requests_running{engine="0",model_name="m"} 0.0\n'
    'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.0\n'
)
COMPLETION = (
    b'{"id":"c","object":"text_completion","choices":[{"index":0,"text":"ok"}],"usage":{"completion_tokens":1}}'
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _metrics(_r: web.Request) -> web.Response:
    return web.Response(text=METRICS)


async def _answer(_r: web.Request) -> web.Response:
    return web.Response(body=COMPLETION, content_type="application/json")


async def _never_answers(_r: web.Request) -> web.Response:
    await asyncio.sleep(3600)
    raise AssertionError("unreachable")


async def _stalls_after_one_chunk(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(b'data: {"choices":[{"index":0,"text":"a"}]}\n\n')
    await asyncio.sleep(3600)
    return resp


async def _trickles_forever(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    await resp.write(b"{")
    for _ in range(36000):
        await asyncio.sleep(0.1)
        await resp.write(b" ")
    return resp


@asynccontextmanager
async def serve(app: web.Application, **options: Any) -> AsyncIterator[str]:
    runner = web.AppRunner(app, shutdown_timeout=0.5, **options)
    await runner.setup()
    port = procs.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def engine(completions: Handler = _answer, tokenize: Handler | None = None) -> web.Application:
    """A FaultyEngine: serves /metrics like vLLM and answers completions (and /tokenize) with `completions`."""
    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    app.router.add_post("/v1/completions", completions)
    if tokenize is not None:
        app.router.add_post("/tokenize", tokenize)
    return app


@asynccontextmanager
async def gateway(endpoints: list[str], **cfg: Any) -> AsyncIterator[tuple[str, Gateway]]:
    cfg.setdefault("max_retries", 0)
    cfg.setdefault("scrape_interval_s", 0.05)
    gw = Gateway(GatewayConfig(model="m", endpoints=tuple(endpoints), **cfg))
    async with serve(gw.app(), **SERVE_OPTIONS) as url:
        yield url, gw


async def post(url: str, body: dict[str, Any], timeout_s: float = 30) -> tuple[int, bytes, float]:
    t0 = time.monotonic()
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{url}/v1/completions", json=body, timeout=aiohttp.ClientTimeout(total=timeout_s)) as r,
    ):
        return r.status, await r.read(), time.monotonic() - t0


def dead_url() -> str:
    return f"http://127.0.0.1:{procs.free_port()}"  # nothing listens: connection refused


def test_a_held_request_keeps_its_admission_slot_so_the_next_one_gets_429() -> None:
    async def scenario() -> None:
        async with gateway([dead_url()], max_in_flight=1, hold_s=3.0) as (url, gw):
            first = asyncio.create_task(post(url, {"model": "m", "prompt": "held", "max_tokens": 1}))
            await eventually_async(
                lambda: gw.metrics.held.labels("m")._value.get() >= 1, what="the first request is held"
            )
            status, body, took = await post(url, {"model": "m", "prompt": "second", "max_tokens": 1})
            assert status == 429, (status, body)
            assert b"rate_limit_error" in body and took < 1.0
            assert not first.done(), "the first request is still waiting for capacity"
            assert (await first)[0] == 503
            assert gw.admission.in_use == 0, "every slot is back"

    asyncio.run(scenario())


def test_the_admission_slot_is_held_while_the_prompt_is_tokenized_by_an_engine() -> None:
    gate = asyncio.Event()

    async def slow_tokenize(_r: web.Request) -> web.Response:
        await gate.wait()
        return web.json_response({"tokens": [1, 2, 3]})

    async def scenario() -> None:
        async with serve(engine(tokenize=slow_tokenize)) as e, gateway([e], max_in_flight=1) as (url, gw):
            await eventually_async(lambda: all(ep.scraped_at for ep in gw.all_endpoints()), what="engine scraped")
            first = asyncio.create_task(post(url, {"model": "m", "prompt": "tokenize me", "max_tokens": 1}))
            await eventually_async(
                lambda: gw.admission.in_use == 1, what="the first request holds a slot while tokenizing"
            )
            assert (await post(url, {"model": "m", "prompt": "second", "max_tokens": 1}))[0] == 429
            gate.set()
            assert (await first)[0] == 200
            assert gw.admission.in_use == 0

    asyncio.run(scenario())


def test_first_byte_timeout_bounds_an_engine_that_never_answers() -> None:
    async def scenario() -> None:
        timeouts = {"first_byte_s": 0.5, "idle_s": 20.0}
        async with serve(engine(_never_answers)) as e, gateway([e], hold_s=0, timeouts=timeouts) as (url, gw):
            status, body, took = await post(url, {"model": "m", "prompt": "x", "max_tokens": 1})
            assert status == 503 and b"no answer within 0.5s" in body, body
            assert 0.4 < took < 5.0, took
            assert gw.all_endpoints()[0].ejected_until > 0

    asyncio.run(scenario())


def test_idle_timeout_ends_a_stalled_stream_with_an_error_event() -> None:
    async def scenario() -> None:
        timeouts = {"first_byte_s": 20.0, "idle_s": 0.5}
        async with serve(engine(_stalls_after_one_chunk)) as e, gateway([e], timeouts=timeouts) as (url, _gw):
            status, body, took = await post(url, {"model": "m", "prompt": "x", "max_tokens": 9, "stream": True})
            assert status == 200
            assert body.startswith(b'data: {"choices"'), body
            assert b"silent for 0.5s" in body and body.endswith(b"data: [DONE]\n\n"), body
            assert 0.4 < took < 5.0, took

    asyncio.run(scenario())


def hung_engine(completions: Handler, hung: asyncio.Event, sent: list[int]) -> web.Application:
    """An engine that hangs whole once `hung` is set: its socket stays open, its /metrics stop answering
    (as a SIGSTOPped or deadlocked engine), and `completions` counts into `sent`."""

    async def metrics(r: web.Request) -> web.Response:
        if hung.is_set():
            await asyncio.sleep(3600)
        return await _metrics(r)

    async def counted(r: web.Request) -> web.StreamResponse:
        sent.append(1)
        return await completions(r)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/v1/completions", counted)
    return app


def test_requests_waiting_on_a_hung_engine_go_to_another_once_its_metrics_fall_silent() -> None:
    async def scenario() -> None:
        hung, sent = asyncio.Event(), []
        timeouts = {"first_byte_s": 60.0, "idle_s": 60.0}
        async with (
            serve(hung_engine(_never_answers, hung, sent)) as bad,
            serve(engine()) as good,
            gateway([bad, good], max_retries=1, silent_after_s=0.5, strategy="round-robin", timeouts=timeouts) as (
                url,
                gw,
            ),
        ):
            await eventually_async(lambda: all(ep.scraped_at for ep in gw.all_endpoints()), what="engines scraped")
            hung.set()
            results = await asyncio.gather(
                *(post(url, {"model": "m", "prompt": f"p{i}", "max_tokens": 1}) for i in range(4))
            )
            assert sent, "no request went to the hung engine: nothing was tested"
            assert [r[0] for r in results] == [200] * 4, results
            assert max(r[2] for r in results) < 10.0, results  # not first_byte_s (60 s)
            assert gw.metrics.retries.labels("upstream")._value.get() >= 1

    asyncio.run(scenario())


def test_a_stream_from_an_engine_that_hangs_mid_answer_ends_with_an_error_event() -> None:
    async def scenario() -> None:
        hung, sent = asyncio.Event(), []

        async def one_chunk_then_hang(request: web.Request) -> web.StreamResponse:
            hung.set()
            return await _stalls_after_one_chunk(request)

        timeouts = {"first_byte_s": 60.0, "idle_s": 60.0}
        async with (
            serve(hung_engine(one_chunk_then_hang, hung, sent)) as e,
            gateway([e], silent_after_s=0.5, timeouts=timeouts) as (url, gw),
        ):
            await eventually_async(lambda: all(ep.scraped_at for ep in gw.all_endpoints()), what="engine scraped")
            status, body, took = await post(url, {"model": "m", "prompt": "x", "max_tokens": 9, "stream": True})
            assert status == 200 and body.startswith(b'data: {"choices"'), body
            assert b"stopped answering" in body and body.endswith(b"data: [DONE]\n\n"), body
            assert took < 10.0, took  # not idle_s (60 s)

    asyncio.run(scenario())


def test_a_stream_that_flows_is_not_cut_while_its_engines_metrics_are_late() -> None:
    """A busy engine may answer its /metrics late while its stream flows: only a request that has itself
    been silent is taken as hung."""

    async def scenario() -> None:
        late, sent = asyncio.Event(), []

        async def flows(request: web.Request) -> web.StreamResponse:
            late.set()  # from now on its /metrics do not answer
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for _ in range(10):
                await resp.write(b'data: {"choices":[{"index":0,"text":"a"}]}\n\n')
                await asyncio.sleep(0.2)
            await resp.write(b"data: [DONE]\n\n")
            return resp

        async with (
            serve(hung_engine(flows, late, sent)) as e,
            gateway([e], silent_after_s=0.5, timeouts={"first_byte_s": 60.0, "idle_s": 60.0}) as (url, gw),
        ):
            await eventually_async(lambda: all(ep.scraped_at for ep in gw.all_endpoints()), what="engine scraped")
            status, body, took = await post(url, {"model": "m", "prompt": "x", "max_tokens": 9, "stream": True})
            assert status == 200 and b"error" not in body, body
            assert body.count(b'"text":"a"') == 10 and body.endswith(b"data: [DONE]\n\n"), body
            assert took > 1.5  # the stream ran well past silent_after_s with the metrics silent

    asyncio.run(scenario())


def test_total_timeout_cuts_a_non_streamed_answer_that_never_ends() -> None:
    async def scenario() -> None:
        timeouts = {"first_byte_s": 20.0, "idle_s": 20.0, "total_s": 1.0}
        async with serve(engine(_trickles_forever)) as e, gateway([e], timeouts=timeouts) as (url, gw):
            t0 = time.monotonic()
            try:
                status, body, _ = await post(url, {"model": "m", "prompt": "x", "max_tokens": 1})
                raise AssertionError(f"a cut answer must not look whole: {status} {body!r}")
            except aiohttp.ClientPayloadError:
                pass
            assert 0.9 < time.monotonic() - t0 < 6.0
            await eventually_async(lambda: gw.admission.in_use == 0, what="the slot is released")

    asyncio.run(scenario())


def test_connect_timeout_bounds_an_engine_whose_accept_queue_is_full() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the accept queue; then the kernel drops new SYNs and connect() hangs
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)

    async def scenario() -> None:
        timeouts = {"connect_s": 0.3, "first_byte_s": 20.0}
        async with gateway([f"http://127.0.0.1:{port}"], hold_s=0, timeouts=timeouts) as (url, _gw):
            status, body, took = await post(url, {"model": "m", "prompt": "x", "max_tokens": 1})
            assert status == 503 and b"Timeout" in body, body
            assert took < 5.0, took

    try:
        asyncio.run(scenario())
    finally:
        for s in [*fillers, listener]:
            s.close()


def test_tokenize_timeout_bounds_the_engine_tokenizer_and_routing_goes_on() -> None:
    async def scenario() -> None:
        async with (
            serve(engine(tokenize=_never_answers)) as e,
            gateway([e], timeouts={"tokenize_s": 0.3}) as (url, gw),
        ):
            await eventually_async(lambda: all(ep.scraped_at for ep in gw.all_endpoints()), what="engine scraped")
            status, _, took = await post(url, {"model": "m", "prompt": "no tokenizer here", "max_tokens": 1})
            assert status == 200 and took < 3.0, (status, took)
            assert gw.metrics.picks.labels("kv-aware", "no")._value.get() == 1, "the pick is counted"

    asyncio.run(scenario())


def test_a_client_hanging_up_frees_everything_and_does_not_eject_the_engine() -> None:
    async def scenario() -> None:
        async with serve(engine(_stalls_after_one_chunk)) as e, gateway([e]) as (url, gw):
            async with aiohttp.ClientSession() as s:
                r = await s.post(f"{url}/v1/completions", json={"model": "m", "prompt": "x", "stream": True})
                await r.content.readline()
                r.close()
            await eventually_async(lambda: gw.admission.in_use == 0, what="the slot is released")
            ep = gw.all_endpoints()[0]
            await eventually_async(lambda: ep.in_flight == 0, what="the engine's in-flight count is back")
            assert ep.ejected_until == 0, "a client leaving is not the engine's fault"
            await eventually_async(
                lambda: gw.metrics.requests.labels("kv-aware", "499")._value.get() == 1, what="counted as client gone"
            )

    asyncio.run(scenario())
