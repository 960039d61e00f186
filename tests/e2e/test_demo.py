"""A shortened `make demo` on the session cluster: helm-installed headway serving the sample pools
through the gateway, scraped by a real Prometheus that then answers every dashboard panel's query
and has loaded the alert rules."""

from __future__ import annotations

import json
import math
import re
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from headway.devenv.binaries import ensure_binaries
from headway.devenv.chart import autoscaler_available, helm
from headway.devenv.cluster import LocalCluster
from headway.devenv.demo import RULES, DemoConfig, DemoServices, DemoSummary, run_demo
from headway.devenv.paths import REPO_ROOT

DASHBOARDS = sorted((REPO_ROOT / "deploy" / "dashboards").glob("*.json"))
AUTOSCALER_METRIC = "headway_autoscaler_"
RATE_INTERVAL = "1m"
NO_AUTOSCALER = (
    "`headway autoscaler`, deploy/rbac/autoscaler.yaml or a bench/profiles/*.json is absent from this checkout"
)


def _panel_queries() -> list[Any]:
    cases = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                cases.append(pytest.param(target["expr"], id=f"{path.stem}/{panel['title']}/{target['refId']}"))
    return cases


def _substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's variables as it sends them to Prometheus: "All" is the variable's allValue, `.*`."""
    for name, value in {"$__rate_interval": RATE_INTERVAL, **variables}.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


@pytest.fixture(scope="module")
def demo(
    cluster: LocalCluster, runner: Path, core: k8s.CoreV1Api, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DemoSummary, DemoServices, DemoConfig]]:
    suffix = uuid.uuid4().hex[:5]
    cfg = DemoConfig(
        release=f"demo{suffix}",
        namespace=f"demo-{suffix}",
        pools_namespace=f"demo-pools-{suffix}",
        duration_s=20.0,
        concurrency=3,
        autoscaler=autoscaler_available(),
    )
    summary, services = run_demo(cluster, tmp_path_factory.mktemp("demo"), cfg, progress=lambda _: None)
    yield summary, services, cfg
    services.stop()
    core.delete_namespace(cfg.pools_namespace)
    helm("uninstall", cfg.release, "--namespace", cfg.namespace, "--wait", kubeconfig=cluster.kubeconfig)
    core.delete_namespace(cfg.namespace)


def test_demo_serves_both_sample_pools_through_the_helm_installed_gateway(
    demo: tuple[DemoSummary, DemoServices, DemoConfig],
) -> None:
    summary, _, _ = demo
    traffic = summary.traffic
    assert traffic.requests >= 20 and traffic.errors == 0, traffic
    assert set(traffic.by_model) == {"chat", "code"}
    gpus = {p.name: {v["name"]: v["gpu_product"] for v in p.variants} for p in summary.pools}
    assert gpus == {
        "chat": {"h100": "NVIDIA-H100-80GB-HBM3", "l4": "NVIDIA-L4"},
        "code": {"a100": "NVIDIA-A100-SXM4-80GB"},
    }
    # chat is autoscaled within minReplicas 1; code runs its configured single replica.
    ready = {(p.name, v["name"]): v["ready"] for p in summary.pools for v in p.variants}
    assert all(n >= 1 for n in ready.values()) and ready[("code", "a100")] == 1, ready
    prices = {("chat", "h100"): 4.5, ("chat", "l4"): 0.8, ("code", "a100"): 2.2}
    assert summary.cost_per_hour_usd == pytest.approx(sum(prices[k] * n for k, n in ready.items()))
    assert 0 < traffic.percentile(50) <= traffic.percentile(90)
    # Every request repeats one of four long tenant prompts: the engines must see most tokens cached.
    assert summary.prefix_hit_ratio > 0.5, summary.prefix_hit_ratio


def test_prometheus_scrapes_every_component_and_engine(demo: tuple[DemoSummary, DemoServices, DemoConfig]) -> None:
    _, services, cfg = demo
    up = {(r["metric"]["job"], r["metric"]["pod"]): r["value"][1] for r in services.prometheus.query("up")}
    components = {"operator", "gateway", "kvcache", *(["autoscaler"] if cfg.autoscaler else [])}
    engine_jobs = {job for job, _ in up} - components
    # the engines' job is the chart's PodMonitor (<release>-headway-engines), named as the Prometheus
    # Operator names it
    assert engine_jobs == {f"{cfg.namespace}/{cfg.release}-headway-engines"}, up
    assert {job for job, _ in up} == components | engine_jobs, up
    assert all(v == "1" for v in up.values()), up
    assert sum(job in engine_jobs for job, _ in up) == 3


@pytest.mark.parametrize("selection", ["all-pools", "one-pool"])
@pytest.mark.parametrize("expr", _panel_queries())
def test_dashboard_panel_query_returns_data(
    expr: str, selection: str, demo: tuple[DemoSummary, DemoServices, DemoConfig]
) -> None:
    """With "All" selected, and with one pool picked (so a series whose pool label is spelled
    differently from the operator's, which the variables are built from, shows up empty)."""
    _, services, cfg = demo
    if AUTOSCALER_METRIC in expr and not cfg.autoscaler:
        pytest.skip(NO_AUTOSCALER)
    variables = {"$namespace": ".*", "$pool": ".*"}
    if selection == "one-pool":
        variables = {"$namespace": cfg.pools_namespace, "$pool": "chat"}
    result = services.prometheus.query(_substitute(expr, variables))
    assert result, f"empty result: {expr}"
    values = [float(r["value"][1]) for r in result]
    assert any(math.isfinite(v) for v in values), f"{expr} → {values}"


def test_dashboards_have_unique_ids_and_define_every_variable_their_panels_use() -> None:
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids)) == 4, uids
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        defined = {v["name"] for v in board["templating"]["list"]} | {"__rate_interval"}
        used = {m for p in board["panels"] for t in p["targets"] for m in re.findall(r"\$\{?(\w+)", t["expr"])}
        assert used <= defined, (path.name, used - defined)


def test_dashboard_panels_have_title_unit_and_description() -> None:
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            assert panel["title"] and panel["description"], (path.name, panel.get("title"))
            assert panel["fieldConfig"]["defaults"]["unit"], (path.name, panel["title"])


def test_dashboards_use_engine_metric_names_unchanged() -> None:
    """headway never re-exports vLLM's metrics: engine panels read vllm:* as the engines emit them."""
    for path in DASHBOARDS:
        exprs = " ".join(t["expr"] for p in json.loads(path.read_text())["panels"] for t in p["targets"])
        assert not re.search(r"headway_\w*vllm|headway_engine_", exprs), path.name


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """The promtool built with the cluster binaries (the Prometheus the tests run)."""
    return subprocess.run([ensure_binaries().path("promtool"), *args], capture_output=True, text=True, check=False)


def test_alert_rules_fire_on_their_cases_and_stay_quiet_on_near_misses() -> None:
    cases = RULES.with_name("rules_test.yaml")
    proc = _promtool("test", "rules", str(cases))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tested = {t["alertname"] for case in yaml.safe_load(cases.read_text())["tests"] for t in case["alert_rule_test"]}
    assert tested == {rule["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for rule in g["rules"]}


def test_alert_rules_pass_promtool_and_load_into_prometheus(
    demo: tuple[DemoSummary, DemoServices, DemoConfig],
) -> None:
    proc = _promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _, services, _ = demo
    with urllib.request.urlopen(f"{services.prometheus.url}/api/v1/rules", timeout=10) as r:
        groups = json.loads(r.read())["data"]["groups"]
    loaded = {rule["name"]: rule for g in groups for rule in g["rules"]}
    expected = {rule["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for rule in g["rules"]}
    assert set(loaded) == expected
    # Every rule has been evaluated against the live series without an error.
    assert all(rule["health"] == "ok" for rule in loaded.values()), {
        n: (rule["health"], rule.get("lastError")) for n, rule in loaded.items()
    }
