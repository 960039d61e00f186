"""Kubernetes discovery: every ModelPool becomes a route, its Ready engine pods the route's endpoints.

It describes what it sees (`PoolInfo`) and hands that to a sink, the gateway's route table, which owns
the routes. Watches (never polls) ModelPools and the pods carrying the pool label. A pod is an endpoint
while it has an IP, is Ready and is not terminating: the same rule the EndpointSlice controller applies.
Pods, not EndpointSlices, because a pod's labels also say its variant and the watch sees termination at
once. The official client is synchronous, so each watch runs in a thread and hands changes to the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from pydantic import ValidationError

from headway.api import POOL_LABEL, VARIANT_LABEL
from headway.api.labels import GROUP
from headway.api.modelpool import PLURAL, VERSION, ModelPoolSpec
from headway.api.modelroute import PLURAL as ROUTE_PLURAL
from headway.api.modelroute import ModelRoute
from headway.gateway.pools import EndpointInfo, PoolInfo, PoolKey

log = logging.getLogger(__name__)
DEFAULT_ENGINE_PORT = 8000


def api_client() -> k8s.ApiClient:
    """In-cluster credentials in a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()
    return k8s.ApiClient()


def endpoint_url(pod: dict[str, Any]) -> str | None:
    """`http://<pod-ip>:<port>` of a Ready, non-terminating engine pod; None otherwise."""
    st = pod.get("status") or {}
    if pod["metadata"].get("deletionTimestamp") or not st.get("podIP"):
        return None
    if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or []):
        return None
    port = DEFAULT_ENGINE_PORT
    for c in pod["spec"].get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == "http":
                port = p["containerPort"]
    return f"http://{st['podIP']}:{port}"


class PoolSink(Protocol):
    def apply(self, info: PoolInfo) -> object: ...

    def remove(self, key: PoolKey) -> None: ...


class RouteSink(Protocol):
    def apply(self, route: ModelRoute) -> object: ...

    def remove(self, key: tuple[str, str]) -> None: ...


class KubernetesDiscovery:
    def __init__(self, sink: PoolSink, namespaces: tuple[str, ...], *, model_routes: RouteSink | None = None) -> None:
        """`model_routes`: also watch ModelRoutes (where the cluster serves the CRD) and hand them here."""
        self.sink = sink
        self.model_routes = model_routes
        self.namespaces = namespaces or (None,)
        self.pools: dict[PoolKey, ModelPoolSpec] = {}
        self.pods: dict[PoolKey, dict[str, tuple[str, str | None]]] = {}  # pool → pod uid → (url, variant)
        self._stop = threading.Event()
        self.synced = asyncio.Event()
        """Set once every watch has listed what exists (the Endpoint Picker's readiness)."""
        self._unsynced = 0

    async def run(self) -> None:
        api = await asyncio.to_thread(api_client)
        loop = asyncio.get_running_loop()

        def deliver(fn: Callable[..., None], *args: Any) -> None:
            loop.call_soon_threadsafe(fn, *args)

        threads = []
        kinds = ("pools", "pods", "routes") if self.model_routes is not None else ("pools", "pods")
        self._unsynced = len(kinds) * len(self.namespaces)
        for ns in self.namespaces:
            for kind in kinds:
                threads.append(threading.Thread(target=self._watch, args=(api, ns, kind, deliver), daemon=True))
        for t in threads:
            t.start()
        try:
            await asyncio.Event().wait()
        finally:
            self._stop.set()

    def _watch(self, api: k8s.ApiClient, ns: str | None, kind: str, deliver: Callable[..., None]) -> None:
        custom, core = k8s.CustomObjectsApi(api), k8s.CoreV1Api(api)
        if kind in ("pools", "routes"):
            plural = PLURAL if kind == "pools" else ROUTE_PLURAL
            fn: Any = custom.list_namespaced_custom_object if ns else custom.list_cluster_custom_object
            args: tuple[Any, ...] = (GROUP, VERSION, ns, plural) if ns else (GROUP, VERSION, plural)
            kwargs: dict[str, Any] = {}
            handler = self.on_pool if kind == "pools" else self.on_route
        else:
            fn = core.list_namespaced_pod if ns else core.list_pod_for_all_namespaces
            args = (ns,) if ns else ()
            kwargs = {"label_selector": POOL_LABEL}
            handler = self.on_pod
        listed = False
        while not self._stop.is_set():
            try:
                # list, then watch from the list's version: what existed is delivered before anything is
                # called synced, and nothing between the two is missed
                items = fn(*args, **kwargs)
                for obj in items["items"] if isinstance(items, dict) else items.items:
                    body = obj if isinstance(obj, dict) else api.sanitize_for_serialization(obj)
                    deliver(handler, "ADDED", body)
                if not listed:
                    listed = True
                    deliver(self._listed)
                version = (
                    items["metadata"]["resourceVersion"] if isinstance(items, dict) else items.metadata.resource_version
                )
                w = k8s_watch.Watch()
                for ev in w.stream(fn, *args, timeout_seconds=60, resource_version=version, **kwargs):
                    obj = ev["object"]
                    body = obj if isinstance(obj, dict) else api.sanitize_for_serialization(obj)
                    deliver(handler, ev["type"], body)
                    if self._stop.is_set():
                        w.stop()
            except k8s.ApiException as e:
                if e.status == 404 and kind == "routes":  # the cluster does not serve ModelRoutes (yet)
                    if not listed:
                        listed = True
                        deliver(self._listed)
                    self._stop.wait(30.0)
                    continue
                log.debug("%s watch restarting: %s", kind, e)
                self._stop.wait(1.0)
            except Exception as e:  # restart the watch from a fresh list on any error (410 Gone, network)
                log.debug("%s watch restarting: %s", kind, e)
                self._stop.wait(1.0)

    def _listed(self) -> None:
        self._unsynced -= 1
        if self._unsynced <= 0:
            self.synced.set()

    # ----- called on the event loop
    def on_pool(self, kind: str, body: dict[str, Any]) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if kind == "DELETED":
            if self.pools.pop(key, None) is not None:
                self.sink.remove(key)
            return
        try:
            spec = ModelPoolSpec.model_validate(body.get("spec") or {})
        except ValidationError as e:
            log.warning("ignoring ModelPool %s/%s: %s", *key, str(e).splitlines()[0])
            return
        self.pools[key] = spec
        self._publish(key)

    def on_route(self, kind: str, body: dict[str, Any]) -> None:
        assert self.model_routes is not None
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if kind == "DELETED":
            self.model_routes.remove(key)
            return
        try:
            route = ModelRoute.from_body(body)
        except ValidationError as e:
            log.warning("ignoring ModelRoute %s/%s: %s", *key, str(e).splitlines()[0])
            self.model_routes.remove(key)
            return
        self.model_routes.apply(route)

    def on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        labels = meta.get("labels") or {}
        key = (meta["namespace"], labels.get(POOL_LABEL, ""))
        pods = self.pods.setdefault(key, {})
        url = None if kind == "DELETED" else endpoint_url(pod)
        if url is None:
            pods.pop(meta["uid"], None)
        else:
            pods[meta["uid"]] = (url, labels.get(VARIANT_LABEL))
        self._publish(key)

    def describe(self, key: PoolKey) -> PoolInfo | None:
        """The pool as the gateway should route it: its spec and its Ready pods, priced by variant."""
        spec = self.pools.get(key)
        if spec is None:
            return None
        prices = {v.name: v.cost_per_gpu_hour_usd * v.gpus_per_replica for v in spec.variants}
        endpoints = tuple(
            EndpointInfo(url, variant, prices.get(variant) if variant and prices.get(variant) else None)
            for url, variant in self.pods.get(key, {}).values()
        )
        return PoolInfo(
            key,
            spec.model.name,
            spec.routing,
            spec.model.tokenizer or spec.model.source,
            endpoints,
            slo_ttft_s=spec.slo.ttft_seconds,
        )

    def _publish(self, key: PoolKey) -> None:
        info = self.describe(key)
        if info is None:
            return
        try:
            self.sink.apply(info)
        except ValueError as e:
            log.warning("ModelPool %s/%s not routed: %s", *key, e)
