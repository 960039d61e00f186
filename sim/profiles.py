"""GPU performance profiles: how long an engine step takes and how many tokens of KV cache fit.

The presets model a Llama-3-8B-class dense model (8.0 B parameters, bf16, 32 layers, 8 KV heads of
128 dims, so 128 KiB of KV per token) on one GPU, from public spec-sheet numbers:

| GPU      | HBM   | bandwidth | dense bf16 | weights read per decode step | prefill at 50% MFU |
|----------|-------|-----------|------------|------------------------------|--------------------|
| H100 SXM | 80 GB | 3.35 TB/s | 989 TFLOPS | 16 GB / 3.35 TB/s = 4.8 ms   | 2·8e9 / 495e12 = 32 µs/token  |
| A100 SXM | 80 GB | 2.04 TB/s | 312 TFLOPS | 16 GB / 2.04 TB/s = 7.8 ms   | 2·8e9 / 156e12 = 103 µs/token |
| L4       | 24 GB | 0.30 TB/s | 121 TFLOPS | 16 GB / 0.30 TB/s = 53 ms    | 2·8e9 / 60e12 = 264 µs/token  |

A step costs `step_overhead_s + prefill_tokens·prefill_s_per_token + decode_seqs·decode_s_per_seq
+ context_tokens·kv_read_s_per_token` where the last term is the KV cache each decoding sequence reads
(128 KiB per token over the GPU's bandwidth). KV capacity is `(HBM·0.9 − weights − 2 GB activations)`
over 128 KiB: H100/A100 ≈ 54 GB → 420k tokens; L4 ≈ 3.6 GB → 27k tokens. Tensor parallelism divides
step time by `tp**0.85` and multiplies KV capacity by `tp` (weights shard; communication costs the rest).
A custom profile is a YAML/JSON file with the same fields.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import BaseModel, Field


class GpuProfile(BaseModel, frozen=True, extra="forbid"):
    name: str
    step_overhead_s: float = Field(ge=0, description="Fixed cost of one engine step (weights read, launch).")
    prefill_s_per_token: float = Field(ge=0, description="Cost of each uncached prompt token in a step.")
    decode_s_per_seq: float = Field(ge=0, description="Extra cost of each decoding sequence in a step.")
    kv_read_s_per_token: float = Field(ge=0, description="Cost of reading one token of KV cache while decoding.")
    kv_cache_tokens: int = Field(ge=1, description="Tokens of KV cache that fit on one GPU.")
    cost_per_hour_usd: float = Field(0.0, ge=0, description="Indicative on-demand price of one GPU.")

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

PRESETS: dict[str, GpuProfile] = {
    "H100": GpuProfile(
        name="H100",
        step_overhead_s=0.0048,
        prefill_s_per_token=32e-6,
        decode_s_per_seq=40e-6,
        kv_read_s_per_token=_KV_BYTES_PER_TOKEN / 3.35e12,
        kv_cache_tokens=420_000,
        cost_per_hour_usd=4.0,
    ),
    "A100": GpuProfile(
        name="A100",
        step_overhead_s=0.0078,
        prefill_s_per_token=103e-6,
        decode_s_per_seq=60e-6,
        kv_read_s_per_token=_KV_BYTES_PER_TOKEN / 2.04e12,
        kv_cache_tokens=420_000,
        cost_per_hour_usd=2.5,
    ),
    "L4": GpuProfile(
        name="L4",
        step_overhead_s=0.053,
        prefill_s_per_token=264e-6,
        decode_s_per_seq=150e-6,
        kv_read_s_per_token=_KV_BYTES_PER_TOKEN / 0.30e12,
        kv_cache_tokens=27_000,
        cost_per_hour_usd=0.8,
    ),
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
