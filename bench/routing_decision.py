"""Time to route one chat request of ~8k tokens whose ~6k-token system prompt was seen before.

    headway bench routing-decision [--system-tokens 6144] [--user-tokens 2048] [--endpoints 8] [--runs 300]

The common case of a chat gateway: every request repeats a long system prompt and adds a new user message.
One earlier request (same system prompt, another user message) warms the tokenizer's piece cache; each run
then routes a request with a user message never seen before: render the chat template and tokenize
(`encode_chat`), compute block keys and score the endpoints. In-process, with the index holding a realistic
population (each endpoint holds part of the shared prefix and many unrelated prefixes), so the lookup walks
real entries. The same run also times the whole-prompt tokenization `encode_chat` replaced (render, then
encode all the text: `tokenize_uncached_ms`, `routing_decision_uncached_ms`) and checks both give the same
ids. The order of the two paths alternates between runs, so neither always finds the CPU caches warm.
Reports p50/p99 of each phase.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

from bench._machine import write_result
from headway.api.modelpool import ScorerWeights
from headway.devenv.tinymodel import tiny_model_dir
from headway.gateway.endpoints import Endpoint
from headway.gateway.routing.blocks import BlockSizes
from headway.gateway.routing.deps import PluginDeps
from headway.gateway.routing.pipeline import build_router
from headway.gateway.routing.profiles import preset
from headway.gateway.routing.types import RoutingRequest
from headway.kvcache.index import InMemoryIndex
from headway.kvcache.keys import block_keys, root_key
from headway.kvcache.tokenizer import ModelTokenizer

WORDS = [
    *("the", "gateway", "routes", "each", "request", "to", "the"),
    *("engine", "that", "holds", "its", "prefix", "cache", "blocks"),
]


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def text_of_tokens(tok: ModelTokenizer, rng: random.Random, n_tokens: int) -> str:
    """Text of about `n_tokens` tokens (cut at a token boundary, so re-encoding it gives about as many)."""
    assert tok.tokenizer is not None
    text = " ".join(rng.choice(WORDS) for _ in range(n_tokens * 2))
    return tok.tokenizer.decode(tok.encode(text, add_special_tokens=False)[:n_tokens]).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system-tokens", type=int, default=6144)
    parser.add_argument("--user-tokens", type=int, default=2048)
    parser.add_argument("--endpoints", type=int, default=8)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--block-size", type=int, default=16)
    args = parser.parse_args()
    rng = random.Random(1)
    tok = ModelTokenizer(tiny_model_dir())
    system = text_of_tokens(tok, rng, args.system_tokens)

    def chat(user: str) -> list[dict[str, Any]]:
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    warm = chat(text_of_tokens(tok, rng, args.user_tokens))
    requests = [chat(text_of_tokens(tok, rng, args.user_tokens)) for _ in range(args.runs)]
    warm_ids = tok.encode_chat(warm)  # the earlier request: the system prompt's pieces enter the cache
    first_ids = tok.encode(tok.render_chat(requests[0]), add_special_tokens=False)
    shared = next((i for i, (a, b) in enumerate(zip(warm_ids, first_ids, strict=False)) if a != b), len(warm_ids))

    index = InMemoryIndex()
    endpoints = [Endpoint(f"http://127.0.0.1:{9000 + i}") for i in range(args.endpoints)]
    for e in endpoints:
        e.scraped_at = time.monotonic() + 1e9
    keys = block_keys(warm_ids[:shared], args.block_size, root_key("tiny"))
    for i, e in enumerate(endpoints):  # endpoint i holds the first i/8 of the shared prefix, plus noise
        index.speculate(e.id, keys[: len(keys) * i // args.endpoints], 1e9)
        for _ in range(200):
            noise = [rng.randrange(500) for _ in range(args.block_size * 32)]
            index.speculate(e.id, block_keys(noise, args.block_size, root_key("tiny")), 1e9)
    pipe = build_router(
        "kv-aware",
        preset("kv-aware", ScorerWeights()),
        PluginDeps(index=index, block_sizes=BlockSizes(), stale_after_s=1e9, load_bound=1.25, rng=rng),
    )

    phases: dict[str, list[float]] = {
        k: [] for k in ("render", "tokenize", "decide", "total", "tokenize_uncached", "total_uncached")
    }
    hits, misses = tok.segment_cache_hits, tok.segment_cache_misses
    prompt_tokens: list[list[int]] = []

    def new_path(messages: list[dict[str, Any]]) -> None:
        t0 = time.perf_counter()
        tokens = tok.encode_chat(messages)
        t1 = time.perf_counter()
        decision = pipe.decide(RoutingRequest("tiny", tokens), endpoints)
        t2 = time.perf_counter()
        phases["tokenize"].append(t1 - t0)
        phases["decide"].append(t2 - t1)
        phases["total"].append(t2 - t0)
        assert decision.ranked[0].id == endpoints[-1].id
        prompt_tokens.append(tokens)

    def old_path(messages: list[dict[str, Any]]) -> None:
        t0 = time.perf_counter()
        tokens = tok.encode(tok.render_chat(messages), add_special_tokens=False)
        t1 = time.perf_counter()
        pipe.decide(RoutingRequest("tiny", tokens), endpoints)
        t2 = time.perf_counter()
        phases["tokenize_uncached"].append(t1 - t0)
        phases["total_uncached"].append(t2 - t0)
        prompt_tokens.append(tokens)

    for run, messages in enumerate(requests):
        for path in (new_path, old_path) if run % 2 == 0 else (old_path, new_path):
            path(messages)
        assert prompt_tokens[0] == prompt_tokens[1], "encode_chat differs from whole-prompt encoding"
        prompt_tokens.clear()
        t0 = time.perf_counter()
        tok.render_chat(messages)  # the part of tokenize_ms that the cache cannot save
        phases["render"].append(time.perf_counter() - t0)

    def ms(name: str, *, mean: bool = False) -> dict[str, float]:
        xs = phases[name]
        out = {"p50": round(pct(xs, 0.5) * 1000, 3), "p99": round(pct(xs, 0.99) * 1000, 3)}
        if mean:
            out["mean"] = round(statistics.mean(xs) * 1000, 3)
        return out

    payload = {
        "prompt_tokens": len(first_ids),
        "shared_prefix_tokens": shared,
        "endpoints": args.endpoints,
        "block_size": args.block_size,
        "runs": args.runs,
        "index_keys": len(index),
        "segmented": tok.segmented,
        "segment_cache_hits": tok.segment_cache_hits - hits,
        "segment_cache_misses": tok.segment_cache_misses - misses,
        "render_ms": ms("render"),
        "tokenize_ms": ms("tokenize"),
        "tokenize_uncached_ms": ms("tokenize_uncached"),
        "keys_and_scoring_ms": ms("decide"),
        "routing_decision_ms": ms("total", mean=True),
        "routing_decision_uncached_ms": ms("total_uncached", mean=True),
    }
    print(payload)
    print(write_result("routing-decision", payload))


if __name__ == "__main__":
    main()
