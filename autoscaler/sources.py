"""Metrics input: what a pool's engines and gateway say, read from Prometheus or scraped directly.

Both sources answer the same question for one pool over the last interval: request rate, mean input and
output tokens per request, TTFT and ITL histograms (whole pool and per variant), waiting and running
requests, requests the gateway held for want of a ready endpoint, and the gateway's count of completed
requests per (input, output) token bucket of the pool's model (the joint token mix; see
headway.api.shape).

- Prometheus (`--prometheus-url`): instant queries of `rate`/`increase` over the window. Engine and
  gateway series must carry `namespace`, `pool` and `variant` labels (relabelled from the pod at scrape
  time). A failed query, or no engine series for a pool that has ready pods, is stale data.
- Direct: the engines' /metrics on each ready pod's IP and the gateways' /metrics, differenced against
  the previous scrape of the same pod (a pod first seen counts from zero, a counter reset from zero).
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from headway.api.labels import (
    METRIC_GATEWAY_HELD,
    METRIC_GATEWAY_IN_FLIGHT,
    METRIC_GATEWAY_REQUEST_SHAPE,
    PROMETHEUS_NAMESPACE_LABEL,
    PROMETHEUS_POOL_LABEL,
    PROMETHEUS_VARIANT_LABEL,
)
from headway.api.shape import INPUT_EDGES, OUTPUT_EDGES, representative
from headway.autoscaler.errors import MetricsUnavailable
from headway.autoscaler.slo import delta

REQUESTS = "vllm:request_success_total"
PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
TTFT = "vllm:time_to_first_token_seconds_bucket"
ITL = "vllm:inter_token_latency_seconds_bucket"
WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
HELD = METRIC_GATEWAY_HELD
SHAPES = METRIC_GATEWAY_REQUEST_SHAPE

Histogram = dict[float, float]
Shape = tuple[str, str]
"""(input_tokens_le, output_tokens_le) labels of the gateway's shape counter."""


@dataclass(frozen=True)
class EnginePod:
    name: str
    variant: str
    url: str
    """Base URL of the engine's HTTP server (its /metrics)."""


@dataclass
class PoolMetrics:
    window_s: float
    rps: float = 0.0
    input_tokens: float = 0.0
    output_tokens: float = 0.0
    ttft: Histogram = field(default_factory=dict)
    itl: Histogram = field(default_factory=dict)
    variant_ttft: dict[str, Histogram] = field(default_factory=dict)
    variant_itl: dict[str, Histogram] = field(default_factory=dict)
    waiting: float = 0.0
    running: float = 0.0
    held: float = 0.0
    gateway_in_flight: float = 0.0
    shapes: dict[Shape, float] = field(default_factory=dict)
    """Requests of the pool's model completed in the window, per token bucket (from the gateways)."""


def _add(h: Histogram, le: float, v: float) -> None:
    h[le] = h.get(le, 0.0) + v


# ----- Prometheus
class PrometheusSource:
    def __init__(self, url: str, window_s: float, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.window_s = window_s
        self.timeout_s = timeout_s

    def _query(self, q: str) -> list[dict]:
        qs = urllib.parse.urlencode({"query": q})
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query?{qs}", timeout=self.timeout_s) as r:
                body = json.loads(r.read())
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise MetricsUnavailable(f"prometheus at {self.url}: {reason}") from None
        if body.get("status") != "success":
            raise MetricsUnavailable(f"prometheus at {self.url}: {body.get('error', 'query failed')}")
        return body["data"]["result"]

    def read(self, namespace: str, pool: str, pods: Sequence[EnginePod], model: str = "") -> PoolMetrics:
        sel = f'{PROMETHEUS_NAMESPACE_LABEL}="{namespace}",{PROMETHEUS_POOL_LABEL}="{pool}"'
        w = f"{max(2, int(self.window_s))}s"

        def scalar(q: str) -> float | None:
            res = self._query(q)
            return sum(float(r["value"][1]) for r in res) if res else None

        rps = scalar(f"sum(rate({REQUESTS}{{{sel}}}[{w}]))")
        if rps is None and pods:
            raise MetricsUnavailable(f"prometheus at {self.url}: no {REQUESTS} series for pool {namespace}/{pool}")
        m = PoolMetrics(window_s=self.window_s, rps=rps or 0.0)
        if m.rps > 0:
            m.input_tokens = (scalar(f"sum(rate({PROMPT_TOKENS}{{{sel}}}[{w}]))") or 0.0) / m.rps
            m.output_tokens = (scalar(f"sum(rate({GENERATION_TOKENS}{{{sel}}}[{w}]))") or 0.0) / m.rps
        for name, pool_h, per_variant in ((TTFT, m.ttft, m.variant_ttft), (ITL, m.itl, m.variant_itl)):
            for r in self._query(f"sum by (le, {PROMETHEUS_VARIANT_LABEL}) (increase({name}{{{sel}}}[{w}]))"):
                le, v = float(r["metric"]["le"]), float(r["value"][1])
                if math.isnan(v):
                    continue
                _add(pool_h, le, v)
                _add(per_variant.setdefault(r["metric"].get(PROMETHEUS_VARIANT_LABEL, ""), {}), le, v)
        m.waiting = scalar(f"sum({WAITING}{{{sel}}})") or 0.0
        m.running = scalar(f"sum({RUNNING}{{{sel}}})") or 0.0
        # the gateway's series are per model (a gateway serves every pool), the engines' per pool
        gw_sel = f'model="{model}"' if model else sel
        m.held = scalar(f"sum(increase({HELD}{{{gw_sel}}}[{w}]))") or 0.0
        m.gateway_in_flight = scalar(f"sum({METRIC_GATEWAY_IN_FLIGHT}{{{gw_sel}}})") or 0.0
        if model:
            by = "input_tokens_le, output_tokens_le"
            for r in self._query(f"sum by ({by}) (increase({SHAPES}{{{gw_sel}}}[{w}]))"):
                v = float(r["value"][1])
                if v > 0:
                    m.shapes[(r["metric"]["input_tokens_le"], r["metric"]["output_tokens_le"])] = v
        return m


# ----- direct scrape
@dataclass
class _Scrape:
    requests: float = 0.0
    prompt: float = 0.0
    generation: float = 0.0
    ttft: Histogram = field(default_factory=dict)
    itl: Histogram = field(default_factory=dict)
    waiting: float = 0.0
    running: float = 0.0
    held: dict[str, float] = field(default_factory=dict)
    """The gateway's held requests per model."""
    in_flight: dict[str, float] = field(default_factory=dict)
    """The gateway's requests in flight per model."""
    shapes: dict[tuple[str, str, str], float] = field(default_factory=dict)
    """(model, input_tokens_le, output_tokens_le) → completed requests."""


_SUMS = {
    REQUESTS: "requests",
    PROMPT_TOKENS: "prompt",
    GENERATION_TOKENS: "generation",
    WAITING: "waiting",
    RUNNING: "running",
}
_HISTOGRAMS = {TTFT: "ttft", ITL: "itl"}
_PER_MODEL = {HELD: "held", METRIC_GATEWAY_IN_FLIGHT: "in_flight"}


def _of_model(per_model: Mapping[str, float], model: str) -> float:
    """One model's value, or every model's together when the pool names none."""
    return per_model.get(model, 0.0) if model else sum(per_model.values())


def parse_metrics(text: str) -> _Scrape:
    """The series a decision reads from one /metrics page, summed over their labels."""
    s = _Scrape()
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            if field_name := _SUMS.get(smp.name):
                setattr(s, field_name, getattr(s, field_name) + smp.value)
            elif hist := _HISTOGRAMS.get(smp.name):
                _add(getattr(s, hist), float(smp.labels["le"]), smp.value)
            elif per_model := _PER_MODEL.get(smp.name):
                by_model, model = getattr(s, per_model), smp.labels.get("model", "")
                by_model[model] = by_model.get(model, 0.0) + smp.value
            elif smp.name == SHAPES:
                key = (smp.labels["model"], smp.labels["input_tokens_le"], smp.labels["output_tokens_le"])
                s.shapes[key] = s.shapes.get(key, 0.0) + smp.value
    return s


def _fetch(url: str, timeout_s: float) -> str:
    with urllib.request.urlopen(f"{url.rstrip('/')}/metrics", timeout=timeout_s) as r:
        return r.read().decode()


def _diff(now: float, before: float | None) -> float:
    return now if before is None or now < before else now - before


class DirectSource:
    """Scrapes engines and gateways itself; remembers the previous scrape per URL to take differences."""

    def __init__(
        self, gateway_urls: Iterable[str] = (), timeout_s: float = 3.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.gateway_urls = list(gateway_urls)
        self.timeout_s = timeout_s
        self.clock = clock
        self._last: dict[str, tuple[float, _Scrape]] = {}

    def read(self, namespace: str, pool: str, pods: Sequence[EnginePod], model: str = "") -> PoolMetrics:
        now = self.clock()
        m = PoolMetrics(window_s=0.0)
        windows: list[float] = []
        tokens_in = tokens_out = requests = 0.0
        failures = []
        for pod in pods:
            try:
                cur = parse_metrics(_fetch(pod.url, self.timeout_s))
            except (urllib.error.URLError, OSError, ValueError) as e:
                failures.append(f"{pod.name}: {getattr(e, 'reason', e)}")
                continue
            prev_t, prev = self._last.get(pod.url, (None, None))
            self._last[pod.url] = (now, cur)
            if prev_t is not None:
                windows.append(now - prev_t)
            requests += _diff(cur.requests, prev.requests if prev else None)
            tokens_in += _diff(cur.prompt, prev.prompt if prev else None)
            tokens_out += _diff(cur.generation, prev.generation if prev else None)
            for le, v in delta(cur.ttft, prev.ttft if prev else None).items():
                _add(m.ttft, le, v)
                _add(m.variant_ttft.setdefault(pod.variant, {}), le, v)
            for le, v in delta(cur.itl, prev.itl if prev else None).items():
                _add(m.itl, le, v)
                _add(m.variant_itl.setdefault(pod.variant, {}), le, v)
            m.waiting += cur.waiting
            m.running += cur.running
        if pods and len(failures) == len(pods):
            raise MetricsUnavailable(f"no engine of pool {namespace}/{pool} answered: {'; '.join(failures)[:300]}")
        for url in self.gateway_urls:
            try:
                cur = parse_metrics(_fetch(url, self.timeout_s))
            except (urllib.error.URLError, OSError, ValueError):
                continue
            # per pool: every pool reads the same gateway, and each differences against its own last read
            key = f"{url}#{namespace}/{pool}"
            _, prev = self._last.get(key, (None, None))
            self._last[key] = (now, cur)
            m.gateway_in_flight += _of_model(cur.in_flight, model)
            if prev is None:  # counters count from this read on
                continue
            m.held += _diff(_of_model(cur.held, model), _of_model(prev.held, model))
            for (mod, i, o), v in cur.shapes.items():
                if mod == model and (n := _diff(v, prev.shapes.get((mod, i, o), 0.0))) > 0:
                    m.shapes[(i, o)] = m.shapes.get((i, o), 0.0) + n
        m.window_s = max(windows) if windows else 0.0
        if m.window_s > 0:
            m.rps = requests / m.window_s
        if requests > 0:
            m.input_tokens, m.output_tokens = tokens_in / requests, tokens_out / requests
        return m


def mix_of(m: PoolMetrics, buckets: Sequence[tuple[int, int]]) -> Mapping[tuple[int, int], float]:
    """The observed token mix as shares of profile buckets.

    From the gateways' joint counts when they have any: each request bucket goes to its nearest profile
    bucket on a log scale. Otherwise (no gateway configured, or none of this model's requests completed
    in the window) the mean request's nearest bucket: engines export only marginal length histograms, so
    the joint mix is not observable from them; the mean is."""
    total = sum(m.shapes.values())
    if total > 0 and buckets:
        mix: dict[tuple[int, int], float] = {}
        for (i_le, o_le), n in m.shapes.items():
            b = _nearest(buckets, representative(i_le, INPUT_EDGES), representative(o_le, OUTPUT_EDGES))
            mix[b] = mix.get(b, 0.0) + n / total
        return mix
    if m.rps <= 0 or m.input_tokens <= 0 or m.output_tokens <= 0 or not buckets:
        return {}
    return {_nearest(buckets, m.input_tokens, m.output_tokens): 1.0}


def _nearest(buckets: Sequence[tuple[int, int]], i: float, o: float) -> tuple[int, int]:
    return min(buckets, key=lambda b: abs(math.log(b[0] / max(i, 1.0))) + abs(math.log(b[1] / max(o, 1.0))))
