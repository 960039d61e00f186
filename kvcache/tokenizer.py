"""The model's tokenizer and chat template, as vLLM applies them.

Completions encode the prompt with the tokenizer's special-token post-processing; chat renders the
template (`add_generation_prompt=True`) and encodes the text without adding special tokens, as
`apply_chat_template` does. A model without a tokenizer.json (a hub id, offline) falls back to one token
per UTF-8 byte, announced with a warning: exact counts, no vocabulary.

Chat prompts repeat themselves: the same system prompt and the same earlier turns arrive with every request.
`encode_chat` therefore encodes the rendered text piece by piece, the pieces being the text between added
tokens, and keeps each piece's ids in a content-addressed LRU, so only text not seen before is tokenized.
The ids are always exactly those of encoding the whole rendered text; where that cannot be guaranteed the
whole text is encoded, and `segment_path_blocker` says why.

Why the pieces give the same ids as the whole text (tokenizers 0.23: `AddedVocabulary::extract_and_normalize`
and `TokenizerImpl::encode_single_sequence`):

1. `encode` first cuts the text at every match of the added tokens that have `normalized: false`, scanning
   leftmost-longest without overlaps; each match becomes that token's id. `_AddedTokenSplitter` finds the
   same matches. With no `lstrip`, `rstrip` or `single_word` flag a match is exactly the token's text and
   does not depend on its neighbours; with `encode_special_tokens` off, special and other added tokens are
   cut alike. An added token with `normalized: true` is matched only after normalization, so any such
   token turns the piece path off.
2. Each piece between matches is then normalized, pre-tokenized and run through the model on its own, and
   the ids are concatenated in text order.
3. Encoding a piece by itself takes the same path: it holds no added token (one wholly inside it would have
   been the leftmost match), so it stays one piece. Every normalizer, pre-tokenizer and model of the
   library works on a piece's own text alone (a `Prepend` normalizer or a ByteLevel prefix space is applied
   to every piece), except Metaspace with `prepend_scheme: "first"`, which prepends only to the piece at
   offset 0 of the whole text. That scheme, BPE dropout (random merges), a component type not listed here,
   truncation, padding, or a post-processor that could change ids with `add_special_tokens=False` each
   turn the piece path off. The components are read from the tokenizer's own serialization, so what is
   checked is what the library loaded.

Hence encode(text) == the ids of the added tokens and of encode(p) for the pieces p between them, in order;
encode(p) depends only on p's text, so it can be cached by content. The tokenizer must not be reconfigured
after `ModelTokenizer` checked it (it never is here).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

log = logging.getLogger(__name__)

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


DEFAULT_SEGMENT_CACHE_BYTES = 32 * 2**20
"""Memory the piece cache of one tokenizer may hold: about 120 system prompts of 6k tokens each."""

# Components whose output for a piece depends only on that piece's text (see the module docstring); every
# type the library defines is listed, so an unknown type is a new one and is not trusted until reviewed.
_PIECEWISE_NORMALIZERS = frozenset(
    {
        "BertNormalizer",
        "ByteLevel",
        "Lowercase",
        "NFC",
        "NFD",
        "NFKC",
        "NFKD",
        "Nmt",
        "Precompiled",
        "Prepend",  # prepends to every piece, so a piece alone gets the same prefix
        "Replace",
        "Strip",
        "StripAccents",
    }
)
_PIECEWISE_PRE_TOKENIZERS = frozenset(
    {
        "BertPreTokenizer",
        "ByteLevel",  # add_prefix_space prepends to every piece that lacks a space
        "CharDelimiterSplit",
        "Digits",
        "FixedLength",
        "Metaspace",  # only with prepend_scheme "always" or "never", checked below
        "Punctuation",
        "Split",
        "UnicodeScripts",
        "Whitespace",
        "WhitespaceSplit",
    }
)
_PIECEWISE_MODELS = frozenset({"BPE", "Unigram", "WordLevel", "WordPiece"})
# With add_special_tokens=False these change offsets and type ids only.
_ID_PRESERVING_PROCESSORS = frozenset({"BertProcessing", "ByteLevel", "RobertaProcessing", "TemplateProcessing"})


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
    """One model's tokenizer and chat template; `encode_chat` reuses the ids of text pieces seen before.

    `segment_cache_bytes` bounds the memory of that reuse (0 turns it off); `segment_path_blocker` is None
    when the piece path is in use, else why the whole rendered text is encoded instead.
    """

    def __init__(
        self,
        directory: Path | None,
        *,
        quiet: bool = False,
        segment_cache_bytes: int = DEFAULT_SEGMENT_CACHE_BYTES,
    ) -> None:
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
        # One request's tokens are computed on the event loop's thread: a thread pool would only take
        # the cores other requests (and other processes) need. This also keeps a process that forks
        # after tokenizing free of the library's warning.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self._splitter: _AddedTokenSplitter | None = None
        self._segments = _SegmentCache(segment_cache_bytes)
        if self.tokenizer is None:
            self.segment_path_blocker: str | None = "no tokenizer.json"
        elif segment_cache_bytes <= 0:
            self.segment_path_blocker = "segment cache disabled"
        else:
            self.segment_path_blocker = piecewise_blocker(self.tokenizer)
            if self.segment_path_blocker is None:
                self._splitter = _AddedTokenSplitter(self.tokenizer)
        if self.segment_path_blocker is not None and self.tokenizer is not None:
            log.info("chat prompts are encoded whole: %s", self.segment_path_blocker)

    @property
    def segmented(self) -> bool:
        """True when `encode_chat` encodes the pieces between added tokens and caches them."""
        return self._splitter is not None

    @property
    def segment_cache_hits(self) -> int:
        """Pieces whose ids came from the cache, since start."""
        return self._segments.hits

    @property
    def segment_cache_misses(self) -> int:
        """Pieces that had to be tokenized, since start."""
        return self._segments.misses

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
        """Ids of the rendered chat prompt, as `encode(render_chat(...), add_special_tokens=False)` gives them.

        On the piece path only pieces absent from the cache reach the tokenizer (see the module docstring)."""
        text = self.render_chat(messages, add_generation_prompt=add_generation_prompt)
        if self._splitter is None:
            return self.encode(text, add_special_tokens=False)
        return self._encode_pieces(text, self._splitter)

    def _encode_pieces(self, text: str, splitter: _AddedTokenSplitter) -> list[int]:
        assert self.tokenizer is not None
        ids: list[int] = []
        for piece, token_id in splitter.split(text):
            if token_id is not None:
                ids.append(token_id)
                continue
            cached = self._segments.get(piece)
            if cached is None:
                # The batch form without offsets: the same ids, a quarter faster on long pieces.
                cached = tuple(self.tokenizer.encode_batch_fast([piece], add_special_tokens=False)[0].ids)
                self._segments.put(piece, cached)
            ids.extend(cached)
        return ids

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


def piecewise_blocker(tokenizer: Tokenizer) -> str | None:
    """Why encoding the pieces between added tokens one by one could give other ids than encoding the whole
    text; None when it cannot (the conditions are argued in the module docstring)."""
    if tokenizer.encode_special_tokens:
        return "encode_special_tokens is set, so special tokens are not cut out"
    spec = json.loads(tokenizer.to_str())
    if spec.get("truncation") is not None:
        return "truncation is configured"
    if spec.get("padding") is not None:
        return "padding is configured"
    contents: set[str] = set()
    for tok in spec.get("added_tokens") or []:
        content = tok.get("content") or ""
        flags = [f for f in ("normalized", "lstrip", "rstrip", "single_word") if tok.get(f, True)]
        if flags:
            return f"added token {content!r} has {', '.join(flags)}"
        if not content or content in contents:
            return f"added token {content!r} is empty or listed twice"
        contents.add(content)
    return (
        _component_blocker("normalizer", spec.get("normalizer"), _PIECEWISE_NORMALIZERS, "normalizers")
        or _component_blocker("pre_tokenizer", spec.get("pre_tokenizer"), _PIECEWISE_PRE_TOKENIZERS, "pretokenizers")
        or _component_blocker("post_processor", spec.get("post_processor"), _ID_PRESERVING_PROCESSORS, "processors")
        or _model_blocker(spec.get("model") or {})
    )


def _component_blocker(kind: str, node: Any, allowed: frozenset[str], children: str) -> str | None:
    if node is None:
        return None
    kind_type = node.get("type")
    if kind_type == "Sequence":
        return next((r for c in node.get(children, []) if (r := _component_blocker(kind, c, allowed, children))), None)
    if kind_type not in allowed:
        return f"{kind} {kind_type!r} is not known to work piece by piece"
    if kind_type == "Metaspace" and node.get("prepend_scheme") not in ("always", "never"):
        return f"Metaspace prepend_scheme {node.get('prepend_scheme')!r} depends on the position in the text"
    if kind_type == "TemplateProcessing" and sum("Sequence" in p for p in node.get("single", [])) != 1:
        return "TemplateProcessing single template does not hold the sequence exactly once"
    return None


def _model_blocker(model: dict[str, Any]) -> str | None:
    if model.get("type") not in _PIECEWISE_MODELS:
        return f"model {model.get('type')!r} is not known to work piece by piece"
    if model.get("dropout") not in (None, 0.0):
        return "BPE dropout makes the merges random"
    return None


class _AddedTokenSplitter:
    """Cuts text at added tokens the way tokenizers does: the leftmost match first and, of the tokens that
    match there, the longest; the scan resumes after the match.

    The pattern is a trie of the token strings: at each character there is at most one branch to follow, and
    a token that ends where a longer one continues is an optional group, which the regex engine tries long
    first and gives up only if the longer token fails. All tokens that match at one place are prefixes of
    one another, so the first found is the longest. The cost per position is the depth of the trie, not the
    number of tokens (some models add thousands)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._ids = {t.content: i for i, t in tokenizer.get_added_tokens_decoder().items()}
        self._pattern = re.compile(_trie_pattern(self._ids)) if self._ids else None

    def split(self, text: str) -> list[tuple[str, int | None]]:
        """(piece, None) for text between added tokens, non-empty; ("", id) for each added token."""
        if self._pattern is None:
            return [(text, None)] if text else []
        out: list[tuple[str, int | None]] = []
        pos = 0
        for m in self._pattern.finditer(text):
            start = m.start()
            if start > pos:
                out.append((text[pos:start], None))
            out.append(("", self._ids[m.group()]))
            pos = m.end()
        if pos < len(text):
            out.append((text[pos:], None))
        return out


def _trie_pattern(words: Iterable[str]) -> str:
    """A regex matching exactly `words`, preferring the longest where several match (see _AddedTokenSplitter)."""
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = True  # a word ends here

    def emit(node: dict[str, Any]) -> str:
        branches = [re.escape(ch) + emit(child) for ch, child in node.items() if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return emit(root)


class _SegmentCache:
    """LRU of piece text → ids, bounded by an estimate of the bytes held (text, tuple and int objects).

    A piece larger than a quarter of the bound is not kept, so one huge prompt cannot flush the rest. A lock
    keeps the bookkeeping consistent if callers share the tokenizer across threads."""

    _INT_BYTES = 32  # a token id above 256 is its own int object

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._bytes = 0
        self._entries: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, text: str) -> tuple[int, ...] | None:
        with self._lock:
            ids = self._entries.get(text)
            if ids is None:
                self.misses += 1
            else:
                self.hits += 1
                self._entries.move_to_end(text)
            return ids

    def put(self, text: str, ids: tuple[int, ...]) -> None:
        size = self._size(text, ids)
        if size * 4 > self.max_bytes:
            return
        with self._lock:
            if text in self._entries:
                return
            self._entries[text] = ids
            self._bytes += size
            while self._bytes > self.max_bytes:
                old_text, old_ids = self._entries.popitem(last=False)
                self._bytes -= self._size(old_text, old_ids)

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def _size(cls, text: str, ids: tuple[int, ...]) -> int:
        return sys.getsizeof(text) + sys.getsizeof(ids) + cls._INT_BYTES * len(ids)


def _token_text(tok: Any) -> str | None:
    if isinstance(tok, dict):
        return tok.get("content")
    return tok


def _raise(message: str) -> None:
    raise ChatTemplateError(message)
