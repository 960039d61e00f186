"""Published serving measurements the simulator's GPU presets are calibrated against, each replayed as run.

Every point names its source, the workload as published, and how the simulator replays it (closed-loop
clients, `--request-rate inf`, as `vllm bench serve` runs them). `replay()` runs one on virtual time in
well under a second; `tests/unit/test_sim_calibration.py` holds every point within `TOLERANCE`.

Points gathered but not replayed, and why:
- H100, vLLM, Llama-3.1-8B at concurrency 16 (1,384 tok/s, TPOT 10.9 ms, TTFT p99 65 ms) and 64 (1,312 tok/s):
  the prompt and output lengths are not published, and the two points disagree with any one workload (more
  concurrency, less throughput); only the concurrency-1 TPOT, which barely depends on them, is replayed.
- H100, SGLang, ShareGPT at 200 req/s offered (28.2 req/s): another engine, and a finite 1,000-prompt burst
  whose duration is set by ShareGPT's longest answers, which fixed-length requests cannot reproduce.
- H100, NVIDIA NIM (12,215 tok/s at concurrency 100): most likely FP8 weights.
- 2× L4, Qwen2.5-7B: another model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from headway.sim.profiles import PRESETS
from headway.sim.sweep import ClosedLoopResult, run_closed_loop

TOLERANCE = 0.25
"""Largest relative difference between a replayed point and its measurement."""

Metric = Literal["median_tpot_s", "output_throughput", "request_throughput"]


@dataclass(frozen=True)
class MeasuredPoint:
    name: str
    gpu: str
    concurrency: int
    requests: int
    input_tokens: int
    output_tokens: int
    metric: Metric
    measured: float
    source: str
    note: str = ""


POINTS: tuple[MeasuredPoint, ...] = (
    MeasuredPoint(
        "h100-c1-tpot",
        "H100",
        1,
        10,
        1024,
        128,
        "median_tpot_s",
        0.00648,
        "vLLM, Llama-3.1-8B fp16, concurrency 1: TPOT p50 6.5 ms (../shared/reference/gpu-serving.md)",
        "lengths not published; 1024/128 replayed (TPOT at concurrency 1 moves < 1% with the context)",
    ),
    MeasuredPoint(
        "a100-40-c1",
        "A100-40",
        1,
        20,
        1024,
        128,
        "output_throughput",
        75.0,
        "johnmusgrave.com 'vLLM throughput-latency sweep on NVIDIA A100': vLLM 0.23, A100 40GB, "
        "Llama-3.1-8B-Instruct bf16, random 1024 in / 128 out, --ignore-eos, C=1, 20 prompts",
    ),
    MeasuredPoint(
        "a100-40-c8",
        "A100-40",
        8,
        160,
        1024,
        128,
        "output_throughput",
        6.6 * 75.0,
        "same sweep, C=8, 160 prompts: 6.6× the C=1 throughput",
    ),
    MeasuredPoint(
        "l4-sharegpt-req",
        "L4",
        1000,
        1000,
        220,
        197,
        "request_throughput",
        2.60,
        "arc53/llm-price-compass benchmarks/Meta-Llama-3.1-8B-Instruct/L4/13-06-2024.json: vLLM, ShareGPT, "
        "1,000 prompts at unlimited rate",
        "replayed with every request at ShareGPT's mean lengths (197 out = 513 tok/s / 2.60 req/s; ~220 in)",
    ),
    MeasuredPoint(
        "l4-sharegpt-tok",
        "L4",
        1000,
        1000,
        220,
        197,
        "output_throughput",
        513.0,
        "same run: 513 output tok/s",
        "as above",
    ),
)


@dataclass(frozen=True)
class Replayed:
    point: MeasuredPoint
    simulated: float

    @property
    def ratio(self) -> float:
        return self.simulated / self.point.measured

    @property
    def within(self) -> bool:
        return abs(self.ratio - 1) <= TOLERANCE


def replay(point: MeasuredPoint) -> Replayed:
    result: ClosedLoopResult = run_closed_loop(
        PRESETS[point.gpu], point.concurrency, point.requests, point.input_tokens, point.output_tokens
    )
    return Replayed(point, getattr(result, point.metric))
