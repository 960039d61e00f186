"""Routing plugins, the registry and profiles: every scorer stays in [0, 1], profiles resolve through the
registry with clear errors, the pipeline enforces plugin order, and a weight of 0 means no vote."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headway.api.modelpool import ScorerWeights
from headway.gateway.endpoints import Endpoint
from headway.gateway.routing.blocks import DEFAULT_BLOCK_TOKENS, BlockSizes
from headway.gateway.routing.deps import PluginDeps
from headway.gateway.routing.pipeline import build_router
from headway.gateway.routing.profiles import PRESETS, PluginRef, preset
from headway.gateway.routing.registry import PLUGINS, ProfileError, build_plugin
from headway.gateway.routing.scorers.cost import CostScorer
from headway.gateway.routing.scorers.prefill_backlog import PrefillBacklogScorer
from headway.gateway.routing.scorers.prefix_cache import PrefixCacheScorer
from headway.gateway.routing.types import CycleState, RoutingRequest
from headway.kvcache.index import InMemoryIndex


def eps(n: int, **kw: Sequence[float]) -> list[Endpoint]:
    out = []
    for i in range(n):
        e = Endpoint(f"http://127.0.0.1:{8000 + i}")
        e.scraped_at = 1e18  # fresh for the routable filter
        for k, vals in kw.items():
            setattr(e, k, vals[i])
        out.append(e)
    return out


def deps(index: InMemoryIndex | None = None) -> PluginDeps:
    return PluginDeps(index=index or InMemoryIndex(), rng=random.Random(1), stale_after_s=1e9)


def profile(*refs: tuple[str, float] | str) -> tuple[PluginRef, ...]:
    return tuple(PluginRef(plugin=r) if isinstance(r, str) else PluginRef(plugin=r[0], weight=r[1]) for r in refs)


SCORERS = sorted(t for t, m in PLUGINS.items() if t.endswith("-scorer"))


@given(
    st.lists(
        st.tuples(st.floats(0, 1000), st.floats(-1, 2), st.integers(0, 500), st.integers(0, 10**6)),
        min_size=1,
        max_size=8,
    ),
    st.lists(st.one_of(st.none(), st.floats(0, 100)), min_size=8, max_size=8),
)
def test_every_registered_scorer_stays_in_unit_range(
    rows: list[tuple[float, float, int, int]], prices: list[float | None]
) -> None:
    endpoints = eps(
        len(rows),
        waiting=[r[0] for r in rows],
        kv_usage=[r[1] for r in rows],
        in_flight=[r[2] for r in rows],
        prefill_backlog=[r[3] for r in rows],
        cost_per_hour_usd=prices,
    )
    req, state = RoutingRequest("m", list(range(64))), CycleState()
    for plugin_type in SCORERS:
        scores = build_plugin(plugin_type, {}, deps(), where="test").score(req, endpoints, state)  # type: ignore[attr-defined]
        assert set(scores) == {e.id for e in endpoints}, plugin_type
        assert all(0.0 <= s <= 1.0 for s in scores.values()), (plugin_type, scores)


@pytest.mark.parametrize("plugin_type", SCORERS)
def test_every_scorer_is_neutral_when_all_endpoints_are_equal_and_empty_when_none(plugin_type: str) -> None:
    scorer = build_plugin(plugin_type, {}, deps(), where="test")
    req = RoutingRequest("m", list(range(40)))
    scores = scorer.score(req, eps(3), CycleState())  # type: ignore[attr-defined]
    assert len(set(scores.values())) == 1, scores
    assert scorer.score(req, [], CycleState()) == {}  # type: ignore[attr-defined]


@pytest.mark.parametrize("strategy", PRESETS)
def test_every_preset_ranks_all_routable_endpoints_and_handles_empty(strategy: str) -> None:
    router = build_router(strategy, preset(strategy, ScorerWeights()), deps())
    endpoints = eps(3)
    ranked = router.decide(RoutingRequest("m", [1, 2, 3]), endpoints).ranked
    assert sorted(e.id for e in ranked) == sorted(e.id for e in endpoints)
    assert router.decide(RoutingRequest("m", [1]), []).ranked == []


def test_unknown_strategy_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="kv-aware"):
        preset("fastest", ScorerWeights())


@pytest.mark.parametrize(
    ("refs", "message"),
    [
        pytest.param(
            [{"plugin": "fastest-scorer"}, {"plugin": "max-score-picker"}], "known: cost-scorer", id="unknown"
        ),
        pytest.param(
            [{"plugin": "load-bound-filter", "params": {"bound": 0.5}}, {"plugin": "max-score-picker"}],
            "load-bound-filter params.bound",
            id="bad-param",
        ),
        pytest.param(
            [{"plugin": "prefix-cache-scorer", "params": {"sourc": "events"}}, {"plugin": "max-score-picker"}],
            "params.sourc",
            id="unknown-param",
        ),
        pytest.param(
            [{"plugin": "prefill-backlog-scorer"}, {"plugin": "prefix-cache-scorer"}, {"plugin": "max-score-picker"}],
            "plugin 0 \\(prefill-backlog-scorer\\): needs cached-tokens",
            id="reader-before-writer",
        ),
        pytest.param([{"plugin": "queue-depth-scorer"}], "exactly one picker, has 0", id="no-picker"),
        pytest.param(
            [{"plugin": "random-picker"}, {"plugin": "max-score-picker"}], "exactly one picker, has 2", id="two-pickers"
        ),
        pytest.param(
            [{"plugin": "queue-depth-scorer"}, {"plugin": "queue-depth-scorer"}, {"plugin": "random-picker"}],
            "used twice",
            id="duplicate-name",
        ),
    ],
)
def test_bad_profiles_fail_at_build_naming_the_router_and_plugin(refs: list[dict], message: str) -> None:
    with pytest.raises(ProfileError, match=message) as err:
        build_router("mine", tuple(PluginRef.model_validate(r) for r in refs), deps())
    assert "'mine'" in str(err.value)


def test_a_weight_of_zero_removes_the_vote() -> None:
    busy, idle = eps(2, waiting=[3, 0])
    req = RoutingRequest("m", [1, 2])
    with_queue = build_router("p", preset("kv-aware", ScorerWeights()), deps()).decide(req, [busy, idle])
    assert "queue-depth-scorer" in with_queue.scores[busy.id]
    no_queue = build_router("p", preset("kv-aware", ScorerWeights(queue=0)), deps()).decide(req, [busy, idle])
    assert "queue-depth-scorer" not in no_queue.scores[busy.id]
    no_in_flight = build_router("p", preset("kv-aware", ScorerWeights(in_flight=0)), deps())
    assert "in-flight-scorer" not in no_in_flight.decide(req, [busy, idle]).scores[busy.id]


def test_a_zero_weight_provider_still_runs_for_the_plugin_that_needs_it() -> None:
    index = InMemoryIndex()
    holder, other = eps(2)
    tokens = list(range(160))
    index.store(holder.id, "m", list(range(10)), None, tokens, 16)
    router = build_router("p", preset("kv-aware", ScorerWeights(prefix=0)), deps(index))
    decision = router.decide(RoutingRequest("m", tokens), [holder, other])
    assert "prefix-cache-scorer" not in decision.scores[holder.id], "no vote at weight 0"
    assert decision.cached_tokens[holder.id] == 160, "but its cached tokens reach the backlog scorer"
    assert decision.scores[holder.id]["prefill-backlog-scorer"] > decision.scores[other.id]["prefill-backlog-scorer"]
    alone = build_router("p", profile(("prefix-cache-scorer", 0.0), "max-score-picker"), deps(index))
    assert alone.scorers == (), "with nobody needing it, a zero-weight scorer does not run"


def test_prefill_backlog_prices_the_cache_hit_against_the_work_queued_ahead() -> None:
    index = InMemoryIndex()
    holder, idle = eps(2)
    tokens = list(range(160))
    index.store(holder.id, "m", list(range(10)), None, tokens, 16)
    req, state = RoutingRequest("m", tokens), CycleState()
    PrefixCacheScorer(index, BlockSizes()).score(req, [holder, idle], state)
    assert state.cached_tokens == {holder.id: 160, idle.id: 0}
    backlog = PrefillBacklogScorer()
    scores = backlog.score(req, [holder, idle], state)
    assert scores[holder.id] == 1.0 and scores[idle.id] < 0.02
    holder.prefill_backlog = 500  # the holder is busy prefilling others: its hit no longer saves time
    scores = backlog.score(req, [holder, idle], state)
    assert scores[idle.id] == 1.0 and scores[holder.id] < 0.35


@pytest.mark.parametrize(
    ("prices", "expected"),
    [
        pytest.param([None, None], [1.0, 1.0], id="no-prices"),
        pytest.param([2.0, 4.0], [1.0, 0.5], id="half-price"),
        pytest.param([2.0, None], [1.0, 1.0], id="unknown-is-neutral"),
        pytest.param([0.0, 3.0], [1.0, 0.0], id="free-wins"),
        pytest.param([5.0, 5.0], [1.0, 1.0], id="all-equal"),
    ],
)
def test_cost_scorer_prefers_cheaper_variants(prices: list[float | None], expected: list[float]) -> None:
    endpoints = eps(2, cost_per_hour_usd=prices)
    scores = CostScorer().score(RoutingRequest("m", []), endpoints, CycleState())
    assert [scores[e.id] for e in endpoints] == expected


def test_round_robin_rotates_and_random_is_seeded() -> None:
    endpoints = eps(3)
    rr = build_router("rr", preset("round-robin", ScorerWeights()), deps())
    firsts = [rr.decide(RoutingRequest("m", []), endpoints).ranked[0].id for _ in range(6)]
    assert firsts == [e.id for e in endpoints] * 2
    a = build_router("r", preset("random", ScorerWeights()), deps()).decide(RoutingRequest("m", []), endpoints)
    b = build_router("r", preset("random", ScorerWeights()), deps()).decide(RoutingRequest("m", []), endpoints)
    assert [e.id for e in a.ranked] == [e.id for e in b.ranked]


def test_block_sizes_prefer_the_events_then_the_metric_then_the_default() -> None:
    a, b, c = eps(3)
    b.block_size = 32
    sizes = BlockSizes({a.id: 64})
    assert [sizes.of(e) for e in (a, b, c)] == [64, 32, DEFAULT_BLOCK_TOKENS]
    assert sizes.group([a, b, c]) == {64: [a], 32: [b], DEFAULT_BLOCK_TOKENS: [c]}


def test_the_prefix_scorer_reads_the_shared_index_in_its_prepare_step() -> None:
    """The Redis read belongs to the prefix scorer: `route` runs it before any scoring."""

    class SharedIndex:  # a stand-in for Redis (the real one is exercised in tests/e2e/test_gateway_redis.py)
        def __init__(self) -> None:
            self.asked: list[list[str]] = []

        async def longest_prefix(self, keys: Sequence[int], pods: Sequence[str]) -> dict[str, int]:
            self.asked.append(list(pods))
            return {pods[1]: len(keys)}

    shared = SharedIndex()
    router = build_router(
        "p",
        preset("kv-aware", ScorerWeights()),
        PluginDeps(shared=shared, rng=random.Random(1), stale_after_s=1e9),  # type: ignore[arg-type]
    )
    endpoints = eps(2)
    decision = asyncio.run(router.route(RoutingRequest("m", list(range(64))), endpoints))
    assert shared.asked == [[e.id for e in endpoints]]
    assert decision.ranked[0] is endpoints[1] and decision.cached_tokens[endpoints[1].id] == 64
