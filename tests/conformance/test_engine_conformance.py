"""The same checks against the simulator and real vLLM: what a control plane sees must not differ.

Legitimate differences are stated where they apply: output text (random weights vs seeded sampling)
and latency values are not compared, only their presence, shape and direction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import cbor2
import openai
import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families
from tokenizers import Tokenizer

from headway.devenv.tinymodel import tiny_model_dir
from headway.kvcache.events import REPLAY_END, BlockRemoved, BlockStored, decode_batch, decode_seq, encode_seq
from headway.sim.metrics import ITL_BUCKETS, REQUEST_LATENCY_BUCKETS, TTFT_BUCKETS
from tests.conformance.engines import (
    BLOCK_SIZE,
    HASH_SEED,
    MAX_MODEL_LEN,
    SERVED,
    EngineUnderTest,
    post,
    stream_events,
)
from tests.conftest import eventually

LABELS = {"model_name": SERVED, "engine": "0"}
REQUIRED = {
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:prefix_cache_queries": "counter",
    "vllm:prefix_cache_hits": "counter",
    "vllm:prompt_tokens": "counter",
    "vllm:generation_tokens": "counter",
    "vllm:num_preemptions": "counter",
    "vllm:request_success": "counter",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram",
    "vllm:cache_config_info": "gauge",
}


def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(tiny_model_dir() / "tokenizer.json"))


def client(e: EngineUnderTest) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{e.url}/v1", api_key="unused", max_retries=0)


def metrics(e: EngineUnderTest) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(e.metrics_text())}


def sample(e: EngineUnderTest, name: str, **labels: str) -> float:
    """Current value of one sample (counters by their exposed `_total` name)."""
    for fam in text_string_to_metric_families(e.metrics_text()):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise AssertionError(f"{name}{labels} not exposed by {e.kind}")


def long_prompt(tag: str, sentences: int = 60) -> str:
    return f"Request {tag} asks about block {tag} and prefix {tag}. " * sentences


def test_models_lists_the_served_name(engine: EngineUnderTest) -> None:
    models = client(engine).models.list()
    assert [m.id for m in models.data] == [SERVED]
    assert models.data[0].object == "model"


def test_completion_counts_tokens_with_the_model_tokenizer(engine: EngineUnderTest) -> None:
    prompt = "Explain the prefix cache of the gateway router, please."
    out = client(engine).completions.create(model=SERVED, prompt=prompt, max_tokens=5, extra_body={"ignore_eos": True})
    assert out.object == "text_completion"
    assert out.usage.prompt_tokens == len(tokenizer().encode(prompt).ids)
    assert out.usage.completion_tokens == 5
    assert out.usage.total_tokens == out.usage.prompt_tokens + 5
    assert out.choices[0].finish_reason == "length"
    assert out.usage.prompt_tokens_details is not None and out.usage.prompt_tokens_details.cached_tokens == 0


def test_streaming_completion_frames_chunks_usage_and_done(engine: EngineUnderTest) -> None:
    body = {
        "model": SERVED,
        "prompt": "hello there",
        "max_tokens": 4,
        "stream": True,
        "ignore_eos": True,
        "stream_options": {"include_usage": True},
    }
    events = stream_events(f"{engine.url}/v1/completions", body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 4
    content = chunks[:-1]
    # one frame per token, except that vLLM V1 merges the deltas a slow reader has not taken yet into one
    # frame (its RequestOutputCollector): the simulator never does, real vLLM may under load
    assert len(content) == 4 if engine.kind == "sim" else 1 <= len(content) <= 4
    assert all(c["object"] == "text_completion" and c["id"] == content[0]["id"] for c in content)
    assert [c["choices"][0]["finish_reason"] for c in content] == [None] * (len(content) - 1) + ["length"]


def test_chat_applies_the_chat_template(engine: EngineUnderTest) -> None:
    content = "What does the KV cache hold?"
    rendered = (
        f"<|begin_of_text|><|start_header|>user<|end_header|>\n\n{content}<|eot|>"
        "<|start_header|>assistant<|end_header|>\n\n"
    )
    expected = len(tokenizer().encode(rendered, add_special_tokens=False).ids)
    out = client(engine).chat.completions.create(
        model=SERVED, messages=[{"role": "user", "content": content}], max_tokens=3, extra_body={"ignore_eos": True}
    )
    assert out.usage.prompt_tokens == expected
    assert out.choices[0].message.role == "assistant"
    status, tok = post(f"{engine.url}/tokenize", {"model": SERVED, "messages": [{"role": "user", "content": content}]})
    assert status == 200 and tok["count"] == expected


def test_streaming_chat_starts_with_the_assistant_role(engine: EngineUnderTest) -> None:
    body = {
        "model": SERVED,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
        "stream": True,
        "ignore_eos": True,
        "stream_options": {"include_usage": True},
    }
    events = stream_events(f"{engine.url}/v1/chat/completions", body)
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["usage"]["completion_tokens"] == 2
    assert events[-1] == "[DONE]"


def test_metrics_have_vllm_names_types_labels_and_buckets(engine: EngineUnderTest) -> None:
    client(engine).completions.create(model=SERVED, prompt="warm up", max_tokens=2)
    fams = metrics(engine)
    for name, kind in REQUIRED.items():
        assert name in fams, f"{engine.kind} lacks {name}"
        assert fams[name].type == kind, f"{name}: {fams[name].type} != {kind}"
    for name in ("vllm:num_requests_running", "vllm:kv_cache_usage_perc", "vllm:time_to_first_token_seconds"):
        assert {k: fams[name].samples[0].labels[k] for k in LABELS} == LABELS
    for name, want in [
        ("vllm:time_to_first_token_seconds", TTFT_BUCKETS),
        ("vllm:inter_token_latency_seconds", ITL_BUCKETS),
        ("vllm:e2e_request_latency_seconds", REQUEST_LATENCY_BUCKETS),
    ]:
        bounds = [float(s.labels["le"]) for s in fams[name].samples if s.name.endswith("_bucket")]
        assert bounds == [*want, float("inf")], name
    info = fams["vllm:cache_config_info"].samples[0].labels
    assert info["block_size"] == str(BLOCK_SIZE) and info["enable_prefix_caching"] == "True"


def test_metrics_move_the_right_way(engine: EngineUnderTest) -> None:
    before = {
        n: sample(engine, n, **LABELS)
        for n in (
            "vllm:prompt_tokens_total",
            "vllm:generation_tokens_total",
            "vllm:time_to_first_token_seconds_count",
            "vllm:e2e_request_latency_seconds_count",
        )
    }
    ok = sample(engine, "vllm:request_success_total", finished_reason="length")
    out = client(engine).completions.create(
        model=SERVED, prompt="count me", max_tokens=6, extra_body={"ignore_eos": True}
    )

    def moved() -> bool:
        return (
            sample(engine, "vllm:e2e_request_latency_seconds_count", **LABELS)
            > before["vllm:e2e_request_latency_seconds_count"]
        )

    eventually(moved, timeout_s=10, what="metrics updated after the request")
    assert (
        sample(engine, "vllm:prompt_tokens_total", **LABELS) - before["vllm:prompt_tokens_total"]
        == out.usage.prompt_tokens
    )
    assert sample(engine, "vllm:generation_tokens_total", **LABELS) - before["vllm:generation_tokens_total"] == 6
    assert (
        sample(engine, "vllm:time_to_first_token_seconds_count", **LABELS)
        - before["vllm:time_to_first_token_seconds_count"]
        == 1
    )
    assert sample(engine, "vllm:request_success_total", finished_reason="length") == ok + 1
    assert sample(engine, "vllm:num_requests_running", **LABELS) == 0


def test_repeated_prompt_hits_the_prefix_cache_in_whole_blocks(engine: EngineUnderTest) -> None:
    prompt = long_prompt("repeat", 40)
    n_tokens = len(tokenizer().encode(prompt).ids)
    assert n_tokens >= 3 * BLOCK_SIZE
    c = client(engine)
    c.completions.create(model=SERVED, prompt=prompt, max_tokens=2)
    hits0 = sample(engine, "vllm:prefix_cache_hits_total", **LABELS)
    second = c.completions.create(model=SERVED, prompt=prompt, max_tokens=2)
    hits = sample(engine, "vllm:prefix_cache_hits_total", **LABELS) - hits0
    assert hits == (n_tokens - 1) // BLOCK_SIZE * BLOCK_SIZE, (hits, n_tokens)
    assert second.usage.prompt_tokens_details.cached_tokens == hits


def _stored(engine: EngineUnderTest) -> list[BlockStored]:
    return [ev for r in engine.events.received for ev in r.batch.events if isinstance(ev, BlockStored)]


def _stored_starting(engine: EngineUnderTest, seen: int, tokens: list[int]) -> list[BlockStored]:
    """New BlockStored events whose first block holds `tokens`: an earlier test's request may still be
    publishing (events come in batches), so 'the next event' is not necessarily this request's."""
    return [ev for ev in _stored(engine)[seen:] if ev.token_ids[: len(tokens)] == tokens]


def test_kv_events_carry_whole_blocks_of_the_prompt_with_parent_chaining(engine: EngineUnderTest) -> None:
    tok = tokenizer()
    base = long_prompt("chain", 25)
    ids = tok.encode(base).ids
    assert len(ids) >= 3 * BLOCK_SIZE
    c = client(engine)
    seen = len(_stored(engine))
    c.completions.create(model=SERVED, prompt=ids, max_tokens=1)
    first = eventually(
        lambda: _stored_starting(engine, seen, ids[:BLOCK_SIZE]), timeout_s=10, what="BlockStored for the first prompt"
    )[0]
    n_full = len(ids) // BLOCK_SIZE
    assert len(first.block_hashes) == n_full and first.block_size == BLOCK_SIZE
    assert len(first.token_ids) == len(first.block_hashes) * BLOCK_SIZE
    assert first.token_ids == ids[: n_full * BLOCK_SIZE]
    assert first.parent_block_hash is None
    assert all(isinstance(h, int) and 0 <= h < 2**64 for h in first.block_hashes)

    extended = ids[: n_full * BLOCK_SIZE] + tok.encode(long_prompt("more", 25)).ids
    seen = len(_stored(engine))
    c.completions.create(model=SERVED, prompt=extended[: MAX_MODEL_LEN - 8], max_tokens=1)
    tail = extended[n_full * BLOCK_SIZE : (n_full + 1) * BLOCK_SIZE]
    second = eventually(
        lambda: _stored_starting(engine, seen, tail), timeout_s=10, what="BlockStored for the extension"
    )[0]
    assert second.parent_block_hash == first.block_hashes[-1]
    assert second.token_ids[:BLOCK_SIZE] == extended[n_full * BLOCK_SIZE : (n_full + 1) * BLOCK_SIZE]

    topics = {r.topic for r in engine.events.received}
    assert topics == {engine.topic}
    seqs = [r.seq for r in engine.events.received]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_block_keys_are_vllms_sha256_cbor_chain_with_the_hash_seed(engine: EngineUnderTest) -> None:
    """vLLM's key of a block: SHA-256 of the canonical CBOR of (parent key, its tokens, extra keys), the
    first block's parent the same hash of PYTHONHASHSEED; events carry the low 64 bits. Computed here
    from that definition, independently of both engines, so a router that recomputes vLLM's keys (llm-d's
    precise scorer can) finds the simulator's too."""

    def key(obj: object) -> bytes:
        return hashlib.sha256(cbor2.dumps(obj, canonical=True)).digest()

    ids = tokenizer().encode(long_prompt("cbor", 20)).ids
    n_full = len(ids) // BLOCK_SIZE
    assert n_full >= 2
    seen = len(_stored(engine))
    client(engine).completions.create(model=SERVED, prompt=ids, max_tokens=1)
    stored = eventually(
        lambda: _stored_starting(engine, seen, ids[:BLOCK_SIZE]), timeout_s=10, what="BlockStored for the prompt"
    )[0]
    parent, expected = key(HASH_SEED), []
    for i in range(n_full):
        parent = key((parent, tuple(ids[i * BLOCK_SIZE : (i + 1) * BLOCK_SIZE]), None))
        expected.append(int.from_bytes(parent, "big") & (2**64 - 1))
    assert stored.block_hashes == expected
    assert sample(engine, "vllm:cache_config_info", prefix_caching_hash_algo="sha256_cbor") == 1


def test_eviction_emits_block_removed_for_blocks_it_stored(engine: EngineUnderTest) -> None:
    c = client(engine)
    tok = tokenizer()
    for i in range(7):  # 7 prompts × 9 blocks > 40 blocks of cache
        ids = tok.encode(long_prompt(f"evict-{i}", 70)).ids[: 9 * BLOCK_SIZE + 10]
        c.completions.create(model=SERVED, prompt=ids, max_tokens=1)

    def removed() -> list[int]:
        return [
            h
            for r in engine.events.received
            for ev in r.batch.events
            if isinstance(ev, BlockRemoved)
            for h in ev.block_hashes
        ]

    gone = eventually(removed, timeout_s=10, what="BlockRemoved after filling the cache")
    stored = {h for ev in _stored(engine) for h in ev.block_hashes}
    assert set(gone) <= stored


def test_replay_socket_resends_buffered_batches(engine: EngineUnderTest) -> None:
    eventually(lambda: engine.events.received, timeout_s=10, what="some events before replay")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    sock.connect(engine.replay_endpoint)
    try:
        sock.send_multipart([b"", encode_seq(0)])
        replayed = []
        while True:
            frames = sock.recv_multipart()
            seq_raw, payload = frames[-2], frames[-1]
            if seq_raw == REPLAY_END:
                break
            replayed.append((decode_seq(seq_raw), decode_batch(payload)))
    finally:
        sock.close(linger=0)
        ctx.term()
    assert [s for s, _ in replayed][:3] == [0, 1, 2][: len(replayed[:3])]
    assert len(replayed) >= 1


@pytest.mark.parametrize(
    ("path", "body", "raw", "status", "check"),
    [
        pytest.param(
            "/v1/completions", None, b"{bad", 400, lambda e: "JSON decode error" in e["message"], id="malformed-json"
        ),
        pytest.param(
            "/v1/completions",
            {"model": "nope", "prompt": "x"},
            None,
            404,
            lambda e: e["param"] == "model",
            id="unknown-model",
        ),
        pytest.param(
            "/v1/completions",
            {"model": SERVED, "prompt": "hello " * 3000, "max_tokens": 5},
            None,
            400,
            lambda e: "maximum context length" in e["message"],
            id="prompt-too-long",
        ),
        pytest.param(
            "/v1/completions",
            {"model": SERVED, "prompt": "x", "max_tokens": 5000},
            None,
            400,
            lambda e: "max_tokens" in e["message"],
            id="max-tokens-over-limit",
        ),
        pytest.param(
            "/v1/completions", {"model": SERVED}, None, 400, lambda e: "prompt" in e["message"], id="missing-prompt"
        ),
        pytest.param(
            "/v1/completions",
            {"model": SERVED, "prompt": "x", "max_tokens": "a"},
            None,
            400,
            lambda e: "max_tokens" in str(e["param"]),
            id="wrong-type",
        ),
        pytest.param(
            "/v1/chat/completions",
            {"model": SERVED},
            None,
            400,
            lambda e: "messages" in str(e["param"]),
            id="chat-without-messages",
        ),
    ],
)
def test_bad_requests_get_the_error_envelope(
    engine: EngineUnderTest, path: str, body: Any, raw: bytes | None, status: int, check: Callable[[dict], bool]
) -> None:
    got, out = post(f"{engine.url}{path}", body, raw=raw)
    assert got == status, out
    err = out["error"]
    assert set(err) >= {"message", "type", "param", "code"} and err["code"] == status
    assert check(err), err
