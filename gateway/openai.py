"""Request bytes → the few fields routing needs, decoded once (msgspec); anything else stays in the bytes."""

from __future__ import annotations

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
        raise InvalidRequest(f"invalid request: {e}", _field_of(str(e))) from None
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


def _text_of(content: str | list[dict[str, Any]] | None) -> str:
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content or ""


def _field_of(message: str) -> str | None:
    """The top-level field msgspec's message names: `… - at `$.model`` or `missing required field `model``."""
    if "at `$." in message:
        path = message.rsplit("at `$.", 1)[1].rstrip("`")
        return path.split(".")[0].split("[")[0]
    if "missing required field `" in message:
        return message.rsplit("missing required field `", 1)[1].split("`")[0]
    return None
