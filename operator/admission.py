"""The ModelRoute admission webhook: a route that cannot work is refused when it is written, naming the field.

The API server checks a route against the CRD's OpenAPI bounds and CEL rules itself. This webhook adds
what those cannot see: the rest of what `ModelRouteSpec` refuses (a pattern Python's `re` does not
compile, among others — the spec is validated by the same pydantic model the gateway loads it with, so
there is one definition of a valid route), and that each ModelPool the route names exists in its
namespace. The checks are pure functions here; `handlers` registers them with kopf, kopf serves them
over HTTPS (`WebhookServer`), and the operator keeps the ValidatingWebhookConfiguration pointing at it
(`build_webhook_configuration`: failurePolicy Fail, so while the operator is unreachable routes are not
written; when it stops, it empties the configuration, and routes are written unchecked rather than not
at all).

An update is judged by what it changes: one that leaves the spec as it was (labels, annotations,
finalizers) always passes, and a pool the route already named is not looked up again, so a route whose
pool was deleted can still be edited or let go.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from headway.api.errors import field_error
from headway.api.labels import GROUP
from headway.api.modelroute import PLURAL, VERSION, ModelRoute, ModelRouteSpec
from headway.api.tls import self_signed_server
from headway.operator.config import OperatorConfig

WEBHOOK_NAME = f"{PLURAL}.{GROUP}"
"""The webhook's name in its configuration (the API server wants three or more dot-separated parts; its
refusals read `admission webhook "<name>" denied the request: …`), and the kopf handler id, which is
also the path kopf serves the handler at."""
WEBHOOK_TIMEOUT_S = 10
"""How long the API server waits for an answer before refusing the write (failing closed)."""
SERVICE_PORT = 443
"""The port of the Service in front of the webhook (the Kubernetes default for webhook services)."""
CERT_VALIDITY = dt.timedelta(days=3650)
"""The certificate lives in memory and is made anew at each start: its expiry should never be what stops
admission."""


class InvalidRoute(ValueError):
    """The route would be refused; the message names the field (`spec.candidates[1].pool: …`)."""


def parse_route(body: Mapping[str, Any]) -> ModelRoute:
    """The route as every component reads it, or InvalidRoute naming the first field pydantic refuses."""
    if not isinstance(body.get("spec"), Mapping):
        raise InvalidRoute("spec: required")
    try:
        return ModelRoute.from_body(body)
    except ValidationError as e:
        raise InvalidRoute(field_error(e)) from None


def pool_references(spec: ModelRouteSpec) -> list[tuple[str, str]]:
    """(field path, ModelPool name) of every pool the route sends to: the same pools as `spec.pools()`,
    each with the field that names it."""
    refs = [(f"spec.candidates[{i}].pool", c.pool) for i, c in enumerate(spec.candidates)]
    if spec.guard is not None and spec.guard.redirect_to:
        refs.append(("spec.guard.redirectTo", spec.guard.redirect_to))
    return refs


def named_pools(old: Mapping[str, Any] | None) -> set[str]:
    """Pools the stored route already names (read from the raw body: it was admitted under whatever rules
    held then, and need not parse under today's)."""
    spec = (old or {}).get("spec") or {}
    names = {c.get("pool") for c in spec.get("candidates") or [] if isinstance(c, Mapping)}
    names.add((spec.get("guard") or {}).get("redirectTo"))
    return {n for n in names if isinstance(n, str)}


def new_pool_references(spec: ModelRouteSpec, old: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """The pool references an operation introduces: every one on create, the added ones on update."""
    before = named_pools(old)
    return [(field, pool) for field, pool in pool_references(spec) if pool not in before]


def missing_pool(refs: Iterable[tuple[str, str]], existing: Collection[str], namespace: str) -> str | None:
    """The refusal for the first reference to a pool that does not exist, or None."""
    for field, pool in refs:
        if pool not in existing:
            return f'{field}: ModelPool "{pool}" not found in namespace {namespace}'
    return None


def spec_unchanged(body: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    return old is not None and old.get("spec") == body.get("spec")


def build_webhook_configuration(name: str, client_config: Mapping[str, Any]) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration `name`: one webhook, for ModelRoute creates and updates only
    (not status writes, not deletes), failing closed; `client_config` is where the API server calls it
    (a URL or a Service, and the caBundle)."""
    webhook = {
        "name": WEBHOOK_NAME,
        "clientConfig": _with_path(client_config, f"/{WEBHOOK_NAME}"),
        "rules": [
            {
                "apiGroups": [GROUP],
                "apiVersions": [VERSION],
                "resources": [PLURAL],
                "operations": ["CREATE", "UPDATE"],
                "scope": "Namespaced",
            }
        ],
        "failurePolicy": "Fail",
        "matchPolicy": "Equivalent",
        "sideEffects": "None",
        "timeoutSeconds": WEBHOOK_TIMEOUT_S,
        "admissionReviewVersions": ["v1"],
    }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [webhook],
    }


def _with_path(client_config: Mapping[str, Any], path: str) -> dict[str, Any]:
    """kopf serves each handler at `/<handler id>`; a request to any other path finds no handler and is
    allowed, so the configuration must name the path."""
    out = copy.deepcopy(dict(client_config))
    if out.get("url"):
        out["url"] = out["url"].rstrip("/") + path
    if out.get("service"):
        out["service"] = {**out["service"], "path": path}
    return out


class WebhookServer(kopf.WebhookServer):
    """kopf's HTTPS webhook server with a self-signed certificate made by `headway.api.tls` (kopf's own
    generator needs `certbuilder` and `oscrypto`, and oscrypto fails on OpenSSL 3), which also publishes
    where it serves: `publish(client config)` each time it starts listening (the certificate is new at
    each start), `publish(None)` when it stops.

    The webhook configuration is kept by the operator rather than by kopf's managed mode: that mode keeps
    a MutatingWebhookConfiguration too, and the right to write those (to alter any object the API server
    admits) is more than a validating webhook should hold.

    With `service` (namespace, name), the client config names that Service (port 443) instead of a URL,
    as a cluster needs: the API server reaches a Service through its endpoints or ClusterIP, not DNS. The
    certificate then also carries the names the API server checks, `<name>.<namespace>.svc[.cluster.local]`.
    """

    def __init__(
        self,
        *,
        publish: Callable[[kopf.WebhookClientConfig | None], Awaitable[None]],
        service: tuple[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        if service is not None:
            namespace, name = service
            host = f"{name}.{namespace}.svc"
            kwargs = {**kwargs, "host": host, "extra_sans": (*kwargs.get("extra_sans", ()), f"{host}.cluster.local")}
        super().__init__(**kwargs)
        self.publish, self.service = publish, service

    @staticmethod
    def build_certificate(hostnames: Collection[str], password: str | None = None) -> tuple[bytes, bytes]:
        if password is not None:
            raise ValueError("the webhook's generated key is not encrypted: pass no password")
        return self_signed_server(hostnames, validity=CERT_VALIDITY)

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        published = False
        try:
            async with contextlib.aclosing(super().__call__(fn)) as configs:
                async for config in configs:
                    if self.service is not None:
                        namespace, name = self.service
                        service = kopf.WebhookClientConfigService(namespace=namespace, name=name, port=SERVICE_PORT)
                        config = kopf.WebhookClientConfig(service=service, caBundle=config.get("caBundle"))
                    await self.publish(config)
                    published = True
                    yield config
        finally:
            if published:
                await self.publish(None)


def webhook_server(
    cfg: OperatorConfig, publish: Callable[[kopf.WebhookClientConfig | None], Awaitable[None]]
) -> WebhookServer:
    service = None
    if cfg.webhook_service:
        namespace, name = cfg.webhook_service.split("/", 1)
        service = (namespace, name)
    return WebhookServer(
        publish=publish, addr=cfg.webhook_bind, port=cfg.webhook_port, host=cfg.webhook_host, service=service
    )
