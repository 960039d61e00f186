"""Prometheus scrape jobs from the chart's PodMonitors, generated the way the Prometheus Operator does.

The local cluster has no Prometheus Operator, so the chart's monitors would otherwise go untested: a
hand-written scrape config says what the author believes the monitors select and label, not what they do.
Here each rendered PodMonitor becomes the job the Prometheus Operator writes for it (its generator in
prometheus-operator's pkg/prometheus/promcfg.go): Kubernetes service discovery of pods, a `keep` per
selector term, a `keep` on the named container port, the `namespace`, `container`, `pod`, `job` and
`endpoint` labels it always adds, then the monitor's own relabelings. The local Prometheus discovers pods
through the cluster's API server with the given kubeconfig, so what it scrapes, and under which labels, is
the chart's doing.

ServiceMonitors are not translated: they discover through EndpointSlices, which stay empty on this cluster
(its pod IPs are loopback addresses, which the API server refuses in them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from headway.devenv.chart import template

POD_MONITOR = "PodMonitor"


def _label(name: str) -> str:
    """A Kubernetes label name as Prometheus' service discovery spells it in `__meta_*` labels."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _selector(selector: Mapping[str, Any], prefix: str) -> list[dict[str, Any]]:
    """`keep` relabelings for a label selector (matchLabels and matchExpressions), as the operator writes them."""
    out: list[dict[str, Any]] = []
    for key, value in sorted((selector.get("matchLabels") or {}).items()):
        k = _label(key)
        out.append(
            {
                "action": "keep",
                "source_labels": [f"{prefix}_label_{k}", f"{prefix}_labelpresent_{k}"],
                "regex": f"({re.escape(str(value))});true",
            }
        )
    for expr in selector.get("matchExpressions") or []:
        k, op, values = _label(expr["key"]), expr["operator"], expr.get("values") or []
        alternatives = "|".join(re.escape(str(v)) for v in values)
        if op == "In":
            out.append(
                {
                    "action": "keep",
                    "source_labels": [f"{prefix}_label_{k}", f"{prefix}_labelpresent_{k}"],
                    "regex": f"({alternatives});true",
                }
            )
        elif op == "NotIn":
            out.append({"action": "drop", "source_labels": [f"{prefix}_label_{k}"], "regex": f"({alternatives})"})
        elif op == "Exists":
            out.append({"action": "keep", "source_labels": [f"{prefix}_labelpresent_{k}"], "regex": "true"})
        elif op == "DoesNotExist":
            out.append({"action": "drop", "source_labels": [f"{prefix}_labelpresent_{k}"], "regex": "true"})
        else:
            raise ValueError(f"selector operator {op!r} on {expr['key']!r} is not one Kubernetes knows")
    return out


def _relabelings(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A monitor's relabelings (camelCase, as in the CRD) in Prometheus' snake_case configuration keys."""
    keys = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    return [{keys.get(k, k.lower() if k == "action" else k): v for k, v in item.items()} for item in items]


def pod_monitor_jobs(monitor: Mapping[str, Any], kubeconfig: Path) -> list[dict[str, Any]]:
    """The scrape jobs for one PodMonitor: one per podMetricsEndpoint."""
    meta, spec = monitor["metadata"], monitor["spec"]
    ns_selector = spec.get("namespaceSelector") or {}
    sd: dict[str, Any] = {"role": "pod", "kubeconfig_file": str(kubeconfig)}
    if not ns_selector.get("any"):
        sd["namespaces"] = {"names": list(ns_selector.get("matchNames") or [meta["namespace"]])}
    jobs = []
    for i, ep in enumerate(spec.get("podMetricsEndpoints") or []):
        port = ep.get("port")
        if not port:
            raise ValueError(f"PodMonitor {meta['name']}: endpoint {i} names no port (only named ports are translated)")
        relabel: list[dict[str, Any]] = [
            {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
            {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
            *_selector(spec.get("selector") or {}, "__meta_kubernetes_pod"),
            {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": port},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"},
            {"target_label": "endpoint", "replacement": port},
            *_relabelings(ep.get("relabelings") or []),
        ]
        job: dict[str, Any] = {
            "job_name": f"podMonitor/{meta['namespace']}/{meta['name']}/{i}",
            "honor_labels": bool(ep.get("honorLabels", False)),
            "metrics_path": ep.get("path", "/metrics"),
            "kubernetes_sd_configs": [sd],
            "relabel_configs": relabel,
        }
        if ep.get("interval"):
            job["scrape_interval"] = ep["interval"]
        jobs.append(job)
    return jobs


def scrape_configs(objects: Iterable[Mapping[str, Any]], kubeconfig: Path) -> list[dict[str, Any]]:
    """Scrape jobs for every PodMonitor among rendered chart objects."""
    return [job for o in objects if o.get("kind") == POD_MONITOR for job in pod_monitor_jobs(o, kubeconfig)]


def chart_engine_jobs(
    kubeconfig: Path, interval_s: float, release: str = "headway", namespace: str = "headway-system"
) -> list[dict[str, Any]]:
    """The scrape jobs of the chart's engine PodMonitor as it renders with default values (and the given
    scrape interval) for a release, discovering through the cluster the kubeconfig names."""
    monitors = template(
        release,
        namespace,
        None,
        "--show-only",
        "templates/monitoring.yaml",
        "--set",
        "monitoring.prometheusOperator=always",
        "--set",
        f"monitoring.interval={int(interval_s * 1000)}ms",
        "--set",
        "autoscaler.enabled=false",
    )
    return scrape_configs(monitors, kubeconfig)
