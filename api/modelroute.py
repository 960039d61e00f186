"""The ModelRoute resource (inference.headway.dev/v1alpha1): which ModelPool serves a request sent to a
virtual model name — the one definition of its schema and defaults.

Clients send `model: <spec.model>` (e.g. `auto`); the gateway works out the request's signals (keyword
and regex matches, prompt length in tokens, the class a classifier trained on the resource's own example
prompts gives it), applies the guard (out-of-domain prompts are rejected or redirected), takes the first
rule by priority whose conditions hold, and picks among that rule's candidate pools by the objective
(quality, cost per 1k tokens, SLO risk), learning quality online from feedback when asked. Rules read as
the resource reads: no hidden model decides.

As for ModelPool, the CRD's schema is generated from these models (`headway.api.crd`) and the rules are
checked twice: by the API server (OpenAPI bounds, list-map keys, CEL) and by pydantic when a component
reads a route; regular expressions and pool names, which CEL cannot check, by pydantic and the
operator's admission webhook.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from headway.api.camel import CAMEL_CASE
from headway.api.labels import GROUP
from headway.api.modelpool import MAX_NAME_LENGTH, VERSION, _cel
from headway.api.status import Condition, Timestamp, _list_map, _Status

_EMPTY: dict[str, Any] = {"default": []}
"""An omitted list is defaulted to [] by the API server too, so CEL rules can read it without has()."""

KIND = "ModelRoute"
PLURAL = "modelroutes"
SHORT_NAMES = ("mr",)
API_VERSION = f"{GROUP}/{VERSION}"
POOL_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
SIGNAL_NAME = r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$"
MAX_EXAMPLE_CHARS = 4096


class _Spec(BaseModel):
    model_config = CAMEL_CASE


class Candidate(_Spec):
    """A ModelPool (same namespace) the route may send requests to, with what is believed of its quality
    before any feedback."""

    pool: str = Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=POOL_NAME, description="ModelPool name.")
    quality: float = Field(0.5, ge=0, le=1, description="Prior quality (0–1): the share of answers expected good.")
    quality_by_class: dict[str, float] = Field(
        default_factory=dict,
        max_length=32,
        description="Prior quality for prompts the classifier puts in a class (class → 0–1); others use quality.",
    )
    cost_per_1k_tokens: float | None = Field(
        None,
        ge=0,
        validation_alias="costPer1kTokens",
        serialization_alias="costPer1kTokens",
        description="Price per 1k tokens; default: the pool's replica price over its measured tokens per second.",
    )

    @field_validator("quality_by_class")
    @classmethod
    def _unit(cls, v: dict[str, float]) -> dict[str, float]:
        bad = sorted(k for k, q in v.items() if not 0 <= q <= 1)
        if bad:
            raise ValueError(f"qualities must be within [0, 1]: {bad}")
        return v


class KeywordSignal(_Spec):
    """True when the prompt contains any (or all) of the patterns: substrings, or regular expressions."""

    name: str = Field(min_length=1, max_length=63, pattern=SIGNAL_NAME)
    patterns: list[str] = Field(min_length=1, max_length=64, description="Substrings or regular expressions.")
    regex: bool = Field(False, description="The patterns are regular expressions (Python syntax).")
    operator: Literal["any", "all"] = Field("any", description="any: one pattern suffices; all: every one must.")
    case_sensitive: bool = Field(False)

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for i, p in enumerate(v):
            if not p or len(p) > 256:
                raise ValueError(f"patterns[{i}]: must be 1–256 characters")
        return v

    @model_validator(mode="after")
    def _compiles(self) -> KeywordSignal:
        if self.regex:
            for i, p in enumerate(self.patterns):
                try:
                    re.compile(p)
                except re.error as e:
                    raise ValueError(f"patterns[{i}]: not a regular expression ({e}): {p!r}") from None
        return self


class ExampleClass(_Spec):
    label: str = Field(min_length=1, max_length=63, pattern=SIGNAL_NAME, description="The class name rules use.")
    prompts: list[str] = Field(min_length=1, max_length=500, description="Example prompts of this class.")

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, v: list[str]) -> list[str]:
        for i, p in enumerate(v):
            if not p.strip() or len(p) > MAX_EXAMPLE_CHARS:
                raise ValueError(f"prompts[{i}]: must be 1–{MAX_EXAMPLE_CHARS} characters, not blank")
        return v


class ClassifierSignal(_Spec):
    """A classifier trained when the route is loaded, from these examples (word and character n-grams,
    nothing downloaded): a prompt's class, how sure it is, and how close the prompt is to any example."""

    examples: list[ExampleClass] = Field(
        min_length=1, max_length=32, json_schema_extra=_list_map("label"), description="Labelled example prompts."
    )
    min_confidence: float = Field(
        0.0, ge=0, le=1, description="Below this confidence the prompt has no class (rules on classes do not match)."
    )


class Signals(_Spec):
    keywords: list[KeywordSignal] = Field(
        default_factory=list, max_length=32, json_schema_extra={**_EMPTY, **_list_map("name")}
    )
    classifier: ClassifierSignal | None = None


class When(_Spec):
    """Conditions of a rule; all that are given must hold (none given: always)."""

    keywords: list[str] = Field(
        default_factory=list, max_length=8, json_schema_extra=_EMPTY, description="Keyword signals that must match."
    )
    not_keywords: list[str] = Field(
        default_factory=list, max_length=8, json_schema_extra=_EMPTY, description="Keyword signals that must not."
    )
    classes: list[str] = Field(
        default_factory=list, max_length=16, json_schema_extra=_EMPTY, description="The prompt's class is one of these."
    )
    min_tokens: int | None = Field(None, ge=0, le=10_000_000, description="Prompt length in tokens at least this.")
    max_tokens: int | None = Field(None, ge=0, le=10_000_000, description="Prompt length in tokens at most this.")


class Rule(_Spec):
    name: str = Field(min_length=1, max_length=63, pattern=SIGNAL_NAME)
    priority: int = Field(0, ge=-1000, le=1000, description="Higher first; equal priorities in the listed order.")
    when: When = Field(default_factory=When)
    action: Literal["route", "reject"] = Field("route", description="route: to the candidates; reject: a 4xx error.")
    candidates: list[str] = Field(
        default_factory=list,
        max_length=16,
        json_schema_extra=_EMPTY,
        description="Pools (of spec.candidates) to choose among; empty: all.",
    )
    message: str | None = Field(None, max_length=512, description="reject: the error message the client gets.")


class Guard(_Spec):
    """Out-of-domain prompts: those less similar than minSimilarity to every example of the classifier."""

    min_similarity: float = Field(ge=0, le=1, description="Cosine similarity to the nearest example, 0–1.")
    action: Literal["reject", "redirect"] = Field("reject")
    redirect_to: str | None = Field(
        None, max_length=MAX_NAME_LENGTH, pattern=POOL_NAME, description="redirect: the ModelPool that takes them."
    )
    message: str = Field(
        "the request is outside what this model serves", max_length=512, description="reject: the error message."
    )


class Objective(_Spec):
    """score = qualityWeight × quality − costWeight × cost (relative to the dearest candidate) −
    sloWeight × SLO risk (predicted TTFT over the pool's target, capped at 1)."""

    quality_weight: float = Field(1.0, ge=0, le=100)
    cost_weight: float = Field(0.0, ge=0, le=100)
    slo_weight: float = Field(0.0, ge=0, le=100)
    slo_overflow: bool = Field(
        True,
        description="When the chosen pool's predicted TTFT breaks its SLO and another candidate's does not, "
        "send the request there instead.",
    )


class Learning(_Spec):
    """A contextual bandit (LinUCB) over the rule's candidates, fed by POST /v1/feedback rewards."""

    enabled: bool = Field(False)
    alpha: float = Field(0.1, ge=0, le=10, description="Exploration: weight of the confidence bound.")
    prior_weight: float = Field(
        5.0, gt=0, le=10_000, description="How many feedback rewards the quality priors are worth."
    )


class Rollout(_Spec):
    mode: Literal["active", "shadow", "percent"] = Field(
        "active",
        description="active: act on every decision; shadow: decide and record, send to defaultPool; percent: act "
        "on `percent`% of requests, send the rest to defaultPool.",
    )
    percent: int = Field(100, ge=0, le=100)
    default_pool: str | None = Field(
        None, max_length=MAX_NAME_LENGTH, pattern=POOL_NAME, description="Default: the first candidate."
    )


class ModelRouteSpec(_Spec):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.rules.all(r, r.candidates.all(c, self.candidates.exists(x, x.pool == c)))",
                    "a rule's candidates must be pools listed in spec.candidates",
                    ".rules",
                ),
                _cel(
                    "self.rules.all(r, r.when.keywords.all(k, self.signals.keywords.exists(s, s.name == k)) && "
                    "r.when.notKeywords.all(k, self.signals.keywords.exists(s, s.name == k)))",
                    "a rule's keywords must be names of spec.signals.keywords",
                    ".rules",
                ),
                _cel(
                    "self.rules.all(r, size(r.when.classes) == 0 || (has(self.signals.classifier) && "
                    "r.when.classes.all(c, self.signals.classifier.examples.exists(e, e.label == c))))",
                    "a rule's classes must be labels of spec.signals.classifier.examples",
                    ".rules",
                ),
                _cel(
                    "!has(self.guard) || has(self.signals.classifier)",
                    "the guard measures similarity to the classifier's examples: set spec.signals.classifier",
                    ".guard",
                ),
                _cel(
                    "!has(self.guard) || self.guard.action != 'redirect' || has(self.guard.redirectTo)",
                    "a redirecting guard needs redirectTo",
                    ".guard",
                ),
                _cel(
                    "!has(self.rollout.defaultPool) || self.candidates.exists(x, x.pool == self.rollout.defaultPool)",
                    "rollout.defaultPool must be one of spec.candidates",
                    ".rollout.defaultPool",
                ),
            ]
        }
    )
    model: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:-]*$",
        description="The virtual model name clients send in the `model` field.",
    )
    candidates: list[Candidate] = Field(
        min_length=1, max_length=16, json_schema_extra=_list_map("pool"), description="Pools the route may use."
    )
    signals: Signals = Field(default_factory=Signals)
    rules: list[Rule] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={**_EMPTY, **_list_map("name")},
        description="Tried by priority (highest first); none matching: all candidates.",
    )
    guard: Guard | None = None
    objective: Objective = Field(default_factory=Objective)
    learning: Learning = Field(default_factory=Learning)
    rollout: Rollout = Field(default_factory=Rollout)

    @model_validator(mode="after")
    def _references(self) -> ModelRouteSpec:
        """The same checks as the CEL rules, plus what CEL cannot see, each naming the field."""
        _unique("candidates", [c.pool for c in self.candidates])
        _unique("rules", [r.name for r in self.rules])
        _unique("signals.keywords", [k.name for k in self.signals.keywords])
        pools = {c.pool for c in self.candidates}
        keywords = {k.name for k in self.signals.keywords}
        labels = {e.label for e in self.signals.classifier.examples} if self.signals.classifier else set()
        if self.signals.classifier:
            _unique("signals.classifier.examples", [e.label for e in self.signals.classifier.examples])
        for i, r in enumerate(self.rules):
            if unknown := sorted(set(r.candidates) - pools):
                raise ValueError(f"rules[{i}] ({r.name}).candidates: {unknown} not in spec.candidates")
            if unknown := sorted(set(r.when.keywords + r.when.not_keywords) - keywords):
                raise ValueError(f"rules[{i}] ({r.name}).when: keywords {unknown} not in spec.signals.keywords")
            if unknown := sorted(set(r.when.classes) - labels):
                raise ValueError(f"rules[{i}] ({r.name}).when.classes: {unknown} not classifier labels")
            lo, hi = r.when.min_tokens, r.when.max_tokens
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"rules[{i}] ({r.name}).when: minTokens above maxTokens")
        for c in self.candidates:
            if unknown := sorted(set(c.quality_by_class) - labels):
                raise ValueError(f"candidates ({c.pool}).qualityByClass: {unknown} not classifier labels")
        if self.guard is not None:
            if not labels:
                raise ValueError("guard: set spec.signals.classifier (the guard measures similarity to its examples)")
            if self.guard.action == "redirect" and not self.guard.redirect_to:
                raise ValueError("guard.redirectTo: a redirecting guard needs the pool to redirect to")
        if self.rollout.default_pool is not None and self.rollout.default_pool not in pools:
            raise ValueError(f"rollout.defaultPool: {self.rollout.default_pool!r} not in spec.candidates")
        return self

    def pools(self) -> list[str]:
        """Every ModelPool the route may send to, candidates first (for the existence check)."""
        out = [c.pool for c in self.candidates]
        if self.guard is not None and self.guard.redirect_to and self.guard.redirect_to not in out:
            out.append(self.guard.redirect_to)
        return out

    @property
    def default_pool(self) -> str:
        return self.rollout.default_pool or self.candidates[0].pool


def _unique(where: str, names: list[str]) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{where}: duplicate names {dupes}")


# ----- status


class CandidateStatus(_Status):
    """What one gateway replica has seen of one candidate since it loaded the route."""

    pool: str
    requests: int = Field(0, ge=0, description="Requests sent to the pool by this route.")
    share: float = Field(0.0, ge=0, le=1, description="Its share of the route's requests.")
    reward_estimate: float | None = Field(
        None,
        description="The candidate's quality as the route now believes it: its prior counted as priorWeight "
        "rewards, averaged with the feedback received.",
    )
    feedback: int = Field(0, ge=0, description="Rewards received for requests it served.")


class GatewayRouteStatus(_Status):
    """One gateway replica's traffic through the route, written by that replica alone (server-side apply,
    one field manager each), so replicas never overwrite each other's counts."""

    name: str = Field(min_length=1, max_length=253, description="The replica (its pod name).")
    time: Timestamp = Field(description="When it last wrote this entry.")
    requests: int = Field(0, ge=0)
    candidates: list[CandidateStatus] | None = Field(None, json_schema_extra=_list_map("pool"))
    guard_rejections: int = Field(0, ge=0)
    guard_redirects: int = Field(0, ge=0)
    rule_rejections: int = Field(0, ge=0)
    overflows: int = Field(0, ge=0, description="Requests sent off their chosen pool to keep its SLO.")


class ClassifierStatus(_Status):
    labels: int = Field(ge=0)
    examples: int = Field(ge=0)
    held_out_accuracy: float | None = Field(
        None, ge=0, le=1, description="Cross-validated accuracy on the resource's own examples."
    )


class ModelRouteStatus(_Status):
    observed_generation: int | None = Field(None, ge=0)
    conditions: list[Condition] | None = Field(None, json_schema_extra=_list_map("type"))
    classifier: ClassifierStatus | None = None
    gateways: list[GatewayRouteStatus] | None = Field(
        None, json_schema_extra=_list_map("name"), description="Each gateway replica's traffic through the route."
    )


class ModelRoute(BaseModel):
    """A route as read from the API."""

    model_config = ConfigDict(frozen=True)
    name: str
    namespace: str
    generation: int = 0
    spec: ModelRouteSpec

    @classmethod
    def from_body(cls, body: Any) -> ModelRoute:
        meta = body["metadata"]
        return cls.model_validate(
            {
                "name": meta["name"],
                "namespace": meta.get("namespace", ""),
                "generation": meta.get("generation", 0),
                "spec": dict(body["spec"]),
            }
        )
