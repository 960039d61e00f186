"""vLLM V1's Prometheus metrics, same names, types, labels and buckets, fed by the simulated engine."""

from __future__ import annotations

import time
from collections.abc import Mapping

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from headway.sim.engine import EngineObserver, Request

TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
ITL_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
REQUEST_LATENCY_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)
ITERATION_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")
LABELS = ("model_name", "engine")


def build_1_2_5_buckets(max_value: int) -> list[int]:
    """vLLM's token-count buckets: 1, 2, 5, 10, 20, 50, … up to max_value."""
    out, exp = [], 0
    while True:
        for m in (1, 2, 5):
            v = m * 10**exp
            if v > max_value:
                return out
            out.append(v)
        exp += 1


class EngineMetrics(EngineObserver):
    def __init__(
        self,
        model_name: str,
        max_model_len: int,
        cache_config: Mapping[str, str],
        lora: Mapping[str, str] | None = None,
    ) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        for c in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(c)
        lv = {"model_name": model_name, "engine": "0"}
        token_buckets = build_1_2_5_buckets(max_model_len)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, LABELS, registry=r).labels(**lv)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, LABELS, registry=r).labels(**lv)

        def hist(name: str, doc: str, buckets: tuple[float, ...] | list[int]) -> Histogram:
            return Histogram(name, doc, LABELS, buckets=buckets, registry=r).labels(**lv)

        self.running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        by_reason = Gauge(
            "vllm:num_requests_waiting_by_reason",
            "Number of requests waiting, by reason.",
            (*LABELS, "reason"),
            registry=r,
        )
        self.waiting_capacity = by_reason.labels(**lv, reason="capacity")
        by_reason.labels(**lv, reason="deferred").set(0)
        self.kv_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        self.prefix_queries = counter(
            "vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens."
        )
        self.prefix_hits = counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.")
        self.preemptions = counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.prompt_tokens_cached = counter("vllm:prompt_tokens_cached", "Number of cached prompt tokens.")
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            (*LABELS, "finished_reason"),
            registry=r,
        )
        self.success = {reason: success.labels(**lv, finished_reason=reason) for reason in FINISH_REASONS}
        self.req_prompt_tokens = hist(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed.", token_buckets
        )
        self.req_generation_tokens = hist(
            "vllm:request_generation_tokens", "Number of generation tokens processed.", token_buckets
        )
        self.iteration_tokens = hist(
            "vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", ITERATION_TOKEN_BUCKETS
        )
        self.max_tokens_param = hist(
            "vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.", token_buckets
        )
        self.ttft = hist(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT_BUCKETS
        )
        self.itl = hist("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", ITL_BUCKETS)
        self.tpot = hist(
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            ITL_BUCKETS,
        )
        self.e2e = hist(
            "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", REQUEST_LATENCY_BUCKETS
        )
        self.queue_time = hist(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.inference_time = hist(
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.prefill_time = hist(
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.decode_time = hist(
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        info = Gauge(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            (*sorted(cache_config), "engine"),
            registry=r,
        )
        info.labels(**cache_config, engine="0").set(1)
        self.lora_info: Gauge | None = None
        if lora is not None:
            self.lora_info = Gauge(
                "vllm:lora_requests_info",
                "Running stats on lora requests.",
                ("max_lora", "running_lora_adapters", "waiting_lora_adapters"),
                registry=r,
            )
            self._max_lora = lora["max_lora"]
        self._last_lora: tuple[str, str] | None = None

    # ----- EngineObserver
    def on_schedule(self, req: Request, queued_s: float, hit_tokens: int) -> None:
        self.prefix_queries.inc(len(req.tokens))
        self.prefix_hits.inc(hit_tokens)

    def on_token(self, req: Request, now: float) -> None:
        self.generation_tokens.inc()
        if len(req.output) == 1:
            self.ttft.observe(now - req.arrival)
            self.prompt_tokens.inc(len(req.prompt))
            self.prompt_tokens_cached.inc(req.cached_tokens)
        elif req.prev_token_at is not None:
            self.itl.observe(now - req.prev_token_at)
        req.prev_token_at = now

    def on_finish(self, req: Request, now: float) -> None:
        self.success[req.finish_reason or "error"].inc()
        if req.finish_reason in ("abort", "error"):
            return
        n_out = len(req.output)
        self.req_prompt_tokens.observe(len(req.prompt))
        self.req_generation_tokens.observe(n_out)
        self.max_tokens_param.observe(req.max_tokens)
        self.e2e.observe(now - req.arrival)
        scheduled = req.scheduled_at or req.arrival
        first = req.first_token_at or now
        self.queue_time.observe(scheduled - req.arrival)
        self.inference_time.observe(now - scheduled)
        self.prefill_time.observe(first - scheduled)
        self.decode_time.observe(now - first)
        if n_out > 1:
            self.tpot.observe((now - first) / (n_out - 1))

    def on_preempt(self, req: Request) -> None:
        self.preemptions.inc()

    def on_step(self, tokens: int, running: int, waiting: int, usage: float) -> None:
        if tokens:
            self.iteration_tokens.observe(tokens)
        self.running.set(running)
        self.waiting.set(waiting)
        self.waiting_capacity.set(waiting)
        self.kv_usage.set(usage)

    def set_lora(self, running: list[str], waiting: list[str]) -> None:
        if self.lora_info is None:
            return
        key = (",".join(sorted(set(running))), ",".join(sorted(set(waiting))))
        if key != self._last_lora:
            self.lora_info.clear()
            self._last_lora = key
        self.lora_info.labels(max_lora=self._max_lora, running_lora_adapters=key[0], waiting_lora_adapters=key[1]).set(
            time.time()
        )
