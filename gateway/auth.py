"""Optional API keys with per-key request and token limits.

Keys are configured by their SHA-256 (hex), never in clear: `{"keys": [{"name": "team-a", "sha256": "…",
"rpm": 600, "tpm": 200000}]}`. A request carries `Authorization: Bearer <key>`. Limits are fixed one-minute
windows counted in Redis when the gateway has one (so replicas share them), else in this process; if Redis
stops answering, counting falls back to this process rather than failing requests. Tokens counted are the
prompt's plus the completion tokens it may ask for (`max_tokens`, else 16).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path

import redis.asyncio as aioredis
import yaml
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from headway.gateway.errors import GatewayError, Overloaded


class Unauthorized(GatewayError):
    status, error_type = 401, "invalid_api_key"


class ApiKey(BaseModel, frozen=True, extra="forbid"):
    name: str = Field(min_length=1, max_length=63)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the key, lowercase hex.")
    rpm: int | None = Field(None, ge=1, description="Requests per minute (none: unlimited).")
    tpm: int | None = Field(None, ge=1, description="Prompt + requested completion tokens per minute.")


class ApiKeys(BaseModel, frozen=True, extra="forbid"):
    keys: list[ApiKey] = Field(min_length=1)

    @classmethod
    def load(cls, path: Path) -> ApiKeys:
        text = path.read_text()
        return cls.model_validate(json.loads(text) if path.suffix == ".json" else yaml.safe_load(text))


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class RateLimitedRequest(Overloaded):
    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Authenticator:
    def __init__(
        self, keys: ApiKeys, redis_url: str | None, *, clock: Callable[[], float] = time.time, prefix: str = "hw:rl"
    ) -> None:
        self.by_hash = {k.sha256: k for k in keys.keys}
        self.redis = (
            aioredis.from_url(redis_url, socket_timeout=0.25, socket_connect_timeout=0.25) if redis_url else None
        )
        self.clock, self.prefix = clock, prefix
        self._local: dict[str, int] = {}

    def authenticate(self, authorization: str | None) -> ApiKey:
        if not authorization or not authorization.startswith("Bearer "):
            raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
        digest = hash_key(authorization[len("Bearer ") :].strip())
        for known, key in self.by_hash.items():
            if hmac.compare_digest(known, digest):
                return key
        raise Unauthorized("invalid API key")

    async def charge(self, key: ApiKey, tokens: int) -> None:
        """Count one request and `tokens` against the key's current minute; 429 past a limit."""
        if key.rpm is None and key.tpm is None:
            return
        now = self.clock()
        window = int(now // 60)
        retry = max(1, 60 - int(now % 60))
        counts = await self._add(key.name, window, tokens)
        if key.rpm is not None and counts[0] > key.rpm:
            raise RateLimitedRequest(f"rate limit of {key.rpm} requests per minute reached for {key.name}", retry)
        if key.tpm is not None and counts[1] > key.tpm:
            raise RateLimitedRequest(f"rate limit of {key.tpm} tokens per minute reached for {key.name}", retry)

    async def _add(self, name: str, window: int, tokens: int) -> tuple[int, int]:
        rk, tk = f"{self.prefix}:{name}:{window}:r", f"{self.prefix}:{name}:{window}:t"
        if self.redis is not None:
            try:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.incr(rk).expire(rk, 120).incrby(tk, tokens).expire(tk, 120)
                    r, _, t, _ = await pipe.execute()
                return int(r), int(t)
            except (RedisError, OSError):
                pass  # fall back to counting here: a Redis outage must not fail requests
        for k in [k for k in self._local if not k.startswith(f"{self.prefix}:{name}:{window}:")]:
            if k.startswith(f"{self.prefix}:{name}:"):
                del self._local[k]
        self._local[rk] = self._local.get(rk, 0) + 1
        self._local[tk] = self._local.get(tk, 0) + tokens
        return self._local[rk], self._local[tk]
