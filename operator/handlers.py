"""Kopf wiring: every trigger ends in the same reconcile or status refresh of one pool.

- ModelPool create / update / resume, and a timer: full reconcile (level-triggered, idempotent).
- A child Deployment deleted, or its spec edited by someone else: full reconcile of its pool (repair).
- A child Deployment's or pod's status changing: status refresh of its pool, debounced per pool.
- The InferencePool CRD appearing or going: full reconcile of every pool (InferencePools follow).
Handlers are registered on a registry built per operator (`build_registry`), so settings are not globals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import kopf
from kubernetes.client.rest import ApiException
from prometheus_client import start_http_server

from headway.api import MANAGED_BY_LABEL, MANAGED_BY_VALUE, POOL_LABEL
from headway.api.events import load_api_client
from headway.api.labels import GROUP, INFERENCE_POOL_CRD
from headway.api.modelpool import PLURAL, VERSION
from headway.operator import metrics
from headway.operator.config import OperatorConfig
from headway.operator.kube import Kube
from headway.operator.reconcile import InvalidSpec, PoolReconciler

log = logging.getLogger(__name__)
CHILD_LABELS = {MANAGED_BY_LABEL: MANAGED_BY_VALUE, POOL_LABEL: kopf.PRESENT}
# An unexpected error (a dropped connection, a timeout) is retried after this delay rather than kopf's
# default minute: a pool should not wait a minute for its Deployments because one request failed.
RETRY_BACKOFF_S = 5.0


class _Refresher:
    """Coalesces status refreshes: many child events for one pool within `delay_s` cause one refresh."""

    def __init__(self, reconciler: PoolReconciler, delay_s: float) -> None:
        self.reconciler, self.delay_s = reconciler, delay_s
        self.tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    def request(self, namespace: str, pool: str) -> None:
        key = (namespace, pool)
        if key not in self.tasks:
            self.tasks[key] = asyncio.create_task(self._run(key))

    async def _run(self, key: tuple[str, str]) -> None:
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.tasks.pop(key, None)
        try:
            await asyncio.to_thread(self.reconciler.refresh_status, *key)
        except ApiException as e:
            log.warning("status refresh of %s/%s failed: %s", key[0], key[1], e.reason)

    async def close(self) -> None:
        for t in list(self.tasks.values()):
            t.cancel()
        for t in list(self.tasks.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await t


def build_registry(cfg: OperatorConfig) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    state: dict[str, Any] = {}

    def reconciler() -> PoolReconciler:
        return state["reconciler"]

    def served(namespace: str | None, **_: Any) -> bool:
        return cfg.serves(namespace)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=f"{GROUP}")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=f"{GROUP}")
        settings.execution.max_workers = 8
        kube = Kube(load_api_client(), cfg.field_manager)
        state["reconciler"] = PoolReconciler(kube, cfg)
        state["refresher"] = _Refresher(state["reconciler"], cfg.status_debounce_s)
        if cfg.metrics_port:
            start_http_server(cfg.metrics_port, addr=cfg.metrics_host, registry=metrics.REGISTRY)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        if "refresher" in state:
            await state["refresher"].close()

    async def reconcile(body: kopf.Body, trigger: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            outcome = await asyncio.to_thread(reconciler().reconcile, body)
        except InvalidSpec as e:
            metrics.RECONCILES.labels(trigger, "invalid").inc()
            metrics.RECONCILE_ERRORS.labels("invalid_spec").inc()
            await asyncio.to_thread(reconciler().record_invalid, body, str(e))
            raise kopf.PermanentError(str(e)) from None
        except ApiException as e:
            metrics.RECONCILES.labels(trigger, "error").inc()
            metrics.RECONCILE_ERRORS.labels(f"api_{e.status}").inc()
            raise kopf.TemporaryError(f"API error {e.status}: {e.reason}", delay=5 if e.status != 403 else 30) from None
        finally:
            metrics.RECONCILE_DURATION.labels(trigger).observe(time.perf_counter() - t0)
        metrics.RECONCILES.labels(trigger, "ok").inc()
        return {"created": outcome.created, "updated": outcome.updated, "deleted": outcome.deleted}

    @kopf.on.create(GROUP, VERSION, PLURAL, backoff=RETRY_BACKOFF_S, registry=registry, when=served)
    async def on_create(body: kopf.Body, **_: Any) -> None:
        await reconcile(body, "create")

    @kopf.on.update(GROUP, VERSION, PLURAL, backoff=RETRY_BACKOFF_S, registry=registry, when=served)
    async def on_update(body: kopf.Body, **_: Any) -> None:
        await reconcile(body, "update")

    @kopf.on.resume(GROUP, VERSION, PLURAL, backoff=RETRY_BACKOFF_S, registry=registry, when=served)
    async def on_resume(body: kopf.Body, **_: Any) -> None:
        await reconcile(body, "resume")

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, when=served)
    async def on_pool_event(event: dict[str, Any], body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
        """Counts pools, and applies a new autoscaler recommendation (a status change, which the
        spec-driven update handler does not see). Children of a deleted pool go with it through
        owner references (the garbage collector), so deletion needs no handler and no finalizer."""
        key = (namespace, name)
        pools: dict[tuple[str, str], Any] = state.setdefault("pools", {})
        if event["type"] == "DELETED":
            pools.pop(key, None)
            metrics.POOLS.set(len(pools))
            return
        recommendation = (body.get("status") or {}).get("autoscaling", {}).get("variants")
        previous = pools.get(key, recommendation)
        pools[key] = recommendation
        metrics.POOLS.set(len(pools))
        if recommendation != previous and "reconciler" in state and not body["metadata"].get("deletionTimestamp"):
            with contextlib.suppress(kopf.PermanentError, kopf.TemporaryError):
                await reconcile(body, "autoscaling")

    @kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        backoff=RETRY_BACKOFF_S,
        interval=cfg.resync_interval_s,
        initial_delay=cfg.resync_interval_s,
        registry=registry,
        when=served,
    )
    async def on_timer(body: kopf.Body, **_: Any) -> None:
        await reconcile(body, "timer")

    @kopf.on.event("apps", "v1", "deployments", labels=CHILD_LABELS, registry=registry, when=served)
    async def on_deployment(event: dict[str, Any], body: kopf.Body, namespace: str, **_: Any) -> None:
        if "reconciler" not in state:
            return
        pool = body["metadata"]["labels"][POOL_LABEL]
        if event["type"] == "DELETED" or reconciler().is_foreign_change(body):
            reconciler().forget(namespace, body["metadata"]["name"])
            parent = await asyncio.to_thread(reconciler().kube.get_pool, namespace, pool)
            if parent is not None and not parent["metadata"].get("deletionTimestamp"):
                with contextlib.suppress(kopf.PermanentError, kopf.TemporaryError):
                    await reconcile(parent, "drift")
            return
        state["refresher"].request(namespace, pool)

    @kopf.on.event("", "v1", "pods", labels=CHILD_LABELS, registry=registry, when=served)
    async def on_pod(body: kopf.Body, namespace: str, **_: Any) -> None:
        if "refresher" in state:
            state["refresher"].request(namespace, body["metadata"]["labels"][POOL_LABEL])

    @kopf.on.event(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        when=lambda name, **_: name == INFERENCE_POOL_CRD,
        registry=registry,
    )
    async def on_inference_pool_api(event: dict[str, Any], **_: Any) -> None:
        """The InferencePool CRD appeared, became established or went: every pool gets (or stops
        getting) its InferencePool now, not at its next timer."""
        if "reconciler" not in state:
            return
        reconciler().forget_apis()
        if event["type"] is None:  # the initial listing: every pool is resumed (reconciled) anyway
            return
        for body in await asyncio.to_thread(reconciler().kube.all_pools):
            meta = body["metadata"]
            if cfg.serves(meta["namespace"]) and not meta.get("deletionTimestamp"):
                with contextlib.suppress(kopf.PermanentError, kopf.TemporaryError):
                    await reconcile(body, "api")

    @kopf.on.probe(id="pools", registry=registry)
    def probe(**_: Any) -> int:
        return len(state.get("pools", {}))

    return registry
