"""The KV index: engine events in, longest cached prefix per pod out; removal, clearing, speculation, bound."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from headway.kvcache.index import InMemoryIndex
from headway.kvcache.keys import block_keys, chain, root_key

BS = 4
TOKENS = list(range(100, 124))  # 6 blocks
ROOT = root_key("m")


def store_all(
    index: InMemoryIndex, pod: str, tokens: list[int], hashes: list[int], parent: int | None = None, offset: int = 0
) -> int:
    return index.store(pod, "m", hashes, parent, tokens[offset * BS : (offset + len(hashes)) * BS], BS)


def test_events_index_the_prompt_and_lookup_finds_the_longest_prefix() -> None:
    idx = InMemoryIndex()
    assert store_all(idx, "a", TOKENS, [11, 12, 13]) == 3
    assert store_all(idx, "a", TOKENS, [14, 15], parent=13, offset=3) == 2  # chained through the engine hash
    assert store_all(idx, "b", TOKENS, [21, 22]) == 2
    keys = block_keys(TOKENS, BS, ROOT)
    assert idx.longest_prefix(keys, ["a", "b", "c"]) == {"a": 5, "b": 2, "c": 0}


def test_keys_are_the_same_whatever_the_engine_hashes() -> None:
    idx = InMemoryIndex()
    store_all(idx, "a", TOKENS, [1, 2])
    store_all(idx, "b", TOKENS, [999, 998])
    assert idx.longest_prefix(block_keys(TOKENS, BS, ROOT), ["a", "b"]) == {"a": 2, "b": 2}


def test_unknown_parent_is_not_guessed() -> None:
    idx = InMemoryIndex()
    assert store_all(idx, "a", TOKENS, [5, 6], parent=77, offset=2) == 0
    assert len(idx) == 0


def test_block_removed_and_all_cleared_and_pod_gone() -> None:
    idx = InMemoryIndex()
    store_all(idx, "a", TOKENS, [11, 12, 13])
    store_all(idx, "b", TOKENS, [21, 22, 23])
    keys = block_keys(TOKENS, BS, ROOT)
    assert idx.remove("a", [12]) == 1
    assert idx.longest_prefix(keys, ["a", "b"]) == {"a": 1, "b": 3}  # a's prefix breaks at its hole
    idx.clear_pod("b")
    assert idx.longest_prefix(keys, ["a", "b"]) == {"a": 1, "b": 0}
    assert idx.pods() == {"a"}


def test_speculative_entries_expire_and_never_downgrade_engine_truth() -> None:
    now = [0.0]
    idx = InMemoryIndex(clock=lambda: now[0])
    keys = block_keys(TOKENS, BS, ROOT)
    idx.speculate("a", keys[:3], ttl_s=2.0)
    store_all(idx, "b", TOKENS, [1])
    idx.speculate("b", keys[:3], ttl_s=2.0)
    assert idx.longest_prefix(keys, ["a", "b"]) == {"a": 3, "b": 3}
    now[0] = 5.0
    assert idx.longest_prefix(keys, ["a", "b"]) == {"a": 0, "b": 1}


def test_lora_blocks_do_not_match_the_base_model() -> None:
    idx = InMemoryIndex()
    idx.store("a", "m", [1, 2], None, TOKENS[:8], BS, lora_name="sql")
    assert idx.longest_prefix(block_keys(TOKENS, BS, ROOT), ["a"]) == {"a": 0}
    assert idx.longest_prefix(block_keys(TOKENS, BS, root_key("m", "sql")), ["a"]) == {"a": 2}


def test_index_is_bounded_by_evicting_least_recently_used_keys() -> None:
    idx = InMemoryIndex(max_keys=4)
    store_all(idx, "a", TOKENS, [1, 2, 3, 4, 5, 6])
    assert len(idx) == 4 and idx.evicted_keys == 2


@given(
    st.lists(st.integers(0, 2**32 - 1), max_size=200),
    st.sampled_from([1, 4, 16]),
    st.one_of(st.none(), st.integers(0, 20)),
)
def test_block_keys_are_the_chain_of_each_full_block(tokens: list[int], size: int, limit: int | None) -> None:
    root = root_key("m")
    expected, parent = [], root
    for i in range(len(tokens) // size):
        parent = chain(parent, tokens[i * size : (i + 1) * size])
        expected.append(parent)
    assert block_keys(tokens, size, root, limit_blocks=limit) == expected[:limit]


@given(
    st.lists(st.lists(st.sampled_from(["a", "b", "c"]), max_size=3), max_size=12),
    st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=4),
)
def test_longest_prefix_is_each_pods_run_of_leading_held_blocks(held: list[list[str]], asked: list[str]) -> None:
    """Against the definition: for each pod, how many keys from the first it holds without a gap."""
    index, keys = InMemoryIndex(), list(range(1, len(held) + 1))
    for key, pods in zip(keys, held, strict=True):
        for pod in pods:
            index.speculate(pod, [key], 60.0)
    got = index.longest_prefix(keys, asked)
    for pod in asked:
        run = 0
        while run < len(keys) and pod in held[run]:
            run += 1
        assert got[pod] == run, (pod, held)
