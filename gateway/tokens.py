"""A request's exact prompt tokens, for routing: the model's tokenizer and chat template when its files
are here, else the engine's own /tokenize. Never approximated: prefix keys must match the engines'."""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from headway.gateway.errors import InvalidRequest
from headway.gateway.openai import ChatFields, CompletionFields
from headway.gateway.pools import PoolRoute
from headway.kvcache.tokenizer import ChatTemplateError


class PromptTokens:
    def __init__(self, *, stale_after_s: float, tokenize_s: float) -> None:
        self.stale_after_s, self.tokenize_s = stale_after_s, tokenize_s
        self.session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=tokenize_s)

    async def of(self, route: PoolRoute, fields: CompletionFields | ChatFields) -> list[int]:
        """The tokens; [] for a batch of prompts (routed without prefix information, validated by the
        engine); InvalidRequest for a prompt of the wrong shape or messages the template refuses."""
        if isinstance(fields, ChatFields):
            messages = [{"role": m.role, "content": m.content} for m in fields.messages]
            if not route.tokenizer.exact:
                return await self._from_engine(route, {"model": route.model, "messages": messages})
            try:
                return route.tokenizer.encode_chat(messages)
            except ChatTemplateError as e:
                raise InvalidRequest(str(e), "messages") from None
        prompt = fields.prompt
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]
        if isinstance(prompt, str):
            if not route.tokenizer.exact:
                return await self._from_engine(route, {"model": route.model, "prompt": prompt})
            return route.tokenizer.encode(prompt)
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            return list(prompt)
        if prompt is None:
            raise InvalidRequest("prompt is required", "prompt")
        if isinstance(prompt, list) and all(isinstance(p, (str, list)) for p in prompt):
            return []
        raise InvalidRequest("prompt must be a string, token ids, or a list of those", "prompt")

    async def _from_engine(self, route: PoolRoute, body: dict[str, Any]) -> list[int]:
        """Ask up to two fresh engines, each within `tokenize_s`; no prefix routing if none answers."""
        assert self.session is not None
        now = time.monotonic()
        for ep in [e for e in route.endpoints if e.routable(now, self.stale_after_s)][:2]:
            try:
                async with self.session.post(f"{ep.url}/tokenize", json=body, timeout=self._timeout) as r:
                    if r.status == 200:
                        return list((await r.json())["tokens"])
                    if r.status == 400:
                        raise InvalidRequest((await r.json()).get("error", {}).get("message", "invalid request"))
            except (aiohttp.ClientError, TimeoutError, KeyError, ValueError):
                continue
        return []
