"""A tiny Llama-architecture model (config + trained byte-level BPE tokenizer + chat template).

Real vLLM serves it with `--load-format dummy` (random weights, real engine); the simulator and the
gateway use its tokenizer. Everything is generated here, deterministically, because no model hub is
reachable: the same inputs always give the same vocabulary, so token counts in tests are stable.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from headway.devenv.paths import cache_dir

MODEL_NAME = "headway-tiny-llama"
VOCAB_SIZE = 512
SPECIAL_TOKENS = [
    "<|pad|>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header|>",
    "<|end_header|>",
    "<|eot|>",
]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header|>{{ message['role'] }}<|end_header|>\n\n{{ message['content'] }}<|eot|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header|>assistant<|end_header|>\n\n{% endif %}"
)
_WORD_LINES = (
    "the a an of to in and is for on with as by at from that this it be are was were has have",
    "had model token cache prefix block request engine gateway router pool variant replica",
    "latency throughput queue batch decode prefill kernel memory node cluster service pod scale",
    "cost slo time first second question answer system user assistant context window length",
    "budget what how why when where which who please explain describe summarize compare list",
    "write code data value number result error status ready running pending failed done good",
    "fast slow",
)
_WORDS = [w for line in _WORD_LINES for w in line.split()]


def _corpus(lines: int = 4000, seed: int = 7) -> list[str]:
    rng = random.Random(seed)  # noqa: S311 - a fixed corpus, not a secret
    punct = [".", ",", "?", "!", ":", ";", "-", "(", ")", "0", "1", "2", "3", "42", "2026"]
    out = []
    for _ in range(lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 24))]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), rng.choice(punct))
        out.append(" ".join(words).capitalize())
    return out


def build_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


SIZES: dict[str, dict[str, int]] = {
    "tiny": {},
    # the same architecture and tokenizer with enough compute that a real vLLM CPU engine (one thread)
    # prefills at roughly a fraction of a millisecond per token, as the routing benchmark's real-engine run
    # needs (a tiny model's prefill is nearly free, so where a prompt is cached would not matter)
    "small": {
        "hidden_size": 512,
        "intermediate_size": 1408,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 64,
        "max_position_embeddings": 8192,
    },
}
"""Model shapes by name: the tiny one everywhere, larger ones where a real engine's compute must matter."""


def _config(vocab_size: int, size: str = "tiny") -> dict[str, object]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "vocab_size": vocab_size,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "bos_token_id": SPECIAL_TOKENS.index("<|begin_of_text|>"),
        "eos_token_id": SPECIAL_TOKENS.index("<|eot|>"),
        "pad_token_id": SPECIAL_TOKENS.index("<|pad|>"),
        "torch_dtype": "bfloat16",
        **SIZES[size],
    }


def write_tiny_model(out: Path, size: str = "tiny") -> Path:
    """Write config.json, tokenizer.json, tokenizer_config.json and generation_config.json into `out` (the
    model shape `size` of SIZES, the same tokenizer for all)."""
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    tok.save(str(out / "tokenizer.json"))
    (out / "config.json").write_text(json.dumps(_config(tok.get_vocab_size(), size), indent=2))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<|begin_of_text|>",
                "eos_token": "<|eot|>",
                "pad_token": "<|pad|>",
                "add_bos_token": False,
                "model_max_length": 4096,
                "chat_template": CHAT_TEMPLATE,
                "clean_up_tokenization_spaces": False,
            },
            indent=2,
        )
    )
    (out / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot|>", "pad_token": "<|pad|>"}, indent=2)
    )
    (out / "generation_config.json").write_text(
        json.dumps(
            {
                "bos_token_id": SPECIAL_TOKENS.index("<|begin_of_text|>"),
                "eos_token_id": SPECIAL_TOKENS.index("<|eot|>"),
            },
            indent=2,
        )
    )
    return out


def tiny_model_dir(size: str = "tiny") -> Path:
    """The tiny model (or the shape `size` of SIZES) in the per-machine cache, written on first use or when
    its shape changed."""
    d = cache_dir() / "models" / (MODEL_NAME if size == "tiny" else f"{MODEL_NAME}-{size}")
    config = d / "config.json"
    if not config.exists() or any(json.loads(config.read_text()).get(k) != v for k, v in SIZES[size].items()):
        write_tiny_model(d, size)
    return d
