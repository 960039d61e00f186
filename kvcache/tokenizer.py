"""The model's tokenizer and chat template, as vLLM applies them.

Completions encode the prompt with the tokenizer's special-token post-processing; chat renders the
template (`add_generation_prompt=True`) and encodes the text without adding special tokens, as
`apply_chat_template` does. A model without a tokenizer.json (a hub id, offline) falls back to one token
per UTF-8 byte, announced with a warning: exact counts, no vocabulary.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

log = logging.getLogger(__name__)

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


class ChatTemplateError(ValueError):
    """The messages could not be rendered with the model's chat template."""


def _content_text(content: Any) -> str:
    """OpenAI content is a string or a list of parts; text parts are joined as vLLM does."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise ChatTemplateError("message content must be a string or a list of content parts")


class ModelTokenizer:
    def __init__(self, directory: Path | None, *, quiet: bool = False) -> None:
        self.tokenizer: Tokenizer | None = None
        config: dict[str, Any] = {}
        if directory is not None and (directory / "tokenizer.json").is_file():
            self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
            cfg_path = directory / "tokenizer_config.json"
            if cfg_path.is_file():
                config = json.loads(cfg_path.read_text())
        elif not quiet:
            log.warning("no tokenizer.json in %s; counting one token per UTF-8 byte", directory)
        self.bos_token = _token_text(config.get("bos_token"))
        self.eos_token = _token_text(config.get("eos_token"))
        template = config.get("chat_template") or DEFAULT_CHAT_TEMPLATE
        if isinstance(template, list):  # named templates: use "default"
            template = next((t["template"] for t in template if t.get("name") == "default"), template[0]["template"])
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        self._template = env.from_string(template)
        self.eos_token_id = self.token_id(self.eos_token) if self.eos_token else None
        self._pieces: dict[int, str] = {}
        self.vocab_size = self.tokenizer.get_vocab_size() if self.tokenizer else 256
        if self.tokenizer is None:
            self.sample_ids = list(range(32, 127))
        else:
            added = {i for i, t in self.tokenizer.get_added_tokens_decoder().items() if t.special}
            vocab = self.tokenizer.get_vocab(with_added_tokens=True)
            self.sample_ids = sorted(
                i for t, i in vocab.items() if i not in added and not (t.startswith("<|") and t.endswith("|>"))
            )

    @property
    def exact(self) -> bool:
        """True when this is the model's own tokenizer (not the byte fallback)."""
        return self.tokenizer is not None

    def token_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token) if self.tokenizer else None

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        if self.tokenizer is None:
            return list(text.encode())
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def render_chat(self, messages: Sequence[dict[str, Any]], *, add_generation_prompt: bool = True) -> str:
        msgs = [{**m, "content": _content_text(m.get("content"))} for m in messages]
        try:
            return self._template.render(
                messages=msgs,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token or "",
                eos_token=self.eos_token or "",
            )
        except ChatTemplateError:
            raise
        except Exception as e:  # a template error is the request's fault, not the server's
            raise ChatTemplateError(f"chat template failed: {e}") from None

    def encode_chat(self, messages: Sequence[dict[str, Any]], *, add_generation_prompt: bool = True) -> list[int]:
        return self.encode(
            self.render_chat(messages, add_generation_prompt=add_generation_prompt), add_special_tokens=False
        )

    def piece(self, token_id: int) -> str:
        """Text of one output token (cached; a lone byte of a multi-byte character decodes to U+FFFD)."""
        text = self._pieces.get(token_id)
        if text is None:
            if self.tokenizer is None:
                text = bytes([token_id % 256]).decode(errors="replace")
            else:
                text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            self._pieces[token_id] = text
        return text


def _token_text(tok: Any) -> str | None:
    if isinstance(tok, dict):
        return tok.get("content")
    return tok


def _raise(message: str) -> None:
    raise ChatTemplateError(message)
