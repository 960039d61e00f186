"""Kubernetes Events about a ModelPool and the client that posts them, shared by the components that
write to the API (operator, autoscaler), so every Event names its pool and its reporter the same way."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from headway.api.modelpool import API_VERSION, KIND


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_event(body: Mapping[str, Any], reason: str, message: str, component: str, *, warning: bool) -> dict[str, Any]:
    """A core/v1 Event about the pool `body`; generateName, because each Event is a new record."""
    meta = body["metadata"]
    now = now_iso()
    return {
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "reason": reason,
        "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def load_api_client() -> k8s.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()
    return k8s.ApiClient()
