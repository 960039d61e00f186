"""Settings of the standalone KV-cache indexer (`headway kvcache`): each default written once."""

from __future__ import annotations

from pydantic import BaseModel, Field


class KvCacheConfig(BaseModel, frozen=True, extra="forbid"):
    bind: str = Field(description="ZMQ endpoint to bind for the engines' KV events, e.g. tcp://127.0.0.1:5557.")
    redis_url: str = Field(description="Redis the gateways read, e.g. redis://127.0.0.1:6379/0.")
    host: str = Field("127.0.0.1", description="Address of /metrics and /healthz.")
    port: int = Field(9465, ge=1, le=65535, description="Port of /metrics and /healthz.")
    max_keys: int = Field(2_000_000, ge=1, description="Block keys kept in memory (LRU).")
    kv_replay_port: int | None = Field(None, ge=1, le=65535, description="Engines' KV-event replay port, to fill gaps.")
