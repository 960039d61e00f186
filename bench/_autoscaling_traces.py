"""Request-rate traces the autoscaler benchmark replays: per tick, the arrival rate and the token mix.

- `synthetic`: 24 hours of a diurnal rate (night floor 1.5 req/s, midday peak 36) with Poisson noise, six
  short bursts of 2.5-4x, and a change of token mix at hour 12 (chat: short prompts, long answers →
  documents: long prompts, short answers, some too long for an L4 or A10G to prefill within the TTFT target).
- `azure-conv`: the Azure LLM inference trace 2023, conversation service (../shared/traces/
  AzureLLMInferenceTrace_conv.csv; Azure/AzurePublicDataset, CC-BY-4.0; Patel et al., "Splitwise", ISCA'24):
  19,366 real requests over 58 minutes with their own token counts. Each tick's rate is the trace's
  arrival rate over the `AZURE_WINDOW_S` seconds around it (the log's partial first 30 s left out), times
  `rate_scale` (default 8: the trace's mean of 5.6 req/s becomes 44, a fleet of several H100s or dozens
  of small GPUs) over `time_scale` (default 1: real time; 2 would stretch it to two hours at half the
  rate), drawn Poisson per tick. The token mix of each tick is the trace's own over the
  `AZURE_MIX_WINDOW_S` seconds around it, each request in the profile's nearest (input, output) bucket by
  ratio; prompts beyond the largest bucket (2% over 4096 tokens) count as it.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench._workloads import TRACE_DIR
from headway.autoscaler.capacity import Bucket

CHAT: dict[Bucket, float] = {(256, 256): 0.7, (1024, 256): 0.3}
DOCS: dict[Bucket, float] = {(1024, 64): 0.5, (4096, 64): 0.2, (256, 256): 0.3}
AZURE_CONV_FILE = "AzureLLMInferenceTrace_conv.csv"
AZURE_RATE_SCALE = 8.0
AZURE_TIME_SCALE = 1.0
AZURE_WINDOW_S = 30.0
"""Real seconds over which the trace's arrival rate is read for one tick."""
AZURE_MIX_WINDOW_S = 120.0
"""Real seconds over which the trace's token mix is read for one tick."""
AZURE_SKIP_S = 30.0
"""The log's first 30 s hold under half the arrivals of any later 30 s (logging began mid-stream): skipped."""


@dataclass(frozen=True)
class Trace:
    name: str
    description: str
    tick_s: float
    rps: np.ndarray
    """Requests arriving per second, per tick (Poisson draws)."""
    mix: list[dict[Bucket, float]]

    def buckets(self) -> list[Bucket]:
        return sorted({b for m in self.mix for b in m})

    def describe(self) -> str:
        return self.description


def make_trace(hours: float, tick_s: float, seed: int = 7) -> Trace:
    """The synthetic day (compressed into `hours`)."""
    rng = np.random.default_rng(seed)
    n = int(hours * 3600 / tick_s)
    t = np.arange(n) * tick_s
    day = 24 * 3600
    base = 1.5 + 34.5 * (0.5 - 0.5 * np.cos(2 * np.pi * (t - 3 * 3600) / day)) ** 2
    for start_h, dur_min, factor in (
        (2.5, 3, 4.0),
        (7.0, 5, 2.5),
        (10.3, 4, 3.0),
        (14.0, 6, 2.5),
        (17.5, 2, 4.0),
        (21, 5, 3.0),
    ):
        s = int(start_h * 3600 * hours / 24 / tick_s)
        base[s : s + int(dur_min * 60 / tick_s)] *= factor
    rps = rng.poisson(base * tick_s) / tick_s
    mix = [CHAT if ti < hours * 3600 / 2 else DOCS for ti in t]
    description = (
        f"synthetic: {hours:g} h in {tick_s:g} s ticks; diurnal 1.5-36 req/s (Poisson), 6 bursts of 2.5-4x for "
        "2-6 min, token mix chat (256/1024 in, 256 out) -> documents (256/1024/4096 in, 64-256 out) at mid-trace; "
        "seed 7"
    )
    return Trace("synthetic", description, tick_s, rps, mix)


def nearest_bucket(grid: Sequence[Bucket], input_tokens: int, output_tokens: int) -> Bucket:
    """The grid's bucket nearest by ratio of lengths (the capacity profile's own rule)."""
    i, o = max(1, input_tokens), max(1, output_tokens)
    return min(grid, key=lambda b: abs(math.log(b[0] / i)) + abs(math.log(b[1] / o)))


def _read_azure(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    times, ins, outs = [], [], []
    with open(path, newline="") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):
            try:
                stamp = dt.datetime.fromisoformat(row["TIMESTAMP"][:26])
                times.append(stamp.timestamp())
                ins.append(int(row["ContextTokens"]))
                outs.append(int(row["GeneratedTokens"]))
            except (KeyError, ValueError) as e:
                raise ValueError(f"{path}:{n}: not an Azure LLM trace row ({e})") from e
    t = np.array(times)
    return t - t.min(), np.array(ins), np.array(outs)


def azure_conv(
    tick_s: float,
    grid: Sequence[Bucket],
    *,
    rate_scale: float = AZURE_RATE_SCALE,
    time_scale: float = AZURE_TIME_SCALE,
    seed: int = 7,
) -> Trace:
    path = TRACE_DIR / AZURE_CONV_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the azure-conv trace is read from ../shared/traces/")
    times, ins, outs = _read_azure(str(path))
    order = np.argsort(times, kind="stable")
    times, ins, outs = times[order], ins[order], outs[order]
    keep = times >= AZURE_SKIP_S
    times, ins, outs = times[keep] - AZURE_SKIP_S, ins[keep], outs[keep]
    grid = list(grid)
    index = {b: k for k, b in enumerate(grid)}
    which = np.array([index[nearest_bucket(grid, int(i), int(o))] for i, o in zip(ins, outs, strict=True)])
    cum = np.zeros((len(grid), len(times) + 1))
    for k in range(len(grid)):
        cum[k, 1:] = np.cumsum(which == k)
    span = float(times[-1])
    n = int(span * time_scale / tick_s)
    centre = (np.arange(n) + 0.5) * tick_s / time_scale  # in the trace's own seconds

    def window(width: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lo_t, hi_t = np.clip(centre - width / 2, 0, span), np.clip(centre + width / 2, 0, span)
        return np.searchsorted(times, lo_t), np.searchsorted(times, hi_t, side="right"), hi_t - lo_t

    lo, hi, width = window(AZURE_WINDOW_S)
    expected = (hi - lo) / np.maximum(width, 1e-9) * rate_scale / time_scale
    rps = np.random.default_rng(seed).poisson(expected * tick_s) / tick_s
    lo, hi, _ = window(AZURE_MIX_WINDOW_S)
    mix = []
    for a, z in zip(lo, hi, strict=True):
        counts = cum[:, z] - cum[:, a]
        total = counts.sum()
        mix.append({grid[k]: float(c / total) for k, c in enumerate(counts) if c > 0} if total else {grid[0]: 1.0})
    shares = {grid[k]: round(float((which == k).mean()), 3) for k in range(len(grid)) if (which == k).any()}
    description = (
        f"azure-conv: Azure LLM inference trace 2023, conversation (CC-BY-4.0), {len(times)} requests over "
        f"{span / 60:.0f} min, rate x{rate_scale:g} / time x{time_scale:g} (mean {rps.mean():.1f} req/s, peak tick "
        f"{rps.max():.0f}), {tick_s:g} s ticks, Poisson per tick around the trace's {AZURE_WINDOW_S:g} s rate; "
        f"token buckets {', '.join(f'{b[0]}/{b[1]}: {s:.1%}' for b, s in shares.items())}; seed {seed}"
    )
    return Trace("azure-conv", description, tick_s, rps, mix)
