"""One request's context: what the request path needs of it, filled in as the request moves along.

admission (slot) → body, fields, route, router → routing view (tokens) → [candidates] → decision →
endpoint → outcome. Each stage reads what earlier ones wrote here, instead of threading a growing list
of arguments through nested calls. The same context serves both front ends: headway's proxy (`request`
is the client's aiohttp request) and the Endpoint Picker behind a Gateway's Envoy (`request` is None).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from headway.gateway.endpoints import Endpoint
from headway.gateway.openai import ChatFields, CompletionFields
from headway.gateway.pools import PoolRoute
from headway.gateway.routing.types import Decision, Router, RoutingRequest


@dataclass(slots=True)
class RequestContext:
    request: web.Request | None
    """The client's request when headway's proxy forwards it; None behind Envoy (Endpoint Picker)."""
    body: bytes
    """The original bytes, forwarded untouched."""
    fields: CompletionFields | ChatFields
    route: PoolRoute
    router_name: str
    router: Router
    started_s: float
    """perf_counter() at arrival."""
    routing: RoutingRequest | None = None
    candidates: list[Endpoint] | None = None
    """The endpoints this request may go to when narrower than its pool's (a Gateway's subset hint)."""
    decision: Decision | None = None
    endpoint: Endpoint | None = None
    """The endpoint that answered (the last one tried)."""
    routed_s: float | None = None
    """perf_counter() when the first decision was made."""
    held: bool = False
    """The request waited for a ready endpoint."""
    model_route: str | None = None
    """The ModelRoute (namespace/name) that chose this request's pool, when it was sent to a virtual model."""
    requested_model: str | None = None
    """The virtual model name the client sent (fields.model is then the chosen pool's served model)."""
    response_headers: dict[str, str] | None = None
    """Headers added to the answer (a model route's explanation)."""
    outcome: int | None = None
    """The status to count when it differs from the one sent: 499 the client left, 502 the answer was
    cut after its headers went out."""

    @property
    def model(self) -> str:
        return self.fields.model

    @property
    def stream(self) -> bool:
        return bool(self.fields.stream)

    @property
    def chat(self) -> bool:
        return isinstance(self.fields, ChatFields)
