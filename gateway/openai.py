"""Request bytes → the few fields routing needs, decoded once (msgspec); anything else stays in the bytes."""

from __future__ import annotations

from collections import deque
from typing import Any

import msgspec

from headway.gateway.errors import InvalidRequest


class Message(msgspec.Struct, frozen=True):
    role: str
    content: str | list[dict[str, Any]] | None = None


class CompletionFields(msgspec.Struct, frozen=True):
    model: str
    prompt: str | list[Any] | None = None
    stream: bool | None = False
    max_tokens: int | None = None


class ChatFields(msgspec.Struct, frozen=True):
    model: str
    messages: list[Message]
    stream: bool | None = False
    max_tokens: int | None = None


_COMPLETION = msgspec.json.Decoder(CompletionFields)
_CHAT = msgspec.json.Decoder(ChatFields)


def parse_routing_fields(body: bytes, *, chat: bool) -> CompletionFields | ChatFields:
    """The routing view of a request, or InvalidRequest naming what is wrong (never another exception)."""
    try:
        return _CHAT.decode(body) if chat else _COMPLETION.decode(body)
    except msgspec.ValidationError as e:
        raise InvalidRequest(f"invalid request: {e}", field_of(str(e))) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise InvalidRequest(f"request body is not valid JSON: {e}", "body") from None


def prompt_texts(fields: CompletionFields | ChatFields) -> tuple[str, str]:
    """(whole prompt text, first user message) for routers that key on characters; ("", "") for token ids."""
    if isinstance(fields, ChatFields):
        contents = [_text_of(m.content) for m in fields.messages]
        first_user = next((_text_of(m.content) for m in fields.messages if m.role == "user"), "")
        return "\n".join(contents), first_user
    prompt = fields.prompt
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    return (prompt, prompt) if isinstance(prompt, str) else ("", "")


def last_user_text(fields: CompletionFields | ChatFields) -> str:
    """What a model route classifies: the latest user message of a chat, a completion's prompt text."""
    if isinstance(fields, ChatFields):
        return next((_text_of(m.content) for m in reversed(fields.messages) if m.role == "user"), "")
    return prompt_texts(fields)[0]


def _text_of(content: str | list[dict[str, Any]] | None) -> str:
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content or ""


def field_of(message: str) -> str | None:
    """The top-level field msgspec's message names: `… - at `$.model`` or `missing required field `model``."""
    if "at `$." in message:
        path = message.rsplit("at `$.", 1)[1].rstrip("`")
        return path.split(".")[0].split("[")[0]
    if "missing required field `" in message:
        return message.rsplit("missing required field `", 1)[1].split("`")[0]
    return None


class _Usage(msgspec.Struct):
    completion_tokens: int


class _WithUsage(msgspec.Struct):
    usage: _Usage | None = None


_USAGE = msgspec.json.Decoder(_WithUsage)
_FRAME = b"data: {"
_MAX_BODY = 4 << 20
_TAIL = 16 << 10


class GeneratedTokens:
    """How many tokens the engine generated, read off the response bytes as they are relayed.

    A whole response carries `usage.completion_tokens`. A stream carries it only when the client asked
    (`stream_options.include_usage`), in its last frame; otherwise every frame is one token, as vLLM
    streams them (less the first chat frame, which holds only the assistant role). The relayed chunks
    are kept by reference, never copied: a stream's last few kilobytes, a whole body up to its cap.
    """

    def __init__(self, *, stream: bool, chat: bool) -> None:
        self.stream, self.chat = stream, chat
        self.frames = 0
        self._tail = b""
        """The stream's last len(_FRAME) - 1 bytes: a frame start split across chunks."""
        self._chunks: deque[bytes] = deque()
        self._kept = 0
        self._overflow = False

    def feed(self, chunk: bytes) -> None:
        if self.stream:
            # markers within the chunk, plus one that began in the tail (too short to hold a whole one)
            self.frames += chunk.count(_FRAME) + (self._tail + chunk[: len(_FRAME) - 1]).count(_FRAME)
            self._tail = (
                (self._tail + chunk)[1 - len(_FRAME) :] if len(chunk) < len(_FRAME) else chunk[1 - len(_FRAME) :]
            )
        elif self._overflow:
            return
        self._chunks.append(chunk)
        self._kept += len(chunk)
        if self.stream:
            while self._kept - len(self._chunks[0]) >= _TAIL:
                self._kept -= len(self._chunks.popleft())
        elif self._kept > _MAX_BODY:
            self._overflow = True
            self._chunks.clear()

    def total(self) -> int | None:
        """The count, or None when the response does not say (an oversized or undecodable body)."""
        kept = b"".join(self._chunks)
        if not self.stream:
            return None if self._overflow else self._usage(kept)
        last = kept.rfind(_FRAME)
        if last >= 0 and (n := self._usage(kept[last + len(b"data: ") :].split(b"\n", 1)[0])) is not None:
            return n
        return max(0, self.frames - (1 if self.chat else 0))

    @staticmethod
    def _usage(body: bytes) -> int | None:
        try:
            usage = _USAGE.decode(body).usage
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        return usage.completion_tokens if usage is not None else None
