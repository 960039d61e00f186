"""One ModelRoute, compiled: signals → guard → rules by priority → objective over the rule's candidates
(with the bandit's learned quality and SLO overflow) → rollout. Pure: what the gateway knows of each
pool now comes in as `PoolState`, and every choice carries its reasons.

- Signals: keyword signals (substrings or regular expressions, any/all), the prompt's length in tokens,
  and the classifier's class, confidence and similarity to the nearest example.
- Guard: a prompt less similar than `guard.minSimilarity` to every example is out of domain: rejected
  (a 4xx error) or redirected to a named pool, before any rule.
- Rules: the first, by priority (ties in the listed order), whose conditions all hold; it rejects, or
  narrows the candidates. None matching: every candidate.
- Objective: score = wq·quality − wc·cost/(dearest cost) − ws·min(1, predicted TTFT / SLO). Quality is
  the prior (per class when given) or, with learning on, the bandit's estimate plus its exploration
  bonus. Then SLO overflow: a choice whose predicted TTFT breaks its SLO gives way to the best candidate
  whose does not.
- Rollout: shadow sends every request to the default pool and records the decision; percent acts on
  that share of requests.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from headway.api.modelroute import CandidateStatus, GatewayRouteStatus, KeywordSignal, ModelRouteSpec, Rule
from headway.gateway.modelrouting.bandit import LinUCB
from headway.gateway.modelrouting.classifier import Classified, NgramClassifier, held_out_accuracy

TOKEN_SCALE = math.log1p(100_000)
"""The token-length context feature is log(1 + tokens) over this: 0–1 for prompts up to 100k tokens."""


@dataclass(frozen=True, slots=True)
class PoolState:
    """What the gateway knows of a candidate pool at the moment of the decision."""

    ready: bool = True
    """It has endpoints that can take a request."""
    cost_per_1k_tokens: float | None = None
    predicted_ttft_s: float | None = None
    slo_ttft_s: float | None = None

    def risk(self) -> float | None:
        if self.predicted_ttft_s is None or not self.slo_ttft_s:
            return None
        return min(1.0, self.predicted_ttft_s / self.slo_ttft_s)

    def breaks_slo(self) -> bool:
        return self.predicted_ttft_s is not None and bool(self.slo_ttft_s) and self.predicted_ttft_s > self.slo_ttft_s


@dataclass(frozen=True, slots=True)
class Signals:
    tokens: int
    keywords: tuple[str, ...]
    """The keyword signals that matched."""
    classified: Classified | None = None

    def header(self) -> str:
        parts = [f"tokens={self.tokens}", f"keywords={','.join(self.keywords)}"]
        if self.classified is not None:
            c = self.classified
            parts += [f"class={c.label or ''}", f"confidence={c.confidence:.3f}", f"similarity={c.similarity:.3f}"]
        return ";".join(parts)


Action = Literal["route", "reject"]
Reason = Literal["rule", "default", "guard", "overflow"]


@dataclass(slots=True)
class Choice:
    pool: str | None
    """Where the request goes (None: rejected)."""
    decided: str | None
    """What the route decided, whether or not it acted on it (shadow, percent)."""
    rule: str | None
    reason: Reason
    signals: Signals
    acted: bool = True
    """False when rollout sent the request to the default pool instead of `decided`."""
    scores: dict[str, float] = field(default_factory=dict)
    message: str | None = None
    """A rejection's message."""
    context: np.ndarray | None = None
    """The bandit's context for the decided pool (for feedback)."""

    @property
    def rejected(self) -> bool:
        return self.pool is None


class _Keyword:
    def __init__(self, spec: KeywordSignal) -> None:
        self.name = spec.name
        self.case_sensitive = spec.case_sensitive
        self.all = spec.operator == "all"
        flags = 0 if spec.case_sensitive else re.IGNORECASE
        if spec.regex:
            self.patterns = [re.compile(p, flags) for p in spec.patterns]
        else:
            self.patterns = [re.compile(re.escape(p), flags) for p in spec.patterns]

    def matches(self, text: str) -> bool:
        hits = (p.search(text) is not None for p in self.patterns)
        return all(hits) if self.all else any(hits)


class CompiledRoute:
    def __init__(self, spec: ModelRouteSpec, *, rng: random.Random | None = None) -> None:
        self.spec = spec
        self.rng = rng or random.Random()  # noqa: S311 - canary sampling, not secrets
        self.keywords = [_Keyword(k) for k in spec.signals.keywords]
        clf = spec.signals.classifier
        self.examples = [(e.label, p) for e in clf.examples for p in e.prompts] if clf else []
        self.classifier = NgramClassifier(self.examples, min_confidence=clf.min_confidence) if clf else None
        self.labels = self.classifier.labels if self.classifier else []
        self.rules: list[Rule] = sorted(spec.rules, key=lambda r: -r.priority)  # stable: ties keep their order
        self.candidates = {c.pool: c for c in spec.candidates}
        self.arms = {
            c.pool: LinUCB(self._prior(c.pool), prior_weight=spec.learning.prior_weight, alpha=spec.learning.alpha)
            for c in spec.candidates
        }
        self.requests = dict.fromkeys(self.candidates, 0)
        self.guard_rejections = self.guard_redirects = self.rule_rejections = self.overflows = 0

    def held_out_accuracy(self) -> float | None:
        return held_out_accuracy(self.examples) if self.examples else None

    # ----- context and priors
    def _prior(self, pool: str) -> np.ndarray:
        """θ₀: the prior quality on the bias feature, each class's difference from it on its feature."""
        c = self.candidates[pool]
        theta = np.zeros(self.dimensions)
        theta[0] = c.quality
        for i, label in enumerate(self.labels):
            if label in c.quality_by_class:
                theta[1 + i] = c.quality_by_class[label] - c.quality
        return theta

    @property
    def dimensions(self) -> int:
        return 2 + len(self.labels)

    def context(self, signals: Signals) -> np.ndarray:
        """[1, one-hot of the prompt's class, log-scaled length]."""
        x = np.zeros(self.dimensions)
        x[0] = 1.0
        if signals.classified is not None and signals.classified.label is not None:
            x[1 + self.labels.index(signals.classified.label)] = 1.0
        x[-1] = min(1.0, math.log1p(signals.tokens) / TOKEN_SCALE)
        return x

    # ----- the decision
    def signals(self, text: str, tokens: int, classify_text: str | None = None) -> Signals:
        matched = tuple(k.name for k in self.keywords if k.matches(text))
        classified = None
        if self.classifier is not None:
            classified = self.classifier.classify(classify_text if classify_text is not None else text)
        return Signals(tokens, matched, classified)

    def rule_for(self, s: Signals) -> Rule | None:
        label = s.classified.label if s.classified is not None else None
        for r in self.rules:
            w = r.when
            if any(k not in s.keywords for k in w.keywords) or any(k in s.keywords for k in w.not_keywords):
                continue
            if w.classes and label not in w.classes:
                continue
            if (w.min_tokens is not None and s.tokens < w.min_tokens) or (
                w.max_tokens is not None and s.tokens > w.max_tokens
            ):
                continue
            return r
        return None

    def quality(self, pool: str, x: np.ndarray) -> float:
        arm = self.arms[pool]
        q = arm.estimate(x)
        return q + arm.bound(x) if self.spec.learning.enabled else q

    def score(self, pools: list[str], x: np.ndarray, states: Mapping[str, PoolState]) -> dict[str, float]:
        o = self.spec.objective
        costs = {p: self._cost(p, states) for p in pools}
        dearest = max((c for c in costs.values() if c is not None), default=0.0)
        out = {}
        for p in pools:
            s = o.quality_weight * self.quality(p, x)
            if o.cost_weight and dearest > 0 and costs[p] is not None:
                s -= o.cost_weight * costs[p] / dearest
            risk = states[p].risk() if p in states else None
            if o.slo_weight and risk is not None:
                s -= o.slo_weight * risk
            out[p] = s
        return out

    def _cost(self, pool: str, states: Mapping[str, PoolState]) -> float | None:
        declared = self.candidates[pool].cost_per_1k_tokens
        if declared is not None:
            return declared
        state = states.get(pool)
        return state.cost_per_1k_tokens if state is not None else None

    def decide(
        self,
        text: str,
        tokens: int,
        states: Mapping[str, PoolState],
        *,
        classify_text: str | None = None,
    ) -> Choice:
        s = self.signals(text, tokens, classify_text)
        choice = self._decide(s, states)
        rollout = self.spec.rollout
        act = rollout.mode == "active" or (rollout.mode == "percent" and self.rng.random() * 100 < rollout.percent)
        if not act:
            choice.acted = False
            choice.pool = self.spec.default_pool
        if choice.pool is not None:
            self.requests[choice.pool] = self.requests.get(choice.pool, 0) + 1
        return choice

    def _decide(self, s: Signals, states: Mapping[str, PoolState]) -> Choice:
        guard = self.spec.guard
        if guard is not None and s.classified is not None and s.classified.similarity < guard.min_similarity:
            if guard.action == "reject":
                self.guard_rejections += 1
                return Choice(None, None, None, "guard", s, message=guard.message)
            self.guard_redirects += 1
            return Choice(guard.redirect_to, guard.redirect_to, None, "guard", s)
        rule = self.rule_for(s)
        if rule is not None and rule.action == "reject":
            self.rule_rejections += 1
            return Choice(None, None, rule.name, "rule", s, message=rule.message or f"rejected by rule {rule.name}")
        pools = (rule.candidates if rule is not None and rule.candidates else None) or list(self.candidates)
        ready = [p for p in pools if p not in states or states[p].ready]
        pools = ready or pools  # none ready: choose anyway, the request waits for its pool
        x = self.context(s)
        scores = self.score(pools, x, states)
        best = max(pools, key=lambda p: scores[p])  # ties: the first listed
        reason: Reason = "rule" if rule is not None else "default"
        if self.spec.objective.slo_overflow and best in states and states[best].breaks_slo():
            keeping = [p for p in pools if p in states and states[p].ready and not states[p].breaks_slo()]
            if keeping:
                best = max(keeping, key=lambda p: scores[p])
                reason = "overflow"
                self.overflows += 1
        return Choice(best, best, rule.name if rule else None, reason, s, scores=scores, context=x)

    def reward_estimate(self, pool: str) -> float:
        """The candidate's quality without context: its prior as `priorWeight` rewards, averaged with
        the feedback it received."""
        arm, w = self.arms[pool], self.spec.learning.prior_weight
        return (w * self.candidates[pool].quality + arm.reward_sum) / (w + arm.updates)

    def status(self, name: str, now: dt.datetime) -> GatewayRouteStatus:
        """This replica's traffic through the route, for the route's status."""
        total = sum(self.requests.values())
        return GatewayRouteStatus(
            name=name,
            time=now,
            requests=total,
            candidates=[
                CandidateStatus(
                    pool=pool,
                    requests=n,
                    share=round(n / total, 4) if total else 0.0,
                    reward_estimate=round(self.reward_estimate(pool), 4) if pool in self.arms else None,
                    feedback=self.arms[pool].updates if pool in self.arms else 0,
                )
                for pool, n in self.requests.items()
            ],
            guard_rejections=self.guard_rejections,
            guard_redirects=self.guard_redirects,
            rule_rejections=self.rule_rejections,
            overflows=self.overflows,
        )

    def feedback(self, pool: str, x: np.ndarray, reward: float) -> None:
        """A reward (0–1) for a request the route sent to `pool` in context `x`."""
        self.arms[pool].update(x, reward)
