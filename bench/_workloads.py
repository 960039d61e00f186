"""The routing benchmark's workloads, generated with the model's tokenizer so every token count is exact,
and the oracle bound on prefix-cache hit rate.

Scaling: the llm-d 73-capacity run (Qwen3-32B, 8 pods × 307,328 KV tokens) is reproduced with every token
count and the per-pod KV capacity divided by one factor (`scale`, default 20), so the cached working set
stays ~73% of the cluster's KV capacity and the prompt : output : capacity ratios are the original's.

- `shared-prefix`: inference-perf `shared_prefix` (150 groups × 5 prompts, system 6,000, question 1,200,
  output 1,000 tokens); prompts are built once, shuffled with the seed and cycled, as inference-perf does.
- `multi-turn`: chat sessions on one shared system prompt (2,000 tokens); each turn appends a user message
  (400) and the previous turn's scripted assistant answer (500), output 500, 8 turns, 96 sessions live at a
  time. The assistant turns are scripted rather than the engine's output, so every router sees the same
  prompts (and the oracle can be computed).
- `no-sharing`: unique prompts of the shared-prefix workload's length (7,200 tokens), output 1,000.
- `mooncake-conversation`, `mooncake-synthetic`: the Mooncake FAST'25 traces (kvcache-ai/Mooncake,
  Apache-2.0; Qin et al., FAST'25; read in place from ../shared/traces/), replayed row by row: each
  `hash_id` is a 512-token block of text seeded by the id alone (equal ids, equal text, as the trace
  means), a prompt concatenates its row's blocks cut to `input_length`; every token count is divided by
  `trace_scale` (32 for 16-token KV blocks, so a trace block is one KV block) and each request carries the trace's gap
  since the previous row, which the load generator replays time-scaled (the trace's burstiness kept, its
  mean rate mapped to each stage's rate).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tokenizers import Tokenizer

from headway.devenv.paths import REPO_ROOT
from headway.kvcache.keys import block_keys, root_key

LLMD_POD_KV_TOKENS = 307_328
TRACES = {
    "mooncake-conversation": "mooncake_conversation_first_half.jsonl",
    "mooncake-synthetic": "mooncake_synthetic_trace.jsonl",
}
WORKLOADS = ("shared-prefix", "multi-turn", "no-sharing", *TRACES)
TRACE_DIR = REPO_ROOT.parent / "shared" / "traces"
TRACE_BLOCK_TOKENS = 512
TRACE_SCALE = 32
"""The trace workloads' token divisor for 16-token KV blocks (see trace_scale)."""


def trace_scale(block_size: int) -> int:
    """The divisor of the trace's token counts that makes one 512-token trace block one KV block."""
    return TRACE_BLOCK_TOKENS // block_size


@dataclass(frozen=True)
class Request:
    prompt: str
    output_tokens: int
    prompt_tokens: int
    gap_s: float | None = None
    """Trace workloads: seconds since the previous request in the trace (None: Poisson arrivals)."""


@dataclass(frozen=True)
class TraceRow:
    at_s: float
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]


@cache
def trace_rows(name: str) -> tuple[TraceRow, ...]:
    """The trace's rows in arrival order (timestamps in ms); a missing or malformed file fails naming it."""
    path = TRACE_DIR / TRACES[name]
    if not path.exists():
        raise FileNotFoundError(f"{path}: the {name} workload reads the trace from ../shared/traces/")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            r = json.loads(line)
            rows.append(TraceRow(r["timestamp"] / 1000, r["input_length"], r["output_length"], tuple(r["hash_ids"])))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{n}: not a Mooncake trace row ({e})") from e
    return tuple(sorted(rows, key=lambda r: r.at_s))


def trace_mean_rate(name: str) -> float:
    """Requests per trace second over the whole trace."""
    rows = trace_rows(name)
    return len(rows) / max(1e-9, rows[-1].at_s - rows[0].at_s)


class Words:
    """Vocabulary entries that are one token each with their leading space, so a prompt of n words is n
    tokens (plus the tokenizer's own special tokens), checked against the tokenizer."""

    def __init__(self, tokenizer_dir: Path) -> None:
        self.tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
        vocab = self.tokenizer.get_vocab()
        self.words = sorted(w[1:] for w in vocab if w.startswith("Ġ") and len(w) > 3 and w[1:].isalpha())
        self.words = [w for w in self.words if len(self.tokenizer.encode(" " + w, add_special_tokens=False).ids) == 1]
        if len(self.words) < 20:
            raise ValueError(f"{tokenizer_dir}: too few single-token words ({len(self.words)}) to build prompts")
        self.special = len(self.tokenizer.encode("", add_special_tokens=True).ids)

    def text(self, rng: random.Random, n: int) -> str:
        return "".join(" " + rng.choice(self.words) for _ in range(n))

    def count(self, prompt: str) -> int:
        return len(self.tokenizer.encode(prompt).ids)

    def ids(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(prompt).ids


def _scaled(tokens: int, scale: int) -> int:
    return max(1, round(tokens / scale))


def kv_blocks_per_pod(scale: int, block_size: int) -> int:
    return LLMD_POD_KV_TOKENS // scale // block_size


def _trace_requests(name: str, words: Words, scale: int) -> Iterator[Request]:
    block = TRACE_BLOCK_TOKENS // scale
    blocks: dict[int, list[str]] = {}
    previous = None
    while True:  # the trace again from its start once it runs out
        for row in trace_rows(name):
            ids = []
            for h in row.hash_ids:
                if h not in blocks:
                    block_rng = random.Random(h)
                    blocks[h] = [block_rng.choice(words.words) for _ in range(block)]
                ids.extend(blocks[h])
            n = min(len(ids), max(1, row.input_length // scale))
            gap = 0.0 if previous is None else max(0.0, row.at_s - previous)
            previous = row.at_s
            prompt = "".join(" " + w for w in ids[:n])
            yield Request(prompt, max(1, row.output_length // scale), n + words.special, gap)
        previous = None


def requests(name: str, words: Words, *, scale: int, seed: int, trace_scale: int = TRACE_SCALE) -> Iterator[Request]:
    """An endless, seeded stream of the workload's requests (the load generator takes what it needs); the
    trace workloads divide their token counts by `trace_scale`, the others by `scale`."""
    rng = random.Random(seed)
    if name in TRACES:
        yield from _trace_requests(name, words, trace_scale)
    elif name == "shared-prefix":
        system, question, out = _scaled(6000, scale), _scaled(1200, scale), _scaled(1000, scale)
        groups = [words.text(rng, system) for _ in range(150)]
        prompts = [g + words.text(rng, question) for g in groups for _ in range(5)]
        rng.shuffle(prompts)
        n = system + question + words.special
        while True:
            for p in prompts:
                yield Request(p, out, n)
    elif name == "multi-turn":
        system, user, answer, out = (_scaled(t, scale) for t in (2000, 400, 500, 500))
        shared, turns, live = words.text(rng, system), 8, 96
        sessions = [[shared] for _ in range(live)]
        while True:
            i = rng.randrange(live)
            history = sessions[i]
            history.append(words.text(rng, user))
            prompt = "".join(history)
            yield Request(prompt, out, words.count(prompt))
            history.append(words.text(rng, answer))
            if len(history) >= 1 + 2 * turns:
                sessions[i] = [shared]
    elif name == "no-sharing":
        length, out = _scaled(7200, scale), _scaled(1000, scale)
        while True:
            yield Request(words.text(rng, length), out, length + words.special)
    else:
        raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")


def oracle_hits(prompts: list[list[int]], block_size: int, model: str = "tiny") -> list[tuple[int, int]]:
    """Per request, (hit tokens, prompt tokens) for a router with perfect knowledge and enough KV capacity:
    each request hits every full block (within its first len−1 tokens, as vLLM always recomputes the last
    token) that some earlier request's prompt already contained as a prefix, counted as the engines count."""
    seen: set[int] = set()
    out = []
    for ids in prompts:
        keys = block_keys(ids, block_size, root_key(model))
        usable = (len(ids) - 1) // block_size
        matched = 0
        for k in keys[:usable]:
            if k not in seen:
                break
            matched += 1
        out.append((matched * block_size, len(ids)))
        seen.update(keys)
    return out


def distinct_blocks(prompts: list[list[int]], block_size: int, model: str = "tiny") -> set[int]:
    """The full prompt blocks a run sends, as the engines key them: its KV working set."""
    return {k for ids in prompts for k in block_keys(ids, block_size, root_key(model))}


def hit_rate(pairs: list[tuple[int, int]]) -> float:
    queries = sum(q for _, q in pairs)
    return sum(h for h, _ in pairs) / queries if queries else 0.0
