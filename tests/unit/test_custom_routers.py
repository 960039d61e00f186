"""Custom routers (`headway gateway --router`) and the published policies re-implemented in bench/anchors:
loading fails naming the spec; each anchor behaves as its source describes."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bench.anchors import aibrix_prefix_cache, kubeai_chwbl, llmd_precise
from headway.gateway.endpoints import Endpoint
from headway.gateway.openai import parse_routing_fields, prompt_texts
from headway.gateway.routing.blocks import BlockSizes
from headway.gateway.routing.custom import RouterContext, parse_router_specs
from headway.gateway.routing.profiles import PRESETS
from headway.gateway.routing.types import RoutingRequest
from headway.kvcache.index import InMemoryIndex

ANCHORS = Path(llmd_precise.__file__).parent


def ctx(index: InMemoryIndex | None = None) -> RouterContext:
    return RouterContext(
        index=InMemoryIndex() if index is None else index, block_sizes=BlockSizes(), rng=random.Random(7)
    )


def endpoints(n: int) -> list[Endpoint]:
    return [Endpoint(f"http://127.0.0.1:{9000 + i}") for i in range(n)]


def test_router_specs_load_from_a_file_or_a_module() -> None:
    found = parse_router_specs(
        [f"chwbl={ANCHORS / 'kubeai_chwbl.py'}:make", "precise=bench.anchors.llmd_precise:make"], PRESETS
    )
    assert set(found) == {"chwbl", "precise"}
    assert found["chwbl"](ctx()).decide(RoutingRequest("m", [1]), endpoints(2)).ranked


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param("nameonly", "expected NAME=", id="no-target"),
        pytest.param("x=/nonexistent/router.py:make", "no file", id="missing-file"),
        pytest.param("x=headway.no_such_module:make", "cannot import", id="missing-module"),
        pytest.param("x=bench.anchors.llmd_precise:nothing", "no callable 'nothing'", id="missing-factory"),
        pytest.param("kv-aware=bench.anchors.llmd_precise:make", "already taken", id="preset-name"),
    ],
)
def test_bad_router_specs_fail_naming_the_spec(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        parse_router_specs([spec], PRESETS)
    assert spec in str(err.value)


def test_prompt_texts_give_the_whole_prompt_and_the_first_user_message() -> None:
    chat = parse_routing_fields(
        b'{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"},'
        b'{"role":"user","content":[{"type":"text","text":"again"}]}]}',
        chat=True,
    )
    assert prompt_texts(chat) == ("be brief\nhi\nagain", "hi")
    assert prompt_texts(parse_routing_fields(b'{"model":"m","prompt":"abc"}', chat=False)) == ("abc", "abc")
    assert prompt_texts(parse_routing_fields(b'{"model":"m","prompt":[1,2]}', chat=False)) == ("", "")


def test_chwbl_keeps_a_prefix_on_one_endpoint_until_it_exceeds_the_load_bound() -> None:
    router, eps = kubeai_chwbl.make(ctx()), endpoints(4)
    req = RoutingRequest("m", [], "x" * 300, "system prompt shared by a group " * 5)
    home = router.decide(req, eps).ranked[0]
    assert all(router.decide(req, eps).ranked[0] is home for _ in range(5))
    other = RoutingRequest("m", [], "", "a different user " * 10)
    homes = {router.decide(RoutingRequest("m", [], "", f"user {i} " * 20), eps).ranked[0].id for i in range(40)}
    assert len(homes) == 4, "the ring spreads distinct prefixes over every endpoint"
    home.in_flight = 10  # total 10 over 4 endpoints: bound 1.25 × 11 / 4 = 3.4
    moved = router.decide(req, eps).ranked[0]
    assert moved is not home and moved.in_flight <= kubeai_chwbl.LOAD_FACTOR * 11 / 4
    assert router.decide(other, eps).ranked


def test_aibrix_learns_from_its_own_choices_and_falls_back_when_imbalanced() -> None:
    router, eps = aibrix_prefix_cache.make(ctx()), endpoints(3)
    text = "the system prompt of group seven " * 20
    req = RoutingRequest("m", [], text, text)
    first = router.decide(req, eps).ranked[0]
    router.routed(req, first)
    assert router.decide(req, eps).ranked[0] is first, "the optimistic table sends the prefix back"
    first.in_flight = aibrix_prefix_cache.IMBALANCE_ABS_COUNT + 1
    assert router.decide(req, eps).ranked[0].in_flight == 0, "imbalance beats the cached prefix"
    assert aibrix_prefix_cache.block_hashes("x" * 127) == []


def test_llmd_precise_prefers_the_event_holder_and_weighs_queue_and_kv_usage() -> None:
    index = InMemoryIndex()
    router, eps = llmd_precise.make(ctx(index)), endpoints(3)
    req = RoutingRequest("m", list(range(64)))
    index.store(eps[2].id, "m", [101, 102, 103, 104], None, list(range(64)), 16)
    decision = router.decide(req, eps)
    assert decision.ranked[0] is eps[2]
    assert decision.scores[eps[2].id] == {"prefix": 3.0, "queue": 2.0, "kv_utilization": 2.0}
    eps[2].waiting, eps[2].kv_usage = 10, 1.0  # 3 for the prefix < 2 + 2 for an idle empty engine
    assert router.decide(req, eps).ranked[0] is not eps[2]
    assert router.speculative is False


def test_a_factory_that_returns_no_router_fails_at_build_naming_the_spec(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "class Plain:\n    def decide(self, request, endpoints): ...\n\ndef make(ctx):\n    return Plain()\n"
    )
    spec = f"plain={bad}:make"
    factory = parse_router_specs([spec], PRESETS)["plain"]
    with pytest.raises(ValueError, match="not a Router") as err:
        factory(ctx())
    assert spec in str(err.value)


def test_a_custom_router_can_compose_in_tree_plugins_through_a_profile() -> None:
    from headway.gateway.routing.profiles import PluginRef

    router = ctx().build("mine", (PluginRef(plugin="routable-filter"), PluginRef(plugin="round-robin-picker")))
    eps3 = endpoints(3)
    for e in eps3:
        e.scraped_at = 1e18
    firsts = [router.decide(RoutingRequest("m", []), eps3).ranked[0].id for _ in range(3)]
    assert firsts == [e.id for e in eps3]
