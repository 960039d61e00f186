"""Real Redis and Prometheus, started privately on free loopback ports."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import yaml

from headway.devenv.binaries import ensure_binaries
from headway.devenv.monitors import scrape_configs
from headway.devenv.services import PrometheusServer, RedisServer
from tests.conftest import eventually


def test_redis_fixture_is_a_private_real_redis(redis_server: RedisServer) -> None:
    r = redis.Redis.from_url(redis_server.url)
    r.set("headway:test", "1")
    assert r.get("headway:test") == b"1"
    info = r.info("server")
    assert info["tcp_port"] == redis_server.port
    assert r.config_get("bind")["bind"] == "127.0.0.1"


def test_prometheus_scrapes_a_target_and_answers_queries(
    prometheus_factory: Callable[..., PrometheusServer],
) -> None:
    prom = prometheus_factory([])
    prom.stop()
    # Scrape the first instance's own port after a restart on the same port: a target that is really up.
    port = prom.port
    prom = prometheus_factory([{"job_name": "self", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}], port=port)

    def up() -> list:
        q = urllib.parse.urlencode({"query": 'up{job="self"} == 1'})
        with urllib.request.urlopen(f"{prom.url}/api/v1/query?{q}", timeout=5) as r:
            return json.loads(r.read())["data"]["result"]

    result = eventually(up, timeout_s=30, what="prometheus scraped itself")
    assert result[0]["metric"]["instance"] == f"127.0.0.1:{port}"


def test_pod_monitor_jobs_are_valid_prometheus_configuration(tmp_path: Path) -> None:
    """Every selector form a PodMonitor may use becomes configuration Prometheus' own checker accepts."""
    monitor = {
        "kind": "PodMonitor",
        "metadata": {"name": "m", "namespace": "ns"},
        "spec": {
            "namespaceSelector": {"matchNames": ["a", "b"]},
            "selector": {
                "matchLabels": {"app.kubernetes.io/name": "x.y"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["a", "b"]},
                    {"key": "canary", "operator": "NotIn", "values": ["yes"]},
                    {"key": "inference.headway.dev/engine", "operator": "Exists"},
                    {"key": "skip", "operator": "DoesNotExist"},
                ],
            },
            "podMetricsEndpoints": [
                {"port": "http", "interval": "5s", "relabelings": [{"sourceLabels": ["a"], "targetLabel": "b"}]}
            ],
        },
    }
    jobs = scrape_configs([monitor, {"kind": "ServiceMonitor"}], tmp_path / "kubeconfig")
    assert [j["job_name"] for j in jobs] == ["podMonitor/ns/m/0"]
    assert jobs[0]["kubernetes_sd_configs"][0]["namespaces"] == {"names": ["a", "b"]}
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(yaml.safe_dump({"scrape_configs": jobs}))
    proc = subprocess.run(
        [ensure_binaries().path("promtool"), "check", "config", "--syntax-only", str(cfg)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bad = {**monitor, "spec": {**monitor["spec"], "selector": {"matchExpressions": [{"key": "k", "operator": "Gt"}]}}}
    with pytest.raises(ValueError, match="'Gt' on 'k'"):
        scrape_configs([bad], tmp_path / "kubeconfig")
