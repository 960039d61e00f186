"""Model routing's core: the ModelRoute schema and its checks, the signals, rules by priority, the guard,
the objective (quality, cost, SLO risk), SLO overflow, the bandit fed by feedback, and rollout."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from bench._routing_quality import load_labels
from headway.api.crd import MODELROUTE, build_crd, render
from headway.api.modelroute import ModelRouteSpec
from headway.devenv.paths import REPO_ROOT
from headway.gateway.modelrouting.bandit import LinUCB
from headway.gateway.modelrouting.classifier import NgramClassifier, held_out_accuracy
from headway.gateway.modelrouting.router import CompiledRoute, PoolState

MMLU = REPO_ROOT.parent / "shared" / "datasets" / "routellm-mmlu"
MATH = [
    "solve the equation 3x + 5 = 20 for x",
    "what is the derivative of x squared times sine x",
    "compute the integral of 1/x from 1 to e",
    "factor the polynomial x^2 - 5x + 6",
    "find the eigenvalues of the matrix [[2, 1], [1, 2]]",
    "how many prime numbers are there below 100",
]
COOKING = [
    "how long should I roast a chicken at 200 degrees",
    "what can I use instead of butter when baking cookies",
    "give me a recipe for tomato soup with basil",
    "how do I make fresh pasta dough by hand",
    "why did my bread not rise in the oven",
    "which spices go well with roasted carrots",
]


def spec(**over: Any) -> ModelRouteSpec:
    body: dict[str, Any] = {
        "model": "auto",
        "candidates": [{"pool": "small", "quality": 0.6}, {"pool": "large", "quality": 0.9}],
    }
    body.update(over)
    return ModelRouteSpec.model_validate(body)


# ----- the schema


@pytest.mark.parametrize(
    ("over", "names"),
    [
        ({"candidates": []}, "candidates"),
        ({"rules": [{"name": "a"}, {"name": "a"}]}, "rules: duplicate names ['a']"),
        ({"rules": [{"name": "a", "candidates": ["nope"]}]}, "rules[0] (a).candidates: ['nope']"),
        (
            {"signals": {"keywords": [{"name": "k", "patterns": ["(unclosed"], "regex": True}]}},
            "patterns[0]: not a regular expression",
        ),
        ({"rules": [{"name": "a", "when": {"keywords": ["missing"]}}]}, "keywords ['missing']"),
        ({"rules": [{"name": "a", "when": {"classes": ["math"]}}]}, "when.classes: ['math']"),
        ({"rules": [{"name": "a", "when": {"minTokens": 10, "maxTokens": 5}}]}, "minTokens above maxTokens"),
        ({"guard": {"minSimilarity": 0.1}}, "guard: set spec.signals.classifier"),
        ({"rollout": {"defaultPool": "other"}}, "rollout.defaultPool"),
        ({"candidates": [{"pool": "Bad_Name"}]}, "candidates.0.pool"),
    ],
)
def test_an_invalid_route_is_refused_naming_the_field(over: dict[str, Any], names: str) -> None:
    with pytest.raises(ValidationError) as e:
        spec(**over)
    assert names in str(e.value)


def test_the_committed_modelroute_crd_is_the_generated_one() -> None:
    committed = (REPO_ROOT / "deploy" / "crds" / MODELROUTE.file).read_text()
    hint = f"run: python -m headway.api.crd modelroutes > deploy/crds/{MODELROUTE.file}"
    assert committed == render(MODELROUTE), hint


def test_the_crd_makes_keyed_lists_maps_and_defaults_empty_lists() -> None:
    schema = build_crd(MODELROUTE)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    props = schema["properties"]
    assert props["candidates"]["x-kubernetes-list-map-keys"] == ["pool"]
    assert props["rules"]["x-kubernetes-list-map-keys"] == ["name"]
    assert props["rules"]["default"] == []
    assert props["rules"]["items"]["properties"]["when"]["properties"]["keywords"]["default"] == []
    assert any(r.get("fieldPath") == ".rules" for r in schema["x-kubernetes-validations"])
    yaml.safe_load(render(MODELROUTE))  # valid YAML


# ----- signals and rules


def route(**over: Any) -> CompiledRoute:
    return CompiledRoute(spec(**over), rng=random.Random(7))


def test_keyword_rules_match_substrings_regexes_and_all_of() -> None:
    r = route(
        signals={
            "keywords": [
                {"name": "code", "patterns": ["def ", "```"]},
                {"name": "secret", "patterns": [r"api[_-]?key\s*=", r"password"], "regex": True},
                {"name": "both", "patterns": ["alpha", "beta"], "operator": "all", "caseSensitive": True},
            ]
        },
        rules=[
            {"name": "code", "when": {"keywords": ["code"]}, "candidates": ["large"]},
            {"name": "secrets", "priority": 10, "when": {"keywords": ["secret"]}, "action": "reject"},
            {"name": "both", "when": {"keywords": ["both"]}, "candidates": ["small"]},
        ],
    )
    c = r.decide("please fix: DEF f(): pass", 10, {})
    assert (c.pool, c.rule, c.reason) == ("large", "code", "rule")
    assert c.signals.keywords == ("code",)
    rejected = r.decide("my API_KEY = abc and def x", 10, {})
    assert rejected.rejected and rejected.rule == "secrets" and "secrets" in (rejected.message or "")
    assert r.decide("alpha and beta", 5, {}).rule == "both"
    assert r.decide("Alpha and beta", 5, {}).rule is None  # case-sensitive: no match, the default decides


def test_length_rules_and_priority_order() -> None:
    r = route(
        rules=[
            {"name": "long", "when": {"minTokens": 1000}, "candidates": ["large"]},
            {"name": "short", "when": {"maxTokens": 50}, "candidates": ["small"]},
            {"name": "very-long", "priority": 5, "when": {"minTokens": 5000}, "candidates": ["small"]},
        ]
    )
    assert r.decide("x", 20, {}).pool == "small"
    assert r.decide("x", 2000, {}).pool == "large"
    assert r.decide("x", 9000, {}).rule == "very-long"  # higher priority first, though listed last
    middle = r.decide("x", 200, {})
    assert middle.rule is None and middle.reason == "default" and middle.pool == "large"  # higher prior quality


def classifier_route(**over: Any) -> CompiledRoute:
    return route(
        signals={
            "classifier": {
                "examples": [{"label": "math", "prompts": MATH}, {"label": "cooking", "prompts": COOKING}],
            }
        },
        **over,
    )


def test_classifier_rules_route_by_class() -> None:
    r = classifier_route(rules=[{"name": "math", "when": {"classes": ["math"]}, "candidates": ["large"]}])
    c = r.decide("solve for x: 2x - 4 = 10, show the equation steps", 15, {})
    assert c.signals.classified is not None and c.signals.classified.label == "math"
    assert c.rule == "math" and c.pool == "large"
    other = r.decide("how long do I bake bread dough in the oven", 12, {})
    assert other.signals.classified is not None and other.signals.classified.label == "cooking"
    assert other.rule is None


def test_the_guard_rejects_or_redirects_out_of_domain_prompts() -> None:
    r = classifier_route(guard={"minSimilarity": 0.15, "message": "math and cooking only"})
    off = r.decide("who won the football world cup in 1998", 10, {})
    assert off.rejected and off.reason == "guard" and off.message == "math and cooking only"
    assert off.signals.classified is not None and off.signals.classified.similarity < 0.15
    on = r.decide("factor the polynomial x^2 + 7x + 12", 10, {})
    assert not on.rejected
    redirect = classifier_route(guard={"minSimilarity": 0.15, "action": "redirect", "redirectTo": "small"})
    moved = redirect.decide("who won the football world cup in 1998", 10, {})
    assert (moved.pool, moved.reason) == ("small", "guard")
    assert redirect.guard_redirects == 1


def test_the_classifier_is_accurate_on_held_out_examples_and_says_when_it_cannot_tell() -> None:
    subjects = ["high_school_biology", "professional_law", "philosophy", "elementary_mathematics"]
    examples = [(s, r.prompt) for s in subjects for r in load_labels(MMLU / f"mmlu_{s}.csv")[1][:30]]
    acc = held_out_accuracy(examples)
    assert acc is not None and acc >= 0.75  # 30 real questions a subject, 5-fold
    examples = [("math", p) for p in MATH] + [("cooking", p) for p in COOKING]
    assert held_out_accuracy([("a", "one"), ("b", "two")]) is None  # one example a class: nothing to hold out
    sure = NgramClassifier(examples, min_confidence=0.99).classify("hello")
    assert sure.label is None and sure.best in ("math", "cooking")
    typo = NgramClassifier(examples).classify("integrl of the polynomal derivativ")
    assert typo.best == "math"  # character n-grams survive misspellings


# ----- objective, overflow, rollout


def test_the_cost_weight_trades_quality_for_price() -> None:
    costs = {"small": PoolState(cost_per_1k_tokens=0.1), "large": PoolState(cost_per_1k_tokens=1.0)}
    assert route().decide("x", 5, costs).pool == "large"
    cheap = route(objective={"costWeight": 0.5})  # 0.9 - 0.5 < 0.6 - 0.05
    c = cheap.decide("x", 5, costs)
    assert c.pool == "small" and c.scores["small"] == pytest.approx(0.55) and c.scores["large"] == pytest.approx(0.4)
    declared = route(
        candidates=[{"pool": "small", "quality": 0.6, "costPer1kTokens": 2.0}, {"pool": "large", "quality": 0.9}],
        objective={"costWeight": 0.5},
    )
    assert declared.decide("x", 5, costs).pool == "large"  # the declared price outranks the measured one


def test_slo_overflow_moves_requests_off_a_pool_that_would_break_its_slo() -> None:
    r = route()
    hot = {
        "large": PoolState(predicted_ttft_s=2.0, slo_ttft_s=0.5),
        "small": PoolState(predicted_ttft_s=0.1, slo_ttft_s=0.5),
    }
    c = r.decide("x", 5, hot)
    assert (c.pool, c.reason) == ("small", "overflow") and r.overflows == 1
    both_hot = {**hot, "small": PoolState(predicted_ttft_s=1.0, slo_ttft_s=0.5)}
    assert r.decide("x", 5, both_hot).pool == "large"  # nowhere better: keep the choice
    off = route(objective={"sloOverflow": False})
    assert off.decide("x", 5, hot).pool == "large"
    weighted = route(objective={"sloWeight": 1.0, "sloOverflow": False})
    assert weighted.decide("x", 5, hot).pool == "small"  # 0.9 - 1 < 0.6 - 0.2


def test_a_pool_without_ready_endpoints_is_passed_over_while_another_is_ready() -> None:
    r = route()
    assert r.decide("x", 5, {"large": PoolState(ready=False)}).pool == "small"
    assert r.decide("x", 5, {"large": PoolState(ready=False), "small": PoolState(ready=False)}).pool == "large"


def test_feedback_shifts_the_bandits_choice() -> None:
    r = classifier_route(learning={"enabled": True, "alpha": 0.0, "priorWeight": 2.0})
    c = r.decide("how do I make pizza dough", 8, {})
    assert c.pool == "large" and c.context is not None
    for _ in range(20):  # the large pool keeps disappointing on cooking prompts
        r.feedback("large", c.context, 0.0)
    after = r.decide("how do I make pizza dough", 8, {})
    assert after.pool == "small"
    assert after.scores["large"] < after.scores["small"]
    math_q = r.decide("solve the equation 2x = 8", 8, {})
    assert math_q.scores["large"] > after.scores["large"] + 0.2  # another class keeps more of its prior


def test_without_learning_feedback_leaves_quality_at_the_priors_and_no_bonus() -> None:
    r = route()
    c = r.decide("x", 5, {})
    assert c.scores == {"small": pytest.approx(0.6), "large": pytest.approx(0.9)}


def test_shadow_mode_records_the_decision_but_sends_to_the_default_pool() -> None:
    r = route(rules=[{"name": "all-large", "candidates": ["large"]}], rollout={"mode": "shadow"})
    c = r.decide("x", 5, {})
    assert (c.pool, c.decided, c.acted, c.rule) == ("small", "large", False, "all-large")
    rejecting = route(rules=[{"name": "no", "action": "reject"}], rollout={"mode": "shadow"})
    shadowed = rejecting.decide("x", 5, {})
    assert shadowed.pool == "small" and shadowed.decided is None and shadowed.rule == "no"


def test_percent_rollout_acts_on_that_share() -> None:
    r = route(rules=[{"name": "all-large", "candidates": ["large"]}], rollout={"mode": "percent", "percent": 25})
    pools = [r.decide("x", 5, {}).pool for _ in range(2000)]
    assert 0.2 < pools.count("large") / len(pools) < 0.3
    assert r.requests["large"] + r.requests["small"] == 2000


# ----- the bandit


def test_linucb_starts_at_its_prior_and_keeps_an_exact_inverse() -> None:
    prior = np.array([0.7, 0.1, 0.0])
    arm = LinUCB(prior, prior_weight=4.0, alpha=0.5)
    x = np.array([1.0, 1.0, 0.3])
    assert arm.estimate(x) == pytest.approx(0.8)
    rng = np.random.default_rng(0)
    a = 4.0 * np.eye(3)
    for _ in range(30):
        v = rng.random(3)
        arm.update(v, 1.0)
        a += np.outer(v, v)
    np.testing.assert_allclose(arm.a_inv, np.linalg.inv(a), rtol=1e-9, atol=1e-12)
    assert arm.bound(x) < 0.5 * np.sqrt(x @ x / 4.0)  # less uncertain after feedback


def test_the_sample_route_is_valid_and_routes_as_its_comments_say() -> None:
    body = yaml.safe_load((REPO_ROOT / "deploy" / "samples" / "modelroute.yaml").read_text())
    r = CompiledRoute(ModelRouteSpec.model_validate(body["spec"]), rng=random.Random(1))
    assert r.decide("please fix\n```python\ndef f(): pass\n```", 30, {}).pool == "code"
    assert r.decide("my api_key: 123, what should I cook for dinner", 12, {}).rejected
    assert r.decide("solve the equation 2x + 3 = 9 for x", 12, {}).rule == "maths"


def test_the_replicas_status_entry_counts_its_traffic_and_estimates_rewards() -> None:
    import datetime as dt

    r = classifier_route(
        learning={"enabled": True, "alpha": 0.0, "priorWeight": 2.0},
        guard={"minSimilarity": 0.15},
        rules=[{"name": "no", "when": {"keywords": []}, "priority": -1, "action": "route"}],
    )
    c = r.decide("what is the derivative of x squared", 8, {})
    r.decide("who won the football world cup in 1998", 8, {})
    assert c.context is not None
    r.feedback(c.pool, c.context, 0.0)
    st = r.status("gw-0", dt.datetime(2026, 12, 7, tzinfo=dt.UTC))
    assert (st.name, st.requests, st.guard_rejections) == ("gw-0", 1, 1)
    by_pool = {s.pool: s for s in st.candidates or []}
    assert set(by_pool) == {"small", "large"} and c.pool == "large"
    assert (by_pool["large"].requests, by_pool["large"].share, by_pool["large"].feedback) == (1, 1.0, 1)
    assert by_pool["large"].reward_estimate == pytest.approx(2 * 0.9 / 3)  # prior 0.9 as 2 rewards, then a 0
    assert (by_pool["small"].requests, by_pool["small"].reward_estimate) == (0, pytest.approx(0.6))
