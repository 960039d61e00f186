"""Time to route one request with an 8k-token prompt: tokenize, compute block keys, score 8 endpoints.

    headway bench routing-decision [--tokens 8192] [--endpoints 8] [--runs 300]

In-process, with the index holding a realistic population (each endpoint holds part of the prompt and
many unrelated prefixes), so the lookup walks real entries. Reports p50/p99 of each phase.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from bench._machine import write_result
from headway.api.modelpool import ScorerWeights
from headway.devenv.tinymodel import tiny_model_dir
from headway.gateway.endpoints import Endpoint
from headway.gateway.routing.pipeline import build_pipeline
from headway.gateway.routing.types import RoutingRequest
from headway.kvcache.index import InMemoryIndex
from headway.kvcache.keys import block_keys, root_key
from headway.kvcache.tokenizer import ModelTokenizer


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--endpoints", type=int, default=8)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--block-size", type=int, default=16)
    args = parser.parse_args()
    rng = random.Random(1)
    tok = ModelTokenizer(tiny_model_dir())
    words = [
        "the",
        "gateway",
        "routes",
        "each",
        "request",
        "to",
        "the",
        "engine",
        "that",
        "holds",
        "its",
        "prefix",
        "cache",
        "blocks",
    ]
    text = " ".join(rng.choice(words) for _ in range(args.tokens * 2))
    ids = tok.encode(text)[: args.tokens]
    text = tok.tokenizer.decode(ids) if tok.tokenizer else text
    index = InMemoryIndex()
    endpoints = [Endpoint(f"http://127.0.0.1:{9000 + i}") for i in range(args.endpoints)]
    for e in endpoints:
        e.scraped_at = time.monotonic() + 1e9
    keys = block_keys(ids, args.block_size, root_key("tiny"))
    for i, e in enumerate(endpoints):  # endpoint i holds the first i/8 of the prompt, plus noise
        index.speculate(e.id, keys[: len(keys) * i // args.endpoints], 1e9)
        for _ in range(200):
            noise = [rng.randrange(500) for _ in range(args.block_size * 32)]
            index.speculate(e.id, block_keys(noise, args.block_size, root_key("tiny")), 1e9)
    pipe = build_pipeline(
        "kv-aware",
        ScorerWeights(),
        index=index,
        history=InMemoryIndex(),
        block_sizes={},
        stale_after_s=1e9,
        load_bound=1.25,
        rng=rng,
    )
    tokenize, decide, total = [], [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        tokens = tok.encode(text)
        t1 = time.perf_counter()
        decision = pipe.decide(RoutingRequest("tiny", tokens), endpoints)
        t2 = time.perf_counter()
        tokenize.append(t1 - t0)
        decide.append(t2 - t1)
        total.append(t2 - t0)
    assert decision.ranked[0].id == endpoints[-1].id
    ms = lambda xs, q: round(pct(xs, q) * 1000, 3)  # noqa: E731
    payload = {
        "prompt_tokens": len(ids),
        "endpoints": args.endpoints,
        "block_size": args.block_size,
        "runs": args.runs,
        "index_keys": len(index),
        "tokenize_ms": {"p50": ms(tokenize, 0.5), "p99": ms(tokenize, 0.99)},
        "keys_and_scoring_ms": {"p50": ms(decide, 0.5), "p99": ms(decide, 0.99)},
        "routing_decision_ms": {
            "p50": ms(total, 0.5),
            "p99": ms(total, 0.99),
            "mean": round(statistics.mean(total) * 1000, 3),
        },
    }
    print(payload)
    print(write_result("routing-decision", payload))


if __name__ == "__main__":
    main()
