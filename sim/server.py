"""The simulator's OpenAI-compatible HTTP API, byte-compatible with vLLM's where clients look.

Completions and chat completions (streaming or not), models, health, tokenize/detokenize, metrics,
LoRA load/unload (with --enable-lora) and prefix-cache reset. Response shapes, SSE framing, usage
fields and error envelopes follow vLLM 0.32 as captured from a real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from headway.kvcache.tokenizer import ChatTemplateError, ModelTokenizer
from headway.sim.config import SimConfig
from headway.sim.engine import Engine, EngineLimits, Request, output_plan
from headway.sim.errors import BadRequest, ModelNotFound, SimError
from headway.sim.kv_publisher import KvEventPublisher
from headway.sim.metrics import EngineMetrics
from headway.sim.profiles import GpuProfile

log = logging.getLogger(__name__)
FINGERPRINT = "vllm-0.32.0-headway-sim"
_JSON = "application/json"


def _dumps(obj: Any) -> str:
    """Compact JSON, as vLLM (pydantic) writes it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Parsed:
    model: str
    lora_name: str | None
    prompt: list[int]
    max_tokens: int
    stream: bool
    include_usage: bool
    ignore_eos: bool
    chat: bool


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"JSON decode error: {e}", "body") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object", "body")
    return body


def _int_field(body: dict[str, Any], name: str, *, minimum: int = 1) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadRequest(f"{name} must be an integer", name)
    if v < minimum:
        raise BadRequest(f"{name} must be at least {minimum}, got {v}", name)
    return v


def _bool_field(body: dict[str, Any], name: str) -> bool:
    v = body.get(name, False)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise BadRequest(f"{name} must be a boolean", name)
    return v


class SimServer:
    def __init__(self, cfg: SimConfig, profile: GpuProfile) -> None:
        self.cfg = cfg
        self.tokenizer = ModelTokenizer(cfg.model_dir())
        prof = profile.scaled(cfg.tensor_parallel_size)
        num_blocks = cfg.kv_cache_blocks or max(1, prof.kv_cache_tokens // cfg.block_size)
        self.loras: dict[str, str] = dict(cfg.lora_modules)
        self.metrics = EngineMetrics(
            cfg.names[0],
            cfg.max_model_len,
            cfg.cache_config_labels(num_blocks),
            lora={"max_lora": str(cfg.max_loras)} if cfg.enable_lora else None,
        )
        self.publisher: KvEventPublisher | None = None
        if cfg.kv_events.active:
            ev = cfg.kv_events
            self.publisher = KvEventPublisher(
                ev.endpoint,
                ev.topic,
                replay_endpoint=ev.replay_endpoint,
                buffer_steps=ev.buffer_steps,
                hwm=ev.hwm,
                legacy_format=cfg.kv_events_legacy_format,
            )
        limits = EngineLimits(
            block_size=cfg.block_size,
            num_blocks=num_blocks,
            max_num_seqs=cfg.max_num_seqs,
            max_num_batched_tokens=max(cfg.max_num_batched_tokens, cfg.block_size),
            max_model_len=cfg.max_model_len,
            enable_prefix_caching=cfg.enable_prefix_caching,
            time_scale=cfg.time_scale,
            hash_algo=cfg.prefix_caching_hash_algo,
        )
        self.engine = Engine(
            limits,
            prof,
            self.tokenizer.sample_ids,
            eos_token_id=self.tokenizer.eos_token_id,
            observer=self.metrics,
            emit_events=self.publisher.publish if self.publisher else None,
        )
        self._ids = itertools.count()
        self.created = int(time.time())

    # ----- app wiring
    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024**2, middlewares=[self._errors])
        r = app.router
        r.add_post("/v1/completions", self.completions)
        r.add_post("/v1/chat/completions", self.chat_completions)
        r.add_get("/v1/models", self.models)
        r.add_get("/health", self.health)
        r.add_get("/ping", self.health)
        r.add_get("/version", self.version)
        r.add_get("/metrics", self.metrics_endpoint)
        r.add_post("/tokenize", self.tokenize)
        r.add_post("/detokenize", self.detokenize)
        r.add_post("/reset_prefix_cache", self.reset_prefix_cache)
        if self.cfg.enable_lora:
            r.add_post("/v1/load_lora_adapter", self.load_lora)
            r.add_post("/v1/unload_lora_adapter", self.unload_lora)
        app.cleanup_ctx.append(self._background)
        return app

    async def _background(self, _app: web.Application) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(self.engine.run(), name="engine")]
        if self.publisher is not None:
            tasks.append(asyncio.create_task(self.publisher.serve_replay(), name="kv-replay"))
        yield
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self.publisher is not None:
            self.publisher.close()

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except SimError as e:
            return web.Response(status=e.status, body=e.body(), content_type=_JSON)
        except web.HTTPRequestEntityTooLarge:
            err = BadRequest("request body too large", "body")
            return web.Response(status=413, body=err.body(), content_type=_JSON)

    # ----- parsing
    def _resolve_model(self, body: dict[str, Any]) -> tuple[str, str | None]:
        model = body.get("model")
        if model is None:
            return self.cfg.names[0], None
        if not isinstance(model, str):
            raise BadRequest("model must be a string", "model")
        if model in self.cfg.names:
            return model, None
        if model in self.loras:
            return model, model
        aliases = ", ".join([*self.cfg.names, *self.loras])
        raise ModelNotFound(f"The model `{model}` does not exist. Valid aliases: {aliases}.", "model")

    def _parse(self, body: dict[str, Any], *, chat: bool) -> Parsed:
        model, lora = self._resolve_model(body)
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise BadRequest("messages must be a non-empty list", "messages")
            if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
                raise BadRequest("each message must be an object with a string role", "messages")
            try:
                prompt = self.tokenizer.encode_chat(messages)
            except ChatTemplateError as e:
                raise BadRequest(str(e), "messages") from None
        else:
            prompt = self._parse_prompt(body.get("prompt"))
        n = _int_field(body, "n")
        if n not in (None, 1):
            raise BadRequest("the simulator serves n=1 only", "n")
        requested = _int_field(body, "max_completion_tokens") if chat else None
        requested = requested or _int_field(body, "max_tokens")
        if requested is not None and requested > self.cfg.max_model_len:
            raise BadRequest(
                f"max_tokens={requested} cannot be greater than max_model_len={self.cfg.max_model_len}."
                f" Please request fewer output tokens.",
                "max_tokens",
            )
        if len(prompt) > self.cfg.max_model_len or (len(prompt) == self.cfg.max_model_len and requested):
            raise BadRequest(
                f"This model's maximum context length is {self.cfg.max_model_len} tokens. However, your prompt "
                f"contains at least {min(len(prompt), self.cfg.max_model_len + 1)} input tokens, which exceeds this "
                f"limit even without any output tokens. Please reduce the length of the input prompt.",
                "input_tokens",
            )
        room = self.cfg.max_model_len - len(prompt)
        if requested is not None and requested > room:
            raise BadRequest(
                f"This model's maximum context length is {self.cfg.max_model_len} tokens. However, you requested "
                f"{requested} output tokens and your prompt contains {len(prompt)} input tokens, for a total of "
                f"{requested + len(prompt)} tokens. Please reduce the length of the input prompt or the number of "
                f"requested output tokens.",
                "max_tokens",
            )
        max_tokens = requested if requested is not None else (room if chat else min(16, room))
        stream = _bool_field(body, "stream")
        opts = body.get("stream_options")
        if opts is not None and not isinstance(opts, dict):
            raise BadRequest("stream_options must be an object", "stream_options")
        include_usage = bool((opts or {}).get("include_usage"))
        return Parsed(model, lora, prompt, max_tokens, stream, include_usage, _bool_field(body, "ignore_eos"), chat)

    def _parse_prompt(self, prompt: Any) -> list[int]:
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]
        if isinstance(prompt, str) and prompt:
            return self.tokenizer.encode(prompt)
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            if any(t < 0 or t >= self.tokenizer.vocab_size for t in prompt):
                raise BadRequest(f"token ids must be in [0, {self.tokenizer.vocab_size})", "prompt")
            return list(prompt)
        if prompt is None or prompt in ("", []):
            raise BadRequest("Either prompt or prompt_embeds must be provided and non-empty.", "prompt")
        raise BadRequest("prompt must be a string, a list of token ids, or a list holding one of those", "prompt")

    def _new_request(self, p: Parsed) -> Request:
        rng, stop_at = output_plan(p.prompt, self.cfg.seed, p.max_tokens, p.ignore_eos, self.cfg.mean_output_tokens)
        prefix = "chatcmpl-" if p.chat else "cmpl-"
        return Request(f"{prefix}{secrets.token_hex(8)}", p.prompt, p.max_tokens, stop_at, p.lora_name, rng)

    def _usage(self, req: Request) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": len(req.prompt),
            "total_tokens": len(req.prompt) + len(req.output),
            "completion_tokens": len(req.output),
        }
        usage["prompt_tokens_details"] = (
            {"cached_tokens": req.cached_tokens} if self.cfg.enable_prompt_tokens_details else None
        )
        return usage

    def _text(self, tokens: list[int]) -> str:
        piece = self.tokenizer.piece
        return "".join(piece(t) for t in tokens if t != self.tokenizer.eos_token_id)

    # ----- handlers
    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def _generate(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        p = self._parse(_json_body(await request.read()), chat=chat)
        if p.lora_name:
            self.metrics.set_lora([p.lora_name], [])
        req = self._new_request(p)
        self.engine.submit(req)
        try:
            if p.stream:
                return await self._stream(request, req, p)
            tokens: list[int] = []
            while (item := await req.queue.get()) is not None:
                tokens.append(item[0])
            if req.finish_reason == "error":
                raise SimError("the request could not be scheduled: it needs more KV blocks than the engine has")
            return web.Response(body=_dumps(self._full_body(req, p, tokens)).encode(), content_type=_JSON)
        except (asyncio.CancelledError, ConnectionResetError):
            self.engine.abort(req)
            raise

    def _full_body(self, req: Request, p: Parsed, tokens: list[int]) -> dict[str, Any]:
        text = self._text(tokens)
        reason = req.finish_reason
        if p.chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "refusal": None,
                    "annotations": None,
                    "audio": None,
                    "function_call": None,
                    "tool_calls": [],
                    "reasoning": None,
                },
                "logprobs": None,
                "finish_reason": reason,
                "stop_reason": None,
                "token_ids": None,
            }
            obj = "chat.completion"
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": reason,
                "stop_reason": None,
                "token_ids": None,
                "prompt_logprobs": None,
                "prompt_token_ids": None,
            }
            obj = "text_completion"
        return {
            "id": req.request_id,
            "object": obj,
            "created": int(time.time()),
            "model": p.model,
            "choices": [choice],
            "service_tier": None,
            "system_fingerprint": FINGERPRINT,
            "usage": self._usage(req),
            "prompt_logprobs": None,
            "prompt_token_ids": None,
            "kv_transfer_params": None,
        }

    async def _stream(self, request: web.Request, req: Request, p: Parsed) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        created = int(time.time())
        obj = "chat.completion.chunk" if p.chat else "text_completion"
        head = _dumps({"id": req.request_id, "object": obj, "created": created, "model": p.model})[:-1]
        eos = self.tokenizer.eos_token_id
        role_sent = not p.chat
        while (item := await req.queue.get()) is not None:
            if not role_sent:
                # vLLM sends the role chunk in its first pass over the engine's outputs, i.e. with the first
                # token (after queueing and prefill), never before: a client's first frame is its TTFT
                first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None}
                first["finish_reason"] = None
                await resp.write(f'data: {head},"choices":[{_dumps(first)}]}}\n\n'.encode())
                role_sent = True
            t, done = item
            text = "" if t == eos else self.tokenizer.piece(t)
            if p.chat:
                choice = {
                    "index": 0,
                    "delta": {"content": text},
                    "logprobs": None,
                    "finish_reason": done,
                    "token_ids": None,
                }
            else:
                choice = {
                    "index": 0,
                    "text": text,
                    "logprobs": None,
                    "finish_reason": done,
                    "stop_reason": None,
                    "prompt_token_ids": None,
                    "token_ids": None,
                }
            await resp.write(f'data: {head},"choices":[{_dumps(choice)}]}}\n\n'.encode())
        if req.finish_reason == "error":
            err = SimError("the request could not be scheduled: it needs more KV blocks than the engine has")
            await resp.write(b"data: " + err.body() + b"\n\n")
        elif p.include_usage:
            usage = _dumps(self._usage(req))
            await resp.write(
                f'data: {head},"choices":[],"usage":{usage},"system_fingerprint":"{FINGERPRINT}"}}\n\n'.encode()
            )
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def models(self, _request: web.Request) -> web.Response:
        def card(name: str, root: str, parent: str | None) -> dict[str, Any]:
            return {
                "id": name,
                "object": "model",
                "created": self.created,
                "owned_by": "vllm",
                "root": root,
                "parent": parent,
                "max_model_len": self.cfg.max_model_len,
                "permission": [],
            }

        data = [card(n, self.cfg.model, None) for n in self.cfg.names]
        data += [card(name, path, self.cfg.names[0]) for name, path in self.loras.items()]
        return web.json_response(dumps=_dumps, data={"object": "list", "data": data})

    async def health(self, _request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def version(self, _request: web.Request) -> web.Response:
        return web.json_response(dumps=_dumps, data={"version": "0.32.0"})

    async def metrics_endpoint(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def tokenize(self, request: web.Request) -> web.Response:
        body = _json_body(await request.read())
        self._resolve_model(body)
        if "messages" in body:
            try:
                tokens = self.tokenizer.encode_chat(
                    body["messages"], add_generation_prompt=body.get("add_generation_prompt", True)
                )
            except (ChatTemplateError, TypeError, AttributeError) as e:
                raise BadRequest(str(e), "messages") from None
        else:
            prompt = body.get("prompt")
            if not isinstance(prompt, str):
                raise BadRequest("prompt must be a string", "prompt")
            tokens = self.tokenizer.encode(prompt, add_special_tokens=bool(body.get("add_special_tokens", True)))
        return web.json_response(
            dumps=_dumps,
            data={"count": len(tokens), "max_model_len": self.cfg.max_model_len, "tokens": tokens, "token_strs": None},
        )

    async def detokenize(self, request: web.Request) -> web.Response:
        body = _json_body(await request.read())
        self._resolve_model(body)
        tokens = body.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise BadRequest("tokens must be a list of token ids", "tokens")
        return web.json_response(dumps=_dumps, data={"prompt": self._text(tokens)})

    async def reset_prefix_cache(self, _request: web.Request) -> web.Response:
        if not self.engine.pool.reset():
            raise BadRequest("cannot reset the prefix cache while requests are running")
        if self.publisher is not None:
            self.engine.flush_events()
        return web.Response(status=200)

    async def load_lora(self, request: web.Request) -> web.Response:
        body = _json_body(await request.read())
        name, path = body.get("lora_name"), body.get("lora_path")
        if not isinstance(name, str) or not name or not isinstance(path, str) or not path:
            raise BadRequest("lora_name and lora_path are required strings", "lora_name")
        if name in self.loras:
            raise BadRequest(f"The lora adapter '{name}' has already been loaded.", "lora_name")
        if len(self.loras) >= self.cfg.max_loras:
            raise BadRequest(f"at most {self.cfg.max_loras} LoRA adapters can be loaded (--max-loras)", "lora_name")
        self.loras[name] = path
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def unload_lora(self, request: web.Request) -> web.Response:
        body = _json_body(await request.read())
        name = body.get("lora_name")
        if name not in self.loras:
            raise ModelNotFound(f"The lora adapter '{name}' cannot be found.", "lora_name")
        del self.loras[name]
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")
