"""Gateway settings: each default written once, with what it is for."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from headway.api.modelpool import ScorerWeights
from headway.gateway.routing.profiles import PRESETS, PluginRef


class UpstreamTimeouts(BaseModel, frozen=True, extra="forbid"):
    """Each phase of a call to an engine has its own limit; a stream has no total (it may run as long as
    it keeps sending)."""

    connect_s: float = Field(2.0, gt=0, description="TCP connect to an engine pod.")
    first_byte_s: float = Field(
        300.0, gt=0, description="Until the first byte of the answer: engine queueing plus prefill."
    )
    idle_s: float = Field(60.0, gt=0, description="Longest silence between two chunks of an answer.")
    total_s: float = Field(
        900.0, gt=0, description="Whole non-streamed answer (streams have no total, only first_byte_s and idle_s)."
    )
    tokenize_s: float = Field(
        5.0, gt=0, description="Whole /tokenize call to an engine, when the gateway has no tokenizer file."
    )


class GatewayConfig(BaseModel, frozen=True, extra="forbid"):
    mode: Literal["proxy", "epp"] = Field(
        "proxy",
        description="proxy: serve the OpenAI API on --port and forward requests; epp: a Gateway API Inference "
        "Extension Endpoint Picker — Envoy's ext_proc gRPC on --port, and the Gateway forwards.",
    )
    host: str = Field("127.0.0.1", description="Listen address.")
    port: int = Field(8080, ge=1, le=65535, description="Listen port (epp mode: the ext_proc gRPC port).")
    metrics_port: int = Field(
        9090, ge=1, le=65535, description="epp mode: /metrics and /healthz over HTTP (proxy mode: on --port)."
    )
    fallbacks: int = Field(
        0,
        ge=0,
        le=5,
        description="epp mode: endpoints listed after the chosen one, for a data plane that retries along the "
        "list (Envoy's override-host policy); an ORIGINAL_DST cluster reads a single address.",
    )
    discovery: Literal["static", "kubernetes"] = Field(
        "static", description="static: one model on a fixed list of engines; kubernetes: every ModelPool's Ready pods."
    )
    namespaces: tuple[str, ...] = Field((), description="kubernetes discovery: these namespaces (empty: all).")
    model: str | None = Field(None, description="static discovery: the served model name.")
    endpoints: tuple[str, ...] = Field(
        (), description="static discovery: engine base URLs, e.g. http://127.0.0.1:8001."
    )
    endpoints_file: str | None = Field(
        None,
        description="static discovery: a file of engine base URLs, one per line (# comments), re-read when it "
        "changes, joined to --endpoint: engines added or removed without a restart.",
    )
    tokenizer: str | None = Field(None, description="Directory with the model's tokenizer.json.")
    strategy: str = Field("kv-aware", description="A preset, a --profiles name, or a --router name.")
    routers: tuple[str, ...] = Field((), description="Custom routers: NAME=module:factory or NAME=file.py:factory.")
    profiles: dict[str, tuple[PluginRef, ...]] = Field(
        default_factory=dict, description="Named routing profiles: plugins in order, with weights and params."
    )
    weights: ScorerWeights = Field(default_factory=ScorerWeights)
    route_status_interval_s: float = Field(
        15.0,
        ge=0,
        description="kubernetes discovery: how often this replica writes its traffic through each ModelRoute into "
        "the route's status (0: never).",
    )
    kv_events_bind: str | None = Field(None, description="ZMQ endpoint to bind for engines' KV events.")
    api_keys_file: str | None = Field(None, description="API keys (hashed) and their limits; none: no auth.")
    kv_replay_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Engines' KV-event replay port: fill sequence gaps from it (the operator configures 5558).",
    )
    redis_url: str | None = Field(None, description="Share the KV index (and speculative entries) through Redis.")
    scrape_interval_s: float = Field(0.25, gt=0, description="Engine /metrics scrape period.")
    stale_after_s: float = Field(2.0, gt=0, description="Metrics older than this make an endpoint stale.")
    silent_after_s: float = Field(
        5.0,
        gt=0,
        description="An engine whose metrics have not answered for this long is taken as hung (its socket may "
        "stay open): requests waiting on it go to another endpoint before their first byte, or end with an "
        "error event after it, instead of waiting out first_byte_s or idle_s.",
    )
    speculative_ttl_s: float = Field(2.0, ge=0, description="How long a routed prefix counts before its events.")
    pending_ttl_s: float = Field(
        30.0,
        ge=0,
        description="Until its first token, a routed prompt counts as held by its engine: under load a request "
        "waits in the engine's queue for seconds, and its KV events only come after that.",
    )
    hold_s: float = Field(
        30.0,
        ge=0,
        description="How long a request waits for a ready endpoint before a 503 "
        "(the autoscaler scales a pool up from zero meanwhile).",
    )
    max_retries: int = Field(2, ge=0, le=5, description="Other endpoints tried before the first byte.")
    max_body_bytes: int = Field(16 * 1024**2, ge=1024, description="Largest request body accepted (413 beyond).")
    max_in_flight: int = Field(4096, ge=1, description="Requests in flight before new ones get 429.")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Worker processes sharing the port (SO_REUSEPORT), fed one KV index by a hub process; "
        "max_in_flight is split among them.",
    )
    load_bound: float = Field(1.5, ge=1.0, description="Skip endpoints above this × mean in-flight (+1).")
    timeouts: UpstreamTimeouts = Field(default_factory=UpstreamTimeouts)

    @model_validator(mode="after")
    def _static_needs_model_and_endpoints(self) -> GatewayConfig:
        if self.mode == "epp" and self.workers > 1:
            raise ValueError("--workers applies to proxy mode; run more Endpoint Picker replicas instead")
        if self.discovery == "static" and (not self.model or not (self.endpoints or self.endpoints_file)):
            raise ValueError("static discovery needs --model and at least one --endpoint or an --endpoints-file")
        taken = set(PRESETS) & set(self.profiles)
        if taken:
            raise ValueError(f"profiles: {', '.join(sorted(taken))} is a preset's name")
        names = {*PRESETS, *self.profiles, *(r.partition("=")[0] for r in self.routers)}
        if self.strategy not in names:
            raise ValueError(f"unknown routing strategy {self.strategy!r}; known: {', '.join(sorted(names))}")
        return self
