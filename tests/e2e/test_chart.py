"""The Helm chart: lint, offline rendering checks, server-side validation by the real API server, and
install → upgrade → uninstall in a namespace that enforces PodSecurity `restricted`, with the runner
starting the installed control plane as local processes."""

from __future__ import annotations

import json
import subprocess
import tarfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from headway.api import CONTROL_PLANE_LABEL, CONTROL_PLANE_VALUE, ENGINE_LABEL
from headway.devenv.binaries import ensure_binaries
from headway.devenv.chart import (
    CHART,
    autoscaler_available,
    autoscaler_profile,
    component_objects,
    helm,
    install,
    local_values,
    rbac_rules,
    restricted_namespace,
    template,
    values_file,
)
from headway.devenv.cluster import LocalCluster
from headway.devenv.controlplane import apply_yaml
from headway.devenv.paths import REPO_ROOT
from headway.gateway.auth import hash_key
from tests.conftest import _has_default_sa, eventually

CRD_SOURCE = REPO_ROOT / "deploy" / "crds" / "inference.headway.dev_modelpools.yaml"
SERVICE_MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"
COMPONENT = "app.kubernetes.io/component"
NO_AUTOSCALER = (
    "`headway autoscaler`, deploy/rbac/autoscaler.yaml or a bench/profiles/*.json is absent from this checkout"
)


@pytest.fixture(scope="module")
def has_autoscaler() -> bool:
    return autoscaler_available()


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, has_autoscaler: bool) -> Path:
    """Values for this machine: the autoscaler is installed only when this checkout has it."""
    return values_file(tmp_path_factory.mktemp("values") / "local.yaml", local_values(autoscaler=has_autoscaler))


def _kinds(objects: list[dict[str, Any]]) -> set[str]:
    return {o["kind"] for o in objects}


def test_chart_lints_clean(local: Path) -> None:
    out = helm("lint", "--strict", str(CHART), "--values", str(local))
    assert "0 chart(s) failed" in out, out


def test_default_values_render_every_component(has_autoscaler: bool) -> None:
    if not has_autoscaler:
        pytest.skip(NO_AUTOSCALER)
    objects = template("headway", "headway-system", None, "--set-file", f"autoscaler.profiles={autoscaler_profile()}")
    deployments = {o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"}
    assert deployments == {"headway-operator", "headway-gateway", "headway-kvcache", "headway-autoscaler"}


def test_the_autoscaler_refuses_to_render_without_a_capacity_profile(has_autoscaler: bool) -> None:
    if not has_autoscaler:
        pytest.skip(NO_AUTOSCALER)
    with pytest.raises(Exception, match=r"autoscaler\.profiles is empty"):
        template("headway", "headway-system")


def test_default_values_refuse_to_render_without_the_autoscaler_sources(has_autoscaler: bool) -> None:
    if has_autoscaler:
        pytest.skip("this checkout has the autoscaler; the default render is checked above")
    with pytest.raises(Exception, match=r"deploy/rbac/autoscaler\.yaml|autoscaler\.profiles is empty"):
        template("headway", "headway-system")


def test_values_outside_the_schema_are_rejected(local: Path) -> None:
    with pytest.raises(Exception, match="additional properties 'replica' not allowed"):
        template("headway", "headway-system", local, "--set", "gateway.replica=3")
    with pytest.raises(Exception, match="strategy"):
        template("headway", "headway-system", local, "--set", "gateway.strategy=fastest")


def test_packaged_chart_carries_the_crd_from_its_single_source(tmp_path: Path) -> None:
    helm("package", str(CHART), "--destination", str(tmp_path))
    (tgz,) = tmp_path.glob("headway-*.tgz")
    with tarfile.open(tgz) as tar:
        names = tar.getnames()
        for source in sorted(CRD_SOURCE.parent.glob("*.yaml")):
            member = tar.extractfile(f"headway/crds/{source.name}")
            assert member is not None, names
            assert member.read() == source.read_bytes()
        dashboards = sorted(n for n in names if n.startswith("headway/files/dashboards/"))
        rules = tar.extractfile("headway/files/prometheus/rules.yaml")
        assert rules is not None and rules.read() == (REPO_ROOT / "deploy/prometheus/rules.yaml").read_bytes()
    assert dashboards == sorted(
        f"headway/files/dashboards/{p.name}" for p in (REPO_ROOT / "deploy/dashboards").glob("*")
    )


def test_rendered_rbac_grants_exactly_the_deploy_rbac_rules(local: Path, has_autoscaler: bool) -> None:
    objects = template("hw", "ns1", local)
    components = ["operator", "gateway", *(["autoscaler"] if has_autoscaler else [])]
    for component in components:
        mine = component_objects(objects, component)
        rendered: dict[str, list[dict[str, Any]]] = {}
        for o in mine:
            if o["kind"] in ("Role", "ClusterRole"):
                rendered.setdefault(o["kind"], []).extend(o["rules"])
        assert rendered == rbac_rules(component), component
        bindings = [o for o in mine if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]
        assert bindings and all(
            b["subjects"] == [{"kind": "ServiceAccount", "name": f"hw-headway-{component}", "namespace": "ns1"}]
            for b in bindings
        )
    # Components that never call the API server get no token at all.
    for component in ("kvcache", "redis"):
        (pod_spec,) = [
            o["spec"]["template"]["spec"]
            for o in component_objects(objects, component)
            if o["kind"] in ("Deployment", "StatefulSet")
        ]
        assert pod_spec["automountServiceAccountToken"] is False


def test_the_endpoint_picker_serves_its_namespace_with_namespaced_rights_under_the_service_pools_name(
    local: Path,
) -> None:
    """epp.enabled: a Deployment running `headway gateway --mode epp` for the release namespace's pools,
    with gRPC health probes, a Role (not a ClusterRole) with exactly deploy/rbac/epp.yaml's rules, the
    Service a ModelPool's InferencePool names by default, and a PodDisruptionBudget; never without the
    shared index in Redis."""
    from headway.api.modelpool import EndpointPickerRef

    assert not component_objects(template("hw", "ns1", local), "epp")  # off by default
    objects = component_objects(template("hw", "ns1", local, "--set", "epp.enabled=true"), "epp")
    assert _kinds(objects) == {
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    rules = {o["kind"]: o["rules"] for o in objects if o["kind"] == "Role"}
    assert rules == rbac_rules("epp")
    (dep,) = [o for o in objects if o["kind"] == "Deployment"]
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["headway", "gateway"]
    assert {"--mode=epp", "--discovery=kubernetes", "--namespace=ns1"} <= set(container["args"])
    assert any(a.startswith("--redis-url=redis://") for a in container["args"])
    assert container["readinessProbe"]["grpc"]["service"] == "readiness"
    assert container["livenessProbe"]["grpc"]["service"] == "liveness"
    (svc,) = [o for o in objects if o["kind"] == "Service"]
    default = EndpointPickerRef()
    assert svc["metadata"]["name"] == default.service
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]}["grpc"] == default.port
    refused = subprocess.run(
        [
            ensure_binaries(build=False).path("helm"),
            "template",
            "hw",
            str(CHART),
            "--values",
            str(local),
            "--set",
            "epp.enabled=true",
            "--set",
            "kvcache.enabled=false",
            "--set",
            "redis.enabled=false",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode != 0 and "epp.enabled needs the shared KV index in Redis" in refused.stderr


def test_the_sample_httproute_to_an_inference_pool_is_admitted(cluster: LocalCluster, namespace: str) -> None:
    """deploy/samples/httproute-inferencepool.yaml against the Gateway API's and the Inference Extension's
    own CRDs (from their pinned modules), validated by the real API server."""
    api = cluster.api_client()
    for crd in sorted(ensure_binaries(build=False).gateway_crds.glob("*.yaml")):
        apply_yaml(api, crd)
    ext = k8s.ApiextensionsV1Api(api)

    def established() -> bool:
        crd = ext.read_custom_resource_definition("httproutes.gateway.networking.k8s.io")
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    eventually(established, timeout_s=30, what="the HTTPRoute CRD established")
    example = REPO_ROOT / "deploy" / "samples" / "httproute-inferencepool.yaml"
    proc = _kubectl(cluster, "apply", "--server-side", "--dry-run=server", "-n", namespace, "-f", str(example))
    assert proc.returncode == 0, proc.stderr
    assert "serverside-applied" in proc.stdout


def test_monitoring_objects_render_only_where_the_prometheus_operator_api_exists(local: Path) -> None:
    monitors = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert not monitors & _kinds(template("hw", "ns1", local))
    with_api = template("hw", "ns1", local, "--api-versions", SERVICE_MONITOR_API)
    assert monitors <= _kinds(with_api)
    (rule,) = [o for o in with_api if o["kind"] == "PrometheusRule"]
    assert rule["spec"]["groups"] == yaml.safe_load((REPO_ROOT / "deploy/prometheus/rules.yaml").read_text())["groups"]
    forced = template("hw", "ns1", local, "--set", "monitoring.prometheusOperator=always")
    assert monitors <= _kinds(forced)
    never = template(
        "hw", "ns1", local, "--api-versions", SERVICE_MONITOR_API, "--set", "monitoring.prometheusOperator=never"
    )
    assert not monitors & _kinds(never)


def test_dashboards_are_configmaps_for_the_grafana_sidecar(local: Path) -> None:
    sources = {p.name: p.read_text() for p in (REPO_ROOT / "deploy/dashboards").glob("*.json")}
    assert sources, "no dashboards in deploy/dashboards"
    maps = [
        o for o in template("hw", "ns1", local) if o["kind"] == "ConfigMap" and "dashboard" in o["metadata"]["name"]
    ]
    assert all(m["metadata"]["labels"]["grafana_dashboard"] == "1" for m in maps)
    rendered = {k: v for m in maps for k, v in m["data"].items()}
    assert rendered.keys() == sources.keys()
    assert all(json.loads(rendered[k]) == json.loads(v) for k, v in sources.items())


def test_embedded_index_mode_points_engines_at_the_gateway_and_refuses_several_replicas(local: Path) -> None:
    objects = template("hw", "ns1", local, "--set", "kvcache.enabled=false")
    (op,) = [o for o in component_objects(objects, "operator") if o["kind"] == "Deployment"]
    args = op["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--kv-events-endpoint=tcp://hw-headway-gateway.ns1.svc.cluster.local:5557" in args
    assert not component_objects(objects, "kvcache")
    with pytest.raises(Exception, match="more than one replica"):
        template("hw", "ns1", local, "--set", "kvcache.enabled=false", "--set", "gateway.replicas=2")


def test_the_operator_serves_its_route_webhook_behind_its_service(local: Path) -> None:
    """operator.webhook (on by default): the operator listens on the pod IP, names its Service (port 443 to
    the webhook port) as where the API server calls it, and keeps the webhook in a configuration object the
    release owns, so an uninstall removes it; the NetworkPolicy lets the API server in."""
    on = ["--set", "operator.webhook.enabled=true"]
    objects = component_objects(template("hw", "ns1", local, *on), "operator")
    (dep,) = [o for o in objects if o["kind"] == "Deployment"]
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert {
        "--webhook-port=9443",
        "--webhook-bind=$(POD_IP)",
        "--webhook-service=ns1/hw-headway-operator",
        "--webhook-configuration=hw-headway-operator",
    } <= set(container["args"])
    assert {"name": "webhook", "containerPort": 9443, "protocol": "TCP"} in container["ports"]
    (svc,) = [o for o in objects if o["kind"] == "Service"]
    assert {"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"} in svc["spec"]["ports"]
    (config,) = [o for o in objects if o["kind"] == "ValidatingWebhookConfiguration"]
    assert config["metadata"]["name"] == "hw-headway-operator" and "webhooks" not in config  # the operator's
    (policy,) = [o for o in objects if o["kind"] == "NetworkPolicy"]
    assert {"protocol": "TCP", "port": 9443} in policy["spec"]["ingress"][0]["ports"]

    off = component_objects(template("hw", "ns1", local, "--set", "operator.webhook.enabled=false"), "operator")
    assert "ValidatingWebhookConfiguration" not in _kinds(off)
    assert not [a for o in off if o["kind"] == "Deployment" for a in _args(o) if a.startswith("--webhook")]
    defaults = component_objects(template("hw", "ns1", None, "--set", "autoscaler.enabled=false"), "operator")
    assert "ValidatingWebhookConfiguration" in _kinds(defaults)


def _flows(objects: list[dict[str, Any]]) -> dict[str, set[tuple[int, str]]]:
    """(port, who may connect) per component's NetworkPolicy: "any", "engines" (engine pods of any
    namespace) or the components named by pod selector."""
    out: dict[str, set[tuple[int, str]]] = {}
    for o in objects:
        if o["kind"] != "NetworkPolicy":
            continue
        component = o["spec"]["podSelector"]["matchLabels"][COMPONENT]
        assert o["spec"]["policyTypes"] == ["Ingress"], o
        for rule in o["spec"]["ingress"]:
            peers = []
            for peer in rule.get("from") or [{}]:
                if not peer:
                    peers.append("any")
                elif "namespaceSelector" in peer:
                    assert peer["namespaceSelector"] == {}, peer
                    (expr,) = peer["podSelector"]["matchExpressions"]
                    assert expr == {"key": ENGINE_LABEL, "operator": "Exists"}, peer
                    peers.append("engines")
                else:
                    peers.append(peer["podSelector"]["matchLabels"][COMPONENT])
            out.setdefault(component, set()).update((p["port"], who) for p in rule["ports"] for who in peers)
    return out


def test_network_policies_allow_exactly_the_documented_flows(local: Path) -> None:
    """The flows the README's Reliability and security section lists, and no other: a port opened to
    everyone, or the KV-event port opened beyond engine pods, fails here."""
    objects = template("hw", "ns1", local, "--set", "epp.enabled=true", "--set", "operator.webhook.enabled=true")
    expected = {
        "operator": {(9464, "any"), (8080, "any"), (9443, "any")},
        "gateway": {(8080, "any"), (5557, "engines")},
        "kvcache": {(9465, "any"), (5557, "engines")},
        "epp": {(9002, "any"), (9090, "any")},
        "redis": {(6379, "gateway"), (6379, "kvcache"), (6379, "epp")},
    }
    if autoscaler_available():
        expected["autoscaler"] = {(9466, "any")}
    assert _flows(objects) == expected


def _args(deployment: Mapping[str, Any]) -> list[str]:
    return deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def _kubectl(cluster: LocalCluster, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ensure_binaries(build=False).path("kubectl"), "--kubeconfig", str(cluster.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def restricted_ns(cluster: LocalCluster, core: k8s.CoreV1Api) -> Iterator[str]:
    name = f"chart-{uuid.uuid4().hex[:6]}"
    core.create_namespace(restricted_namespace(name))
    eventually(lambda: _has_default_sa(core, name), timeout_s=30, what=f"default ServiceAccount in {name}")
    yield name
    core.delete_namespace(name)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param([], id="local-values"),
        pytest.param(
            ["--set", "gateway.autoscaling.enabled=true", "--set", "gateway.apiKeysSecret=gateway-keys"],
            id="gateway-hpa-and-api-keys",
        ),
        pytest.param(["--set", "kvcache.enabled=false", "--set", "redis.enabled=false"], id="embedded-index"),
        pytest.param(["--set", "redis.externalUrl=redis://redis.example:6379/0"], id="external-redis"),
        pytest.param(["--set", "epp.enabled=true", "--set", "epp.replicas=2"], id="endpoint-picker"),
        pytest.param(["--set", "operator.webhook.enabled=true"], id="route-webhook"),
    ],
)
def test_rendered_objects_pass_server_side_dry_run_in_a_restricted_namespace(
    cluster: LocalCluster, restricted_ns: str, local: Path, options: list[str]
) -> None:
    rendered = helm(
        "template", "dry", str(CHART), "--namespace", restricted_ns, "--include-crds", "--values", str(local), *options
    )
    proc = _kubectl(
        cluster, "apply", "--server-side", "--dry-run=server", "--field-manager=chart-test", "-f", "-", stdin=rendered
    )
    assert proc.returncode == 0, proc.stderr
    assert "would violate PodSecurity" not in proc.stderr, proc.stderr
    applied = [line for line in proc.stdout.splitlines() if "serverside-applied" in line]
    assert len(applied) == len([d for d in yaml.safe_load_all(rendered) if d]), proc.stdout


def test_the_restricted_namespace_really_rejects_a_pod_that_is_not_restricted(
    cluster: LocalCluster, restricted_ns: str
) -> None:
    """What makes "the chart's pods are admitted" mean something: the same namespace refuses a plain pod."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "plain", "namespace": restricted_ns},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1"]}]},
    }
    proc = _kubectl(cluster, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod))
    assert proc.returncode != 0 and 'violates PodSecurity "restricted' in proc.stderr, proc.stderr


def _pods(core: k8s.CoreV1Api, ns: str, release: str) -> list[Any]:
    return core.list_namespaced_pod(ns, label_selector=f"app.kubernetes.io/instance={release}").items


def _is_ready(pod: Any) -> bool:
    return pod.status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
    )


def _healthz(ip: str, port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/healthz", timeout=2) as r:
            return {"status": r.status, "body": r.read().decode()}
    except OSError:
        return None


def _helm_owned(cluster: LocalCluster, ns: str, release: str) -> list[str]:
    """Every object that still carries the release's instance label, namespaced or cluster-wide."""
    kinds = "all,configmaps,secrets,serviceaccounts,roles,rolebindings,networkpolicies,poddisruptionbudgets"
    names: list[str] = []
    for args in (
        ("get", kinds, "-n", ns, "-l", f"app.kubernetes.io/instance={release}", "-o", "name"),
        ("get", "clusterroles,clusterrolebindings", "-l", f"app.kubernetes.io/instance={release}", "-o", "name"),
    ):
        proc = _kubectl(cluster, *args)
        assert proc.returncode == 0, proc.stderr
        names += proc.stdout.split()
    return names


ACCESS = Path(__file__).with_name("rbac_expected_access.yaml")


def _can_i(cluster: LocalCluster, account: str, namespace: str) -> set[str]:
    """`kubectl auth can-i --list` as a ServiceAccount in one namespace: one `resource names verbs` (or
    `url verbs`) line per row, as the API server's authorizer answers (roles, bindings and defaults)."""
    proc = _kubectl(cluster, "auth", "can-i", "--list", f"--as={account}", "-n", namespace)
    assert proc.returncode == 0, proc.stderr
    rows = set()
    for line in proc.stdout.splitlines()[1:]:
        cells = [c.strip() for c in line.split("  ") if c.strip()]
        *what, verbs = cells
        rows.add(" ".join([*(w for w in what if w != "[]"), verbs]))
    return rows


def effective_access(cluster: LocalCluster, namespace: str, release: str) -> dict[str, dict[str, list[str]]]:
    """What each of the release's ServiceAccounts may do in its own namespace and in any other, beyond
    what every authenticated account may (the grants of an unbound account, subtracted)."""
    core = k8s.CoreV1Api(cluster.api_client())
    baseline_sa = f"baseline-{uuid.uuid4().hex[:5]}"
    core.create_namespaced_service_account(namespace, {"metadata": {"name": baseline_sa}})
    other = "default"
    as_ = f"system:serviceaccount:{namespace}:"
    base = {scope: _can_i(cluster, as_ + baseline_sa, ns) for scope, ns in (("own", namespace), ("other", other))}
    out: dict[str, dict[str, list[str]]] = {}
    for sa in core.list_namespaced_service_account(
        namespace, label_selector=f"app.kubernetes.io/instance={release}"
    ).items:
        component = sa.metadata.labels[COMPONENT]
        out[component] = {
            f"{scope}Namespace": sorted(_can_i(cluster, as_ + sa.metadata.name, ns) - base[scope])
            for scope, ns in (("own", namespace), ("other", other))
        }
    return out


def test_install_upgrade_uninstall_in_a_restricted_namespace(
    cluster: LocalCluster,
    runner: Path,
    core: k8s.CoreV1Api,
    apps: k8s.AppsV1Api,
    restricted_ns: str,
    local: Path,
    has_autoscaler: bool,
) -> None:
    release, ns = f"r{uuid.uuid4().hex[:5]}", restricted_ns
    # Only this test's namespace: other tests' pools are not this release's business.
    scope = ["--set-json", f'operator.watchNamespaces=["{ns}"]', "--set-json", f'gateway.watchNamespaces=["{ns}"]']
    install(cluster.kubeconfig, release, ns, local, *scope)
    pods = _pods(core, ns, release)
    components = {p.metadata.labels[COMPONENT] for p in pods}
    expected = {"operator", "gateway", "kvcache", "redis", *(["autoscaler"] if has_autoscaler else [])}
    assert components == expected, components
    assert all(_is_ready(p) for p in pods), [(p.metadata.name, p.status.phase) for p in pods]
    assert all(p.metadata.labels[CONTROL_PLANE_LABEL] == CONTROL_PLANE_VALUE for p in pods)
    # The pods are really running: the runner started their commands, and the gateway answers.
    (gw,) = [p for p in pods if p.metadata.labels[COMPONENT] == "gateway"]
    health = eventually(lambda: _healthz(gw.status.pod_ip, 8080), timeout_s=30, what="gateway /healthz")
    assert health["status"] == 200
    (kv,) = [p for p in pods if p.metadata.labels[COMPONENT] == "kvcache"]
    kv_health = eventually(lambda: _healthz(kv.status.pod_ip, 9465), timeout_s=30, what="indexer /healthz")
    assert json.loads(kv_health["body"])["redis"] is True, kv_health
    # Least privilege, as the API server grants it: each account's effective rights equal the reviewed
    # expectation; a role that gains a verb, a resource or a namespace fails here.
    expected = yaml.safe_load(ACCESS.read_text())["accounts"]
    access = effective_access(cluster, ns, release)
    assert access == {c: expected.get(c) for c in access}, yaml.safe_dump(access)
    assert set(access) == {c for c in expected if c != "autoscaler" or has_autoscaler} - {"epp"}

    # An upgrade with changed values takes effect: two gateway replicas with another default strategy.
    helm_args = ["--reuse-values", "--set", "gateway.replicas=2", "--set", "gateway.strategy=least-request"]
    install(cluster.kubeconfig, release, ns, local, *helm_args)
    gw_name = f"{release}-headway-gateway"
    dep = apps.read_namespaced_deployment(gw_name, ns)
    assert dep.spec.replicas == 2 and dep.status.ready_replicas == 2
    assert "--strategy=least-request" in dep.spec.template.spec.containers[0].args
    gateways = eventually(
        lambda: (
            [
                p
                for p in _pods(core, ns, release)
                if p.metadata.labels[COMPONENT] == "gateway"
                and _is_ready(p)
                and not p.metadata.deletion_timestamp
                and "--strategy=least-request" in p.spec.containers[0].args
            ]
            if len([p for p in _pods(core, ns, release) if p.metadata.labels[COMPONENT] == "gateway"]) == 2
            else None
        ),
        timeout_s=60,
        what="two upgraded gateway pods, Ready",
    )
    assert len(gateways) == 2
    assert all(eventually(lambda p=p: _healthz(p.status.pod_ip, 8080), timeout_s=30, what="healthz") for p in gateways)

    # Uninstall leaves nothing of the release but the CRD (helm never deletes CRDs).
    helm("uninstall", release, "--namespace", ns, "--wait", "--timeout", "120s", kubeconfig=cluster.kubeconfig)
    eventually(lambda: not _helm_owned(cluster, ns, release), timeout_s=60, what="release objects gone")
    eventually(lambda: not _pods(core, ns, release), timeout_s=60, what="release pods gone")
    ext = k8s.ApiextensionsV1Api(cluster.api_client())
    try:
        ext.read_custom_resource_definition("modelpools.inference.headway.dev")
    except ApiException as e:  # pragma: no cover - the assertion message is the point
        raise AssertionError("helm uninstall removed the ModelPool CRD") from e


def test_values_schema_closes_every_object_and_describes_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    stack: list[tuple[str, dict[str, Any]]] = [("", schema)]
    while stack:
        path, node = stack.pop()
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, path
            for key, sub in node["properties"].items():
                assert sub.get("description") or "$ref" in sub, f"{path}.{key}"
                stack.append((f"{path}.{key}", sub))


def _post_status(url: str, body: dict[str, Any], headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_gateway_reads_api_keys_from_its_mounted_secret(
    cluster: LocalCluster, runner: Path, core: k8s.CoreV1Api, restricted_ns: str, local: Path
) -> None:
    """The Secret volume reaches the gateway (the runner writes it as the kubelet would): a request
    without the key is refused, one with it gets past authentication. Also the embedded-index mode."""
    key = f"sk-{uuid.uuid4().hex}"
    keys = {"keys": [{"name": "team-a", "sha256": hash_key(key)}]}
    core.create_namespaced_secret(
        restricted_ns, {"metadata": {"name": "gateway-keys"}, "stringData": {"api-keys.yaml": yaml.safe_dump(keys)}}
    )
    release = f"k{uuid.uuid4().hex[:5]}"
    options = ["--set", "gateway.apiKeysSecret=gateway-keys", "--set", "kvcache.enabled=false"]
    options += ["--set", "redis.enabled=false", "--set-json", f'gateway.watchNamespaces=["{restricted_ns}"]']
    options += ["--set", "operator.enabled=false"]
    install(cluster.kubeconfig, release, restricted_ns, local, *options)
    (gw,) = [p for p in _pods(core, restricted_ns, release) if p.metadata.labels[COMPONENT] == "gateway"]
    url = f"http://{gw.status.pod_ip}:8080/v1/completions"
    body = {"model": "nobody-serves-this", "prompt": "hi", "max_tokens": 1}
    assert _post_status(url, body, {}) == 401
    assert _post_status(url, body, {"Authorization": "Bearer sk-wrong"}) == 401
    assert _post_status(url, body, {"Authorization": f"Bearer {key}"}) == 404  # authenticated; no such model
    helm("uninstall", release, "--namespace", restricted_ns, "--wait", kubeconfig=cluster.kubeconfig)


def _server_dry_run(cluster: LocalCluster, namespace: str, values: Path) -> list[dict[str, Any]]:
    """`helm install --dry-run=server`: rendered with the live cluster's API discovery."""
    out = helm(
        "install",
        "mon",
        str(CHART),
        "--namespace",
        namespace,
        "--values",
        str(values),
        "--dry-run=server",
        kubeconfig=cluster.kubeconfig,
    )
    manifest = out.split("MANIFEST:", 1)[1].split("NOTES:", 1)[0]
    return [d for d in yaml.safe_load_all(manifest) if d]


def test_no_monitors_where_the_live_cluster_lacks_the_prometheus_operator_api(
    cluster: LocalCluster, restricted_ns: str, local: Path
) -> None:
    assert not {"ServiceMonitor", "PodMonitor", "PrometheusRule"} & _kinds(
        _server_dry_run(cluster, restricted_ns, local)
    )


def _stand_in_crd(kind: str) -> dict[str, Any]:
    """A schemaless CRD of the Prometheus Operator's group: enough for discovery to report the API,
    which is all the chart asks of the cluster (the real CRDs are not available offline)."""
    plural = f"{kind.lower()}s"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                }
            ],
        },
    }


@pytest.fixture
def prometheus_operator_api(cluster: LocalCluster) -> Iterator[None]:
    ext = k8s.ApiextensionsV1Api(cluster.api_client())
    kinds = ("ServiceMonitor", "PodMonitor", "PrometheusRule")
    for kind in kinds:
        ext.create_custom_resource_definition(_stand_in_crd(kind))
    eventually(
        lambda: all(
            any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])
            for crd in (ext.read_custom_resource_definition(f"{k.lower()}s.monitoring.coreos.com") for k in kinds)
        ),
        timeout_s=30,
        what="stand-in Prometheus Operator CRDs established",
    )
    yield
    for kind in kinds:
        ext.delete_custom_resource_definition(f"{kind.lower()}s.monitoring.coreos.com")


def test_monitors_follow_the_live_cluster_api_and_are_admitted(
    cluster: LocalCluster, restricted_ns: str, local: Path, prometheus_operator_api: None
) -> None:
    """`monitoring.prometheusOperator: auto` asks the real API server's discovery, not a flag."""
    out = helm(
        "install",
        "mon",
        str(CHART),
        "--namespace",
        restricted_ns,
        "--values",
        str(local),
        "--dry-run=server",
        kubeconfig=cluster.kubeconfig,
    )
    manifest = out.split("MANIFEST:", 1)[1].split("NOTES:", 1)[0]
    objects = [d for d in yaml.safe_load_all(manifest) if d]
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule"} <= _kinds(objects)
    monitors = "\n---\n".join(
        yaml.safe_dump(o) for o in objects if o["kind"] in ("ServiceMonitor", "PodMonitor", "PrometheusRule")
    )
    proc = _kubectl(
        cluster, "apply", "--server-side", "--dry-run=server", "-n", restricted_ns, "-f", "-", stdin=monitors
    )
    assert proc.returncode == 0, proc.stderr
