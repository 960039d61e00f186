"""Reading a pool's demand and latency from an engine's and a gateway's /metrics pages."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from headway.autoscaler.sources import PoolMetrics, mix_of, parse_metrics
from headway.gateway.metrics import GatewayMetrics


def test_the_gateway_page_gives_held_and_in_flight_requests() -> None:
    reg = CollectorRegistry()
    gw = GatewayMetrics(reg)
    gw.held.labels("tiny").inc(3)
    gw.held.labels("other").inc(1)
    gw.in_flight.labels("tiny").set(2)
    s = parse_metrics(generate_latest(reg).decode())
    assert s.held == {"tiny": 3, "other": 1} and s.in_flight == {"tiny": 2}


def test_the_observed_mix_is_the_mean_requests_nearest_profile_bucket() -> None:
    m = PoolMetrics(window_s=10, rps=2.0, input_tokens=900.0, output_tokens=70.0)
    assert mix_of(m, [(256, 64), (1024, 64), (1024, 256)]) == {(1024, 64): 1.0}
    assert mix_of(PoolMetrics(window_s=10), [(256, 64)]) == {}


def test_the_mix_comes_from_the_gateways_joint_counts_not_the_mean() -> None:
    """Half chat (short prompt, long answer), half documents (long prompt, short answer): the mean request
    (about 2,200 in, 140 out) matches neither profile bucket; the gateway's joint counts give both."""
    reg = CollectorRegistry()
    gw = GatewayMetrics(reg)
    for i_le, o_le, n in (("256", "256", 30), ("4096", "64", 28), ("4096", "128", 2)):
        gw.shapes.labels("tiny", i_le, o_le).inc(n)
    gw.shapes.labels("other-model", "64", "16").inc(100)
    s = parse_metrics(generate_latest(reg).decode())
    m = PoolMetrics(window_s=10, rps=6.0, input_tokens=2200.0, output_tokens=140.0)
    m.shapes = {(i, o): n for (model, i, o), n in s.shapes.items() if model == "tiny"}
    buckets = [(256, 256), (1024, 256), (4096, 64), (1024, 64)]
    assert mix_of(m, buckets) == pytest.approx({(256, 256): 0.5, (4096, 64): 0.5})
    m.shapes = {}
    assert mix_of(m, buckets) == {(1024, 256): 1.0}


def test_engine_histograms_and_counters_are_read_under_vllms_names() -> None:
    text = "\n".join(
        [
            "# TYPE vllm:request_success_total counter",
            'vllm:request_success_total{model_name="m",finished_reason="stop"} 7',
            "# TYPE vllm:time_to_first_token_seconds histogram",
            'vllm:time_to_first_token_seconds_bucket{model_name="m",le="0.5"} 6',
            'vllm:time_to_first_token_seconds_bucket{model_name="m",le="+Inf"} 7',
            'vllm:time_to_first_token_seconds_count{model_name="m"} 7',
            'vllm:time_to_first_token_seconds_sum{model_name="m"} 1.0',
            "# TYPE vllm:num_requests_waiting gauge",
            'vllm:num_requests_waiting{model_name="m"} 4',
            "",
        ]
    )
    s = parse_metrics(text)
    assert s.requests == 7 and s.waiting == 4
    assert s.ttft == {0.5: 6, math.inf: 7}


def test_each_pool_reads_its_own_models_held_requests_and_shapes_from_a_shared_gateway() -> None:
    """Two pools scrape one gateway (a real HTTP /metrics): each differences against its own last read,
    so pool A's scrape does not swallow pool B's increase, and each counts only its own model."""
    from prometheus_client import start_http_server

    from headway.autoscaler.sources import DirectSource
    from headway.devenv import procs

    reg = CollectorRegistry()
    gw = GatewayMetrics(reg)
    port = procs.free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=reg)
    try:
        source = DirectSource([f"http://127.0.0.1:{port}"])
        for pool, model in (("a", "tiny"), ("b", "other")):
            source.read("ns", pool, [], model)  # first read: the baseline
        gw.held.labels("tiny").inc(2)
        gw.held.labels("other").inc(5)
        gw.shapes.labels("tiny", "256", "64").inc(4)
        gw.in_flight.labels("other").set(3)
        a = source.read("ns", "a", [], "tiny")
        b = source.read("ns", "b", [], "other")
        assert (a.held, b.held) == (2, 5)
        assert a.shapes == {("256", "64"): 4} and b.shapes == {}
        assert (a.gateway_in_flight, b.gateway_in_flight) == (0, 3)
        assert source.read("ns", "a", [], "tiny").held == 0  # nothing new since its own last read
    finally:
        server.shutdown()
        thread.join(timeout=5)
