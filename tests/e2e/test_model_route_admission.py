"""The operator's ModelRoute admission webhook on the local cluster: the API server refuses a route that
names a ModelPool its namespace lacks, or a pattern Python cannot compile (what CEL cannot check), on
create and on update, with a message naming the field; a route whose pools exist is admitted."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client as k8s

from headway.api.labels import METRIC_OPERATOR_ADMISSION_REVIEWS
from headway.devenv import procs
from headway.devenv.cluster import LocalCluster
from headway.devenv.controlplane import OperatorProcess, pool_manifest, service_account_kubeconfig
from headway.devenv.tinymodel import tiny_model_dir
from headway.operator.admission import WEBHOOK_NAME, WEBHOOK_TIMEOUT_S
from tests.conftest import eventually
from tests.e2e.test_model_route import GROUP, H100, VERSION, route_manifest

CONFIGURATION = "headway-operator"
ROUTES = "modelroutes"
UNKNOWN_POOL = route_manifest(candidates=[{"pool": "small"}, {"pool": "nowhere"}], rules=[])
SIGNALS = route_manifest()["spec"]["signals"]


def _refusal(custom: k8s.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> k8s.ApiException | None:
    """The API server's refusal of a dry-run create of `body`, or None when it would be admitted."""
    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, ROUTES, body, dry_run="All")
    except k8s.ApiException as e:
        return e
    return None


def _message(e: k8s.ApiException) -> str:
    return json.loads(e.body)["message"]


def _reviews(operator: OperatorProcess, outcome: str) -> float:
    """The operator's count of ModelRoute writes it judged with `outcome`."""
    prefix = f'{METRIC_OPERATOR_ADMISSION_REVIEWS}{{outcome="{outcome}"}} '
    lines = [x for x in operator.metrics_text().splitlines() if x.startswith(prefix)]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


@pytest.fixture
def custom(crd: LocalCluster, operator: OperatorProcess, namespace: str) -> k8s.CustomObjectsApi:
    """The namespace with the ModelPools `small` and `large`, once the operator's webhook judges routes."""
    custom = k8s.CustomObjectsApi(crd.api_client())
    for name in ("small", "large"):
        body = pool_manifest(name, H100, source=str(tiny_model_dir()), model=f"{name}-model")
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modelpools", body)

    def judged() -> bool:
        refusal = _refusal(custom, namespace, UNKNOWN_POOL)
        return refusal is not None and "not found in namespace" in refusal.body

    eventually(
        judged,
        timeout_s=60,
        what="the operator's ModelRoute webhook in effect",
        explain=lambda: operator.log.read_text()[-3000:],
    )
    return custom


def test_the_operator_keeps_a_fail_closed_webhook_for_modelroute_writes_only(
    crd: LocalCluster, operator: OperatorProcess, custom: k8s.CustomObjectsApi
) -> None:
    config = k8s.AdmissionregistrationV1Api(crd.api_client()).read_validating_webhook_configuration(CONFIGURATION)
    (webhook,) = config.webhooks
    assert webhook.name == WEBHOOK_NAME
    assert webhook.failure_policy == "Fail" and webhook.side_effects == "None"
    assert webhook.timeout_seconds == WEBHOOK_TIMEOUT_S
    (rule,) = webhook.rules
    assert (rule.api_groups, rule.api_versions, rule.resources) == ([GROUP], [VERSION], [ROUTES])
    assert sorted(rule.operations) == ["CREATE", "UPDATE"]
    for selector in (webhook.namespace_selector, webhook.object_selector):  # every namespace, every route
        assert not (selector.match_labels or selector.match_expressions), selector
    assert webhook.client_config.url == f"https://127.0.0.1:{operator.webhook_port}/{WEBHOOK_NAME}"
    assert webhook.client_config.ca_bundle


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        pytest.param(UNKNOWN_POOL, "spec.candidates[1].pool", 'ModelPool "nowhere" not found in namespace', id="pool"),
        pytest.param(
            route_manifest(guard={"minSimilarity": 0.1, "action": "redirect", "redirectTo": "elsewhere"}),
            "spec.guard.redirectTo",
            'ModelPool "elsewhere" not found in namespace',
            id="guard-redirect",
        ),
        pytest.param(
            route_manifest(
                signals={**SIGNALS, "keywords": [{"name": "code", "patterns": ["(unclosed"], "regex": True}]}
            ),
            "spec.signals.keywords[0].patterns[0]",
            "not a regular expression",
            id="regex",
        ),
    ],
)
def test_a_route_cel_cannot_judge_is_refused_at_admission_naming_the_field(
    custom: k8s.CustomObjectsApi,
    operator: OperatorProcess,
    namespace: str,
    body: dict[str, Any],
    field: str,
    says: str,
) -> None:
    refused = _reviews(operator, "refused")
    with pytest.raises(k8s.ApiException) as e:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, ROUTES, body)
    assert e.value.status == 422, e.value.body
    message = _message(e.value)
    assert f"{field}: " in message and says in message, message
    if "not found" in says:
        assert message.endswith(f"not found in namespace {namespace}"), message
    assert not custom.list_namespaced_custom_object(GROUP, VERSION, namespace, ROUTES)["items"]
    assert _reviews(operator, "refused") == refused + 1


def test_a_route_whose_pools_exist_is_admitted_and_an_update_adding_an_unknown_pool_is_refused(
    custom: k8s.CustomObjectsApi, namespace: str
) -> None:
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, ROUTES, route_manifest())
    assert [c["pool"] for c in created["spec"]["candidates"]] == ["small", "large"]

    candidates = [*created["spec"]["candidates"], {"pool": "nowhere"}]
    with pytest.raises(k8s.ApiException) as e:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, ROUTES, "auto", {"spec": {"candidates": candidates}}
        )
    assert e.value.status == 422, e.value.body
    message = _message(e.value)
    assert 'spec.candidates[2].pool: ModelPool "nowhere" not found' in message, message
    stored = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, ROUTES, "auto")
    assert [c["pool"] for c in stored["spec"]["candidates"]] == ["small", "large"]

    # An update that names no new pool passes, even once a pool the route names has gone: the route can
    # still be labelled, fixed or let go.
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "modelpools", "large")
    labelled = custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, ROUTES, "auto", {"metadata": {"labels": {"team": "a"}}}
    )
    assert labelled["metadata"]["labels"] == {"team": "a"}
    edited = custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, ROUTES, "auto", {"spec": {"objective": {"costWeight": 0.5}}}
    )
    assert edited["spec"]["objective"]["costWeight"] == 0.5


def test_a_stopped_operator_empties_its_webhook_configuration(
    crd: LocalCluster, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """So that routes are then written unchecked rather than refused by a webhook nobody serves (a killed
    operator leaves it, failing closed, until it is back)."""
    d = tmp_path_factory.mktemp("second-operator")
    name = f"{namespace}-operator"
    second = OperatorProcess(
        service_account_kubeconfig(crd, d / "kubeconfig"),
        d / "operator.log",
        procs.free_port(),
        procs.free_port(),
        ("--namespace", namespace, "--webhook-configuration", name),
    ).start()
    admission = k8s.AdmissionregistrationV1Api(crd.api_client())
    try:

        def urls() -> list[str]:
            try:
                webhooks = admission.read_validating_webhook_configuration(name).webhooks
            except k8s.ApiException as e:
                if e.status == 404:  # not created yet
                    return []
                raise
            return [w.client_config.url for w in webhooks or []]

        url = eventually(
            urls,
            timeout_s=30,
            what=f"the second operator's webhook in {name}",
        )
        assert url == [f"https://127.0.0.1:{second.webhook_port}/{WEBHOOK_NAME}"]
        second.stop()
        assert not admission.read_validating_webhook_configuration(name).webhooks
        assert "Traceback" not in second.log.read_text()
    finally:
        second.stop()
        admission.delete_validating_webhook_configuration(name)
