"""GPU performance profiles: how long an engine step takes and how many tokens of KV cache fit.

The presets model a Llama-3-8B-class dense model (8.0 B parameters, bf16, 32 layers, 8 KV heads of
128 dims, so 128 KiB of KV per token) on one GPU served by vLLM with its defaults for that GPU. A step costs

    step_overhead_s + prefill_tokens·prefill_s_per_token + decode_seqs·decode_s_per_seq
                    + context_tokens·kv_read_s_per_token

Calibrated (2026-12) against the decode step times and prefill throughputs that Vidur's measured per-operator
profiles give for H100 and A100 (microsoft/vidur, MIT; extended to the other GPUs by bandwidth and compute
ratios), then against the measured serving runs in `headway.sim.calibration`, which its test replays:

| GPU     | step_overhead | prefill     | KV read per token       | per decoding seq | KV tokens | chunk, seqs |
|---------|---------------|-------------|-------------------------|------------------|-----------|-------------|
| H100    | 6.3 ms        | 23.5 µs/tok | 128 KiB / (3.35 TB/s·0.8) | 35 µs          | 412k      | 8192, 1024  |
| A100    | 10.5 ms       | 76 µs/tok   | 128 KiB / (2.04 TB/s·0.8) | 69 µs          | 412k      | 2048, 256   |
| A100-40 | 13.8 ms       | 76 µs/tok   | 128 KiB / (1.555 TB/s·0.8)| 69 µs          | 137k      | 2048, 256   |
| L40S    | 23.3 ms       | 70 µs/tok   | 128 KiB / (864 GB/s·0.8)  | 74 µs          | 192k      | 2048, 256   |
| A10G    | 30 ms         | 323 µs/tok  | 128 KiB / (600 GB/s·0.8)  | 298 µs         | 27k       | 2048, 256   |
| L4      | 65 ms         | 227 µs/tok  | 128 KiB / (300 GB/s·0.8)  | 231 µs         | 27k       | 2048, 256   |

The overhead is mostly the weights read once per step (16 GB over the bandwidth at 70-80% efficiency); the
per-sequence and KV terms give the slope of step time with batch size (Vidur: H100 9.7 → 28.7 ms from 32 to
256 sequences at 1024 tokens of context). KV capacity is `(HBM·0.9 − 16 GB weights − 2 GB activations)` over
128 KiB. "chunk, seqs" are vLLM's API-server defaults of `max_num_batched_tokens` and `max_num_seqs`: 8192
and 1024 on GPUs of 70 GiB or more except A100s, else 2048 and 256 (vllm/engine/arg_utils.py). Prices are the
default price set's (`headway.sim.prices`). Prefill cost is linear in tokens (attention's quadratic share is
small below 8k tokens for an 8B model); tensor parallelism divides step time by `tp**0.85` and multiplies KV
capacity by `tp`. A custom profile is a YAML/JSON file with the same fields.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import BaseModel, Field

from headway.sim.prices import DEFAULT_PRICE_SET, PRICE_SETS


class GpuProfile(BaseModel, frozen=True, extra="forbid"):
    name: str
    step_overhead_s: float = Field(ge=0, description="Fixed cost of one engine step (weights read, launch).")
    prefill_s_per_token: float = Field(ge=0, description="Cost of each uncached prompt token in a step.")
    decode_s_per_seq: float = Field(ge=0, description="Extra cost of each decoding sequence in a step.")
    kv_read_s_per_token: float = Field(ge=0, description="Cost of reading one token of KV cache while decoding.")
    kv_cache_tokens: int = Field(ge=1, description="Tokens of KV cache that fit on one GPU.")
    cost_per_hour_usd: float = Field(0.0, ge=0, description="Indicative on-demand price of one GPU.")
    max_num_batched_tokens: int = Field(2048, ge=1, description="vLLM's default token budget per step on this GPU.")
    max_num_seqs: int = Field(256, ge=1, description="vLLM's default of running sequences on this GPU.")

    def scaled(self, tensor_parallel: int) -> GpuProfile:
        speedup = tensor_parallel**0.85
        return self.model_copy(
            update={
                "step_overhead_s": self.step_overhead_s / speedup,
                "prefill_s_per_token": self.prefill_s_per_token / speedup,
                "decode_s_per_seq": self.decode_s_per_seq / speedup,
                "kv_read_s_per_token": self.kv_read_s_per_token / speedup,
                "kv_cache_tokens": self.kv_cache_tokens * tensor_parallel,
            }
        )


_KV_BYTES_PER_TOKEN = 128 * 1024
_BANDWIDTH_EFFICIENCY = 0.8


def _preset(
    name: str,
    overhead_ms: float,
    prefill_us: float,
    bandwidth_tb_s: float,
    per_seq_us: float,
    kv_tokens: int,
    large: bool = False,
) -> GpuProfile:
    return GpuProfile(
        name=name,
        step_overhead_s=overhead_ms / 1e3,
        prefill_s_per_token=prefill_us / 1e6,
        decode_s_per_seq=per_seq_us / 1e6,
        kv_read_s_per_token=_KV_BYTES_PER_TOKEN / (bandwidth_tb_s * 1e12 * _BANDWIDTH_EFFICIENCY),
        kv_cache_tokens=kv_tokens,
        cost_per_hour_usd=PRICE_SETS[DEFAULT_PRICE_SET].price(name),
        max_num_batched_tokens=8192 if large else 2048,
        max_num_seqs=1024 if large else 256,
    )


PRESETS: dict[str, GpuProfile] = {
    p.name: p
    for p in (
        _preset("H100", 6.3, 23.5, 3.35, 35, 412_000, large=True),
        _preset("A100", 10.5, 76, 2.04, 69, 412_000),
        _preset("A100-40", 13.8, 76, 1.555, 69, 137_000),
        _preset("L40S", 23.3, 70, 0.864, 74, 192_000),
        _preset("A10G", 30.0, 323, 0.600, 298, 27_000),
        _preset("L4", 65.0, 227, 0.300, 231, 27_000),
    )
}


class ProfileError(ValueError):
    """The --gpu-profile value is neither a preset nor a readable profile file."""


def load_profile(spec: str) -> GpuProfile:
    """A preset name (case-insensitive) or the path of a YAML/JSON profile file."""
    preset = PRESETS.get(spec.upper())
    if preset is not None:
        return preset
    path = Path(spec)
    if not path.is_file():
        raise ProfileError(f"--gpu-profile {spec!r}: not one of {', '.join(PRESETS)} and not a file")
    try:
        data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
        return GpuProfile.model_validate({"name": path.stem, **data})
    except (ValueError, yaml.YAMLError) as e:
        raise ProfileError(f"--gpu-profile {spec}: {e}".splitlines()[0]) from None
