"""Chat prompts encoded piece by piece between added tokens give exactly the ids of the whole rendered text.

The tiny model's tokenizer and tokenizers of other styles, built here with the `tokenizers` library, are all
checked against `Tokenizer.encode(render_chat(...), add_special_tokens=False)`; those whose output depends on
where a piece sits in the text must be detected and encode the whole text instead.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from headway.devenv.tinymodel import tiny_model_dir
from headway.kvcache.tokenizer import ModelTokenizer, _AddedTokenSplitter, piecewise_blocker

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
INST_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}[INST] {{ m['role'] }}: {{ m['content'] }} [/INST]{{ eos_token }}"
    "{% endfor %}{% if add_generation_prompt %} {% endif %}"
)
_WORDS = [
    *("the", "a", "of", "to", "and", "is", "model", "token", "cache", "prefix"),
    *("block", "request", "engine", "gateway", "queue", "hello", "world"),
]
_TRICKY_PIECES = [
    "<|im_start|>",
    "<|im_end|>",
    "<|eot|>",
    "<|start_header|>",
    "<|end_header|>",
    "<|begin_of_text|>",
    "<s>",
    "</s>",
    "<tool>",
    "<tool",
    "<tool>_call",
    "_call",
    "<|",
    "|>",
    "<|im_",
    "<|eot",
    "[INST]",
    "\u2581",
    " ",
    "  ",
    "\n",
    "\n\n",
    "\t",
    "\r\n",
    "\u00a0",
    "\u3000",
    "e\u0301",
    "\u00e9",
    "\U0001f980",
    "hello world",
]
SYSTEM_PROMPTS = [
    "You are a helpful assistant. " * 20,
    "Answer in one line.\n\n",
    " the gateway routes<|im_end|>each request ",
]


def _corpus(lines: int = 300, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    extra = ["é", "日本語", "ß", "\U0001f980", "  ", "\n", "?", "!", "42"]
    return [" ".join(rng.choice(_WORDS + extra) for _ in range(rng.randint(3, 15))) for _ in range(lines)]


def _write_model(out: Path, tok: Tokenizer, *, template: str, bos: str | None, eos: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    config = {"chat_template": template, "bos_token": bos, "eos_token": eos}
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return out


def _chatml_byte_level() -> Tokenizer:
    """GPT-2/Qwen style: byte-level BPE with a prefix space, an NFC normalizer, and a non-special added token."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    # non-special added tokens, one a prefix of the other: the longer must win where both match
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in ("<tool>", "<tool", "<tool>_call")])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def _sentencepiece_bpe(*, legacy: bool, prepend_scheme: str = "first") -> Tokenizer:
    """Llama-2 style. Legacy: a Prepend("▁") normalizer, which prepends to every piece between added tokens;
    otherwise a Metaspace pre-tokenizer with the given prepend scheme."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if legacy:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme=prepend_scheme, split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return tok


@pytest.fixture(scope="module")
def chat_tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelTokenizer]:
    root = tmp_path_factory.mktemp("tokenizers")
    built = {
        "chatml-byte-level": (_chatml_byte_level(), CHATML_TEMPLATE, None, "<|im_end|>"),
        "llama2-legacy-prepend": (_sentencepiece_bpe(legacy=True), INST_TEMPLATE, "<s>", "</s>"),
        "metaspace-always": (_sentencepiece_bpe(legacy=False, prepend_scheme="always"), INST_TEMPLATE, "<s>", "</s>"),
        "metaspace-first": (_sentencepiece_bpe(legacy=False, prepend_scheme="first"), INST_TEMPLATE, "<s>", "</s>"),
    }
    out = {
        name: ModelTokenizer(_write_model(root / name, t, template=tpl, bos=b, eos=e))
        for name, (t, tpl, b, e) in built.items()
    }
    out["tiny"] = ModelTokenizer(tiny_model_dir())
    return out


def _whole(tok: ModelTokenizer, messages: list[dict[str, Any]], add_generation_prompt: bool) -> list[int]:
    assert tok.tokenizer is not None
    text = tok.render_chat(messages, add_generation_prompt=add_generation_prompt)
    return tok.tokenizer.encode(text, add_special_tokens=False).ids


_content = st.lists(st.one_of(st.text(max_size=24), st.sampled_from(_TRICKY_PIECES)), max_size=10).map("".join)
_message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "user", "assistant"]),
        "content": st.one_of(_content, st.sampled_from(SYSTEM_PROMPTS)),
    }
)


@pytest.mark.parametrize(
    ("name", "segmented"),
    [
        pytest.param("tiny", True, id="tiny-model"),
        pytest.param("chatml-byte-level", True, id="chatml-byte-level"),
        pytest.param("llama2-legacy-prepend", True, id="llama2-legacy-prepend"),
        pytest.param("metaspace-always", True, id="metaspace-always"),
        pytest.param("metaspace-first", False, id="metaspace-first-falls-back"),
    ],
)
@settings(max_examples=150, deadline=None)
@given(messages=st.lists(_message, min_size=1, max_size=5), add_generation_prompt=st.booleans())
def test_chat_ids_equal_the_whole_prompt_encoding_first_time_and_from_the_cache(
    chat_tokenizers: dict[str, ModelTokenizer],
    name: str,
    segmented: bool,
    messages: list[dict[str, Any]],
    add_generation_prompt: bool,
) -> None:
    tok = chat_tokenizers[name]
    assert tok.segmented is segmented, tok.segment_path_blocker
    whole = _whole(tok, messages, add_generation_prompt)
    assert tok.encode_chat(messages, add_generation_prompt=add_generation_prompt) == whole
    misses = tok.segment_cache_misses
    assert tok.encode_chat(messages, add_generation_prompt=add_generation_prompt) == whole
    assert tok.segment_cache_misses == misses  # the second time every piece came from the cache


@settings(max_examples=300, deadline=None)
@given(
    tokens=st.lists(st.text(alphabet="ab<|>", min_size=1, max_size=5), min_size=1, max_size=8, unique=True),
    text=st.text(alphabet="ab<|> ", max_size=60),
)
def test_added_tokens_are_cut_where_the_library_cuts_them(tokens: list[str], text: str) -> None:
    """Overlapping tokens and tokens that are prefixes of others: leftmost, then longest, no overlap."""
    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in tokens])
    library = [i for i in tok.encode(text, add_special_tokens=False).ids if i != 0]
    assert [i for _, i in _AddedTokenSplitter(tok).split(text) if i is not None] == library


def test_metaspace_first_differs_piece_by_piece_which_is_why_it_is_detected(
    chat_tokenizers: dict[str, ModelTokenizer],
) -> None:
    tok = chat_tokenizers["metaspace-first"].tokenizer
    assert tok is not None
    whole = tok.encode("<s>hello world", add_special_tokens=False).ids
    pieces = [tok.token_to_id("<s>"), *tok.encode("hello world", add_special_tokens=False).ids]
    assert whole != pieces
    assert "prepend_scheme" in (chat_tokenizers["metaspace-first"].segment_path_blocker or "")


def test_a_repeated_system_prompt_is_tokenized_once() -> None:
    tok = ModelTokenizer(tiny_model_dir())
    rng = random.Random(5)
    system = " ".join(rng.choice(_WORDS) for _ in range(6000))
    first = [{"role": "system", "content": system}, {"role": "user", "content": "what is the cache"}]
    assert tok.encode_chat(first) == _whole(tok, first, True)
    misses, hits = tok.segment_cache_misses, tok.segment_cache_hits
    second = [{"role": "system", "content": system}, {"role": "user", "content": "explain the prefix"}]
    assert tok.encode_chat(second) == _whole(tok, second, True)
    assert tok.segment_cache_misses == misses + 1  # only the new user message's piece
    assert tok.segment_cache_hits > hits


def test_segment_cache_drops_least_recently_used_pieces_beyond_its_byte_bound() -> None:
    tok = ModelTokenizer(tiny_model_dir(), segment_cache_bytes=256 * 1024)
    oldest = [{"role": "user", "content": "the first question " * 40}]
    tok.encode_chat(oldest)
    for i in range(200):
        tok.encode_chat([{"role": "user", "content": f"question {i} about the gateway " * 40}])
    recent = [{"role": "user", "content": "question 199 about the gateway " * 40}]
    misses = tok.segment_cache_misses
    assert tok.encode_chat(recent) == _whole(tok, recent, True)
    assert tok.segment_cache_misses == misses
    assert tok.encode_chat(oldest) == _whole(tok, oldest, True)
    assert tok.segment_cache_misses == misses + 1


def test_a_piece_over_a_quarter_of_the_bound_is_not_cached() -> None:
    tok = ModelTokenizer(tiny_model_dir(), segment_cache_bytes=64 * 1024)
    huge = [{"role": "user", "content": "the model " * 4000}]
    assert tok.encode_chat(huge) == _whole(tok, huge, True)
    misses = tok.segment_cache_misses
    assert tok.encode_chat(huge) == _whole(tok, huge, True)
    assert tok.segment_cache_misses == misses + 1


@pytest.mark.parametrize(
    ("directory", "cache_bytes", "blocker"),
    [
        pytest.param(None, 1024, "no tokenizer.json", id="byte-fallback"),
        pytest.param("tiny", 0, "segment cache disabled", id="cache-off"),
    ],
)
def test_whole_text_encoding_when_the_piece_path_is_off(directory: str | None, cache_bytes: int, blocker: str) -> None:
    tok = ModelTokenizer(tiny_model_dir() if directory else None, quiet=True, segment_cache_bytes=cache_bytes)
    messages = [{"role": "user", "content": "hi <|eot|> there"}]
    assert not tok.segmented
    assert tok.segment_path_blocker == blocker
    assert tok.encode_chat(messages) == tok.encode(tok.render_chat(messages), add_special_tokens=False)


def _edit_spec(edit: Callable[[dict[str, Any]], None]) -> Callable[[Tokenizer], Tokenizer]:
    def apply(tok: Tokenizer) -> Tokenizer:
        spec = json.loads(tok.to_str())
        edit(spec)
        return Tokenizer.from_str(json.dumps(spec))

    return apply


def _with_tokens(*tokens: AddedToken) -> Callable[[Tokenizer], Tokenizer]:
    def apply(tok: Tokenizer) -> Tokenizer:
        tok.add_tokens(list(tokens))
        return tok

    return apply


def _encoding_special_tokens(tok: Tokenizer) -> Tokenizer:
    tok.encode_special_tokens = True
    return tok


def _truncating(tok: Tokenizer) -> Tokenizer:
    tok.enable_truncation(128)
    return tok


def _padding(tok: Tokenizer) -> Tokenizer:
    tok.enable_padding()
    return tok


def _pre_tokenizer(spec: dict[str, Any]) -> dict[str, Any]:
    return spec["pre_tokenizer"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param(lambda t: t, None, id="unchanged-tiny-tokenizer"),
        pytest.param(_with_tokens(AddedToken("<x>", normalized=False, special=True)), None, id="another-special-token"),
        pytest.param(_with_tokens(AddedToken("<x>", normalized=False, lstrip=True)), "lstrip", id="lstrip-token"),
        pytest.param(_with_tokens(AddedToken("<x>", normalized=False, rstrip=True)), "rstrip", id="rstrip-token"),
        pytest.param(
            _with_tokens(AddedToken("<x>", normalized=False, single_word=True)), "single_word", id="single-word"
        ),
        pytest.param(_with_tokens(AddedToken("cache", normalized=True)), "normalized", id="normalized-token"),
        pytest.param(_encoding_special_tokens, "encode_special_tokens", id="special-tokens-as-text"),
        pytest.param(_truncating, "truncation", id="truncation"),
        pytest.param(_padding, "padding", id="padding"),
        pytest.param(_edit_spec(lambda s: s["model"].update(dropout=0.1)), "dropout", id="bpe-dropout"),
        pytest.param(_edit_spec(lambda s: s["model"].update(dropout=0.0)), None, id="bpe-dropout-zero"),
        pytest.param(
            _edit_spec(
                lambda s: s.update(
                    pre_tokenizer={
                        "type": "Sequence",
                        "pretokenizers": [
                            {"type": "Digits", "individual_digits": True},
                            {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": True},
                        ],
                    }
                )
            ),
            "prepend_scheme",
            id="metaspace-first-inside-a-sequence",
        ),
        pytest.param(
            _edit_spec(
                lambda s: s.update(
                    post_processor={
                        "type": "TemplateProcessing",
                        "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                        "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
                        "special_tokens": {},
                    }
                )
            ),
            "TemplateProcessing",
            id="template-repeating-the-sequence",
        ),
    ],
)
def test_piecewise_blocker_names_what_would_break_exactness(
    change: Callable[[Tokenizer], Tokenizer], reason: str | None
) -> None:
    tok = change(Tokenizer.from_file(str(tiny_model_dir() / "tokenizer.json")))
    blocker = piecewise_blocker(tok)
    if reason is None:
        assert blocker is None
    else:
        assert blocker is not None
        assert reason in blocker
