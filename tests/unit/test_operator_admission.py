"""The ModelRoute admission webhook's parts that need no cluster: pydantic's first error as a message naming
the field path, the pool references an operation introduces, the webhook configuration, the self-signed
certificate, and kopf's server serving over it and publishing where it listens."""

from __future__ import annotations

import asyncio
import base64
import ssl
from typing import Any

import aiohttp
import kopf
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from pydantic import BaseModel, ValidationError, model_validator

from headway.api.errors import field_error, field_path
from headway.api.modelroute import ModelRoute
from headway.api.tls import self_signed_server
from headway.devenv import procs
from headway.operator.admission import (
    WEBHOOK_NAME,
    InvalidRoute,
    WebhookServer,
    build_webhook_configuration,
    missing_pool,
    new_pool_references,
    parse_route,
    pool_references,
    spec_unchanged,
)
from tests.e2e.test_model_route import route_manifest

SIGNALS = route_manifest()["spec"]["signals"]


def _body(**over: Any) -> dict[str, Any]:
    body = route_manifest(**over)
    body["metadata"] = {"name": "auto", "namespace": "team-a"}
    return body


def test_a_location_reads_as_a_kubernetes_field_path() -> None:
    assert field_path(("spec", "candidates", 1, "pool")) == "spec.candidates[1].pool"
    assert field_path(("spec", "candidates", 0, "qualityByClass", "math")) == "spec.candidates[0].qualityByClass.math"
    assert field_path(()) == ""


@pytest.mark.parametrize(
    ("over", "message"),
    [
        pytest.param(
            {"signals": {**SIGNALS, "keywords": [{"name": "code", "patterns": ["(unclosed"], "regex": True}]}},
            "spec.signals.keywords[0].patterns[0]: not a regular expression (missing ), unterminated subpattern",
            id="model-check-names-a-field-within",
        ),
        pytest.param(
            {"signals": {**SIGNALS, "keywords": [{"name": "code", "patterns": ["```", ""]}]}},
            "spec.signals.keywords[0].patterns[1]: must be 1–256 characters",
            id="field-check-names-an-item-of-itself",
        ),
        pytest.param(
            {"rules": [{"name": "a", "candidates": ["nowhere"]}]},
            "spec.rules[0] (a).candidates: ['nowhere'] not in spec.candidates",
            id="spec-check",
        ),
        pytest.param(
            {"guard": {"minSimilarity": 0.2, "action": "redirect"}},
            "spec.guard.redirectTo: a redirecting guard needs the pool to redirect to",
            id="spec-check-dotted",
        ),
        pytest.param(
            {"guard": {"minSimilarity": 2}},
            "spec.guard.minSimilarity: Input should be less than or equal to 1",
            id="bound",
        ),
        pytest.param(
            {"candidates": [{"pool": "small", "costPer1kTokens": -1}], "rules": []},
            "spec.candidates[0].costPer1kTokens: Input should be greater than or equal to 0",
            id="alias",
        ),
        pytest.param(
            {"signals": {**SIGNALS, "keywords": [{"name": "code", "patterns": ["x"], "operator": "some"}]}},
            "spec.signals.keywords[0].operator: Input should be 'any' or 'all'",
            id="choice",
        ),
        pytest.param({"model": None}, "spec.model: Input should be a valid string", id="type"),
    ],
)
def test_a_refused_route_is_reported_at_its_field_path(over: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRoute) as e:
        parse_route(_body(**over))
    assert str(e.value).startswith(message), str(e.value)


def test_a_check_of_the_root_object_keeps_its_own_message() -> None:
    class Root(BaseModel):
        a: int = 0

        @model_validator(mode="after")
        def _check(self) -> Root:
            raise ValueError("a: must not be zero")

    with pytest.raises(ValidationError) as e:
        Root()
    assert field_error(e.value) == "a: must not be zero"


def test_a_route_without_a_spec_is_refused() -> None:
    with pytest.raises(InvalidRoute, match=r"^spec: required$"):
        parse_route({"metadata": {"name": "auto", "namespace": "team-a"}})


def test_every_pool_the_route_sends_to_is_checked_at_its_field() -> None:
    route = parse_route(_body(guard={"minSimilarity": 0.1, "action": "redirect", "redirectTo": "fallback"}))
    refs = pool_references(route.spec)
    assert refs == [
        ("spec.candidates[0].pool", "small"),
        ("spec.candidates[1].pool", "large"),
        ("spec.guard.redirectTo", "fallback"),
    ]
    assert [pool for _, pool in refs] == route.spec.pools()


@pytest.mark.parametrize(
    ("old", "introduced"),
    [
        pytest.param(None, ["small", "large"], id="create"),
        pytest.param(_body(candidates=[{"pool": "small"}], rules=[]), ["large"], id="update-adds-one"),
        pytest.param(_body(), [], id="update-adds-none"),
        pytest.param({"spec": {"candidates": "not a list"}}, ["small", "large"], id="stored-route-unreadable"),
    ],
)
def test_only_the_pools_an_operation_introduces_are_looked_up(
    old: dict[str, Any] | None, introduced: list[str]
) -> None:
    route = ModelRoute.from_body(_body())
    assert [pool for _, pool in new_pool_references(route.spec, old)] == introduced


def test_the_first_missing_pool_is_named_with_its_namespace() -> None:
    refs = [("spec.candidates[0].pool", "small"), ("spec.candidates[1].pool", "nowhere")]
    assert missing_pool(refs, {"small"}, "team-a") == (
        'spec.candidates[1].pool: ModelPool "nowhere" not found in namespace team-a'
    )
    assert missing_pool(refs, {"small", "nowhere"}, "team-a") is None
    assert missing_pool([], set(), "team-a") is None


def test_an_update_that_leaves_the_spec_alone_is_not_judged() -> None:
    body = _body()
    labelled = {**body, "metadata": {**body["metadata"], "labels": {"team": "a"}}}
    assert spec_unchanged(labelled, body)
    assert not spec_unchanged(_body(rules=[]), body)
    assert not spec_unchanged(body, None)


@pytest.mark.parametrize(
    ("client", "where"),
    [
        pytest.param(
            {"url": "https://127.0.0.1:9443", "caBundle": "Q0E="},
            {"url": f"https://127.0.0.1:9443/{WEBHOOK_NAME}", "caBundle": "Q0E="},
            id="url",
        ),
        pytest.param(
            {"service": {"namespace": "hw", "name": "hw-operator", "port": 443}, "caBundle": "Q0E="},
            {
                "service": {"namespace": "hw", "name": "hw-operator", "port": 443, "path": f"/{WEBHOOK_NAME}"},
                "caBundle": "Q0E=",
            },
            id="service",
        ),
    ],
)
def test_the_webhook_configuration_fails_closed_for_route_writes_only(
    client: dict[str, Any], where: dict[str, Any]
) -> None:
    config = build_webhook_configuration("hw-operator", client)
    assert config["metadata"] == {"name": "hw-operator"}
    (webhook,) = config["webhooks"]
    assert webhook["clientConfig"] == where
    assert webhook["rules"] == [
        {
            "apiGroups": ["inference.headway.dev"],
            "apiVersions": ["v1alpha1"],
            "resources": ["modelroutes"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        }
    ]
    assert (webhook["failurePolicy"], webhook["sideEffects"], webhook["name"]) == ("Fail", "None", WEBHOOK_NAME)
    assert "namespaceSelector" not in webhook and "objectSelector" not in webhook
    assert "path" not in client.get("service", {}) and not client.get("url", "").endswith(WEBHOOK_NAME)  # untouched


def test_the_self_signed_certificate_names_every_dialable_host_and_serves_tls() -> None:
    cert_pem, key_pem = self_signed_server(["op.ns.svc", "10.0.0.7", "0.0.0.0", "op.ns.svc", "::1"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["op.ns.svc"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.7", "::1"]
    assert cert.subject.rfc4514_string() == "CN=op.ns.svc" and cert.issuer == cert.subject
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca  # its own trust root
    with pytest.raises(ValueError, match="no host name or address"):
        self_signed_server(["0.0.0.0"])
    assert b"ENCRYPTED" not in key_pem


@pytest.mark.parametrize("service", [None, ("ns", "op")], ids=["url", "service"])
def test_the_webhook_server_serves_kopf_over_its_certificate_and_publishes_where(
    service: tuple[str, str] | None,
) -> None:
    """kopf's server, on a free 127.0.0.1 port: it publishes its client config once listening (a URL, or
    the Service), answers a review at the webhook's path over TLS that the published caBundle verifies
    for the name the API server dials, and withdraws the config when it stops."""
    published: list[kopf.WebhookClientConfig | None] = []
    seen: list[str | None] = []

    async def publish(config: kopf.WebhookClientConfig | None) -> None:
        published.append(config)

    async def fn(request: Any, *, webhook: str | None = None, **_: Any) -> dict[str, Any]:
        seen.append(webhook)
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"allowed": True}}

    port = procs.free_port()
    server = WebhookServer(publish=publish, addr="127.0.0.1", port=port, service=service)

    async def review(ca_bundle: str, hostname: str) -> dict[str, Any]:
        """An admission review as the API server sends it: to the address, verifying the name it dialled."""
        trust = ssl.create_default_context(cadata=base64.b64decode(ca_bundle).decode())
        url = f"https://127.0.0.1:{port}/{WEBHOOK_NAME}"
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json={}, ssl=trust, server_hostname=hostname) as r,
        ):
            return await r.json()

    async def scenario() -> None:
        async with server:  # as kopf runs it: leaving closes the server and whatever it started
            config = await anext(server(fn))  # type: ignore[arg-type]
            assert published == [config]
            if service is None:
                assert config["url"] == f"https://127.0.0.1:{port}"
                hostname = "127.0.0.1"
            else:
                assert config["service"] == {"namespace": "ns", "name": "op", "port": 443}
                assert "url" not in config
                hostname = "op.ns.svc"
            answer = await review(config["caBundle"], hostname)
            assert answer["response"]["allowed"] is True and seen == [WEBHOOK_NAME]
        assert published[-1] is None

    asyncio.run(scenario())
