"""The simulator's settings: vLLM's server flags it honours plus its own, each with one default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from headway.sim.blocks import HashAlgo
from headway.sim.profiles import PRESETS


class KvEventsConfig(BaseModel, frozen=True, extra="ignore"):
    """vLLM's `--kv-events-config` JSON, same field names and defaults."""

    enable_kv_cache_events: bool = False
    publisher: str | None = None
    endpoint: str = "tcp://*:5557"
    replay_endpoint: str | None = None
    buffer_steps: int = Field(10_000, ge=1)
    hwm: int = Field(100_000, ge=1)
    max_queue_size: int = Field(100_000, ge=1)
    topic: str = ""

    @property
    def active(self) -> bool:
        return self.enable_kv_cache_events and (self.publisher or "zmq") == "zmq"


class SimConfig(BaseModel, frozen=True, extra="forbid"):
    model: str = Field(description="Model id or local directory; its tokenizer.json is used when present.")
    served_model_names: tuple[str, ...] = Field(default=(), description="Names the API accepts (default: model).")
    tokenizer: Path | None = Field(None, description="Directory with tokenizer.json (default: the model dir).")
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=1, le=65535)
    max_model_len: int = Field(4096, ge=16, description="Longest prompt + output, in tokens.")
    block_size: int = Field(16, ge=1, le=4096, description="Tokens per KV block (vLLM's CPU backend uses 128).")
    enable_prefix_caching: bool = True
    prefix_caching_hash_algo: HashAlgo = Field("sha256", description="Block-key hash (sha256_cbor: vLLM's exactly).")
    max_num_seqs: int = Field(256, ge=1, description="Most requests running at once.")
    max_num_batched_tokens: int = Field(8192, ge=1, description="Token budget of one engine step.")
    tensor_parallel_size: int = Field(1, ge=1, le=64)
    enable_lora: bool = False
    max_loras: int = Field(1, ge=1)
    lora_modules: tuple[tuple[str, str], ...] = Field(default=(), description="Adapters loaded at start.")
    enable_prompt_tokens_details: bool = False
    kv_events: KvEventsConfig = Field(default_factory=KvEventsConfig)
    gpu_profile: str = Field(
        "H100", description=f"{', '.join(PRESETS)}, or a profile file (YAML/JSON) with the same fields."
    )
    kv_cache_blocks: int | None = Field(None, ge=1, description="KV blocks (default: from the GPU profile).")
    time_scale: float = Field(1.0, gt=0, description="Run this many times faster than real time.")
    seed: int = Field(0, description="Seed of the sampled output tokens.")
    mean_output_tokens: float = Field(256.0, ge=1, description="Mean output length when ignore_eos is off.")
    kv_events_legacy_format: bool = Field(False, description="Emit pre-v0.26 array-encoded events.")

    @property
    def names(self) -> tuple[str, ...]:
        return self.served_model_names or (self.model,)

    def model_dir(self) -> Path | None:
        for candidate in (self.tokenizer, Path(self.model)):
            if candidate is not None and candidate.is_dir():
                return candidate
        return None

    def cache_config_labels(self, num_blocks: int) -> dict[str, Any]:
        return {
            "block_size": str(self.block_size),
            "num_gpu_blocks": str(num_blocks),
            "enable_prefix_caching": str(self.enable_prefix_caching),
            "cache_dtype": "auto",
            "gpu_memory_utilization": "0.9",
            "prefix_caching_hash_algo": self.prefix_caching_hash_algo,
            "kv_cache_size_tokens": str(num_blocks * self.block_size),
            "num_gpu_blocks_override": str(self.kv_cache_blocks) if self.kv_cache_blocks else "None",
        }
