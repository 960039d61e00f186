"""Kopf wiring: every trigger ends in the same reconcile or status refresh of one pool.

- ModelPool create / update / resume, and a timer: full reconcile (level-triggered, idempotent).
- A child Deployment deleted, or its spec edited by someone else: full reconcile of its pool (repair).
- A child Deployment's or pod's status changing: status refresh of its pool, debounced per pool.
- The InferencePool CRD appearing or going: full reconcile of every pool (InferencePools follow).
- A ModelRoute created or updated (with --webhook-port): admission, refused naming the field (`admission`).
- A ModelRoute created, updated, resumed, on the resync timer, or a pool of its namespace coming, going or
  changing readiness: its status (Ready, its classifier's held-out accuracy; `routes`).
Handlers are registered on a registry built per operator (`build_registry`), so settings are not globals.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes.client.rest import ApiException
from prometheus_client import start_http_server
from pydantic import ValidationError

from headway.api import MANAGED_BY_LABEL, MANAGED_BY_VALUE, POOL_LABEL
from headway.api.errors import field_error
from headway.api.events import load_api_client
from headway.api.labels import GROUP, INFERENCE_POOL_CRD
from headway.api.modelpool import PLURAL, VERSION
from headway.api.modelroute import PLURAL as ROUTE_PLURAL
from headway.api.modelroute import ModelRoute, ModelRouteStatus
from headway.operator import metrics
from headway.operator.admission import (
    WEBHOOK_NAME,
    InvalidRoute,
    build_webhook_configuration,
    missing_pool,
    new_pool_references,
    parse_route,
    spec_unchanged,
    webhook_server,
)
from headway.operator.config import OperatorConfig
from headway.operator.kube import Kube
from headway.operator.reconcile import InvalidSpec, PoolReconciler
from headway.operator.routes import classifier_status, invalid_status
from headway.operator.routes import route_status as route_status_of

log = logging.getLogger(__name__)
CHILD_LABELS = {MANAGED_BY_LABEL: MANAGED_BY_VALUE, POOL_LABEL: kopf.PRESENT}
# An unexpected error (a dropped connection, a timeout) is retried after this delay rather than kopf's
# default minute: a pool should not wait a minute for its Deployments because one request failed.
RETRY_BACKOFF_S = 5.0
PUBLISH_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)
"""Backoff of webhook configuration writes the API server refuses for now (429, 5xx)."""


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


async def _publish_webhook(kube: Kube, cfg: OperatorConfig, client: kopf.WebhookClientConfig | None) -> None:
    """Point the webhook configuration at the server now listening (None: empty it, the server has
    stopped). A failure to publish stops the operator: it was asked to check routes and cannot; a failure
    to withdraw is only logged, as the operator is stopping anyway."""
    name = cfg.webhook_configuration
    if client is None:
        try:
            await asyncio.to_thread(kube.clear_webhooks, name)
        except ApiException as e:
            log.warning("could not remove the ModelRoute webhook from %s: %s %s", name, e.status, e.reason)
        else:
            log.info("ModelRoute admission webhook removed from %s", name)
        return
    body = build_webhook_configuration(name, client)
    for delay_s in (*PUBLISH_RETRY_DELAYS_S, None):
        try:
            await asyncio.to_thread(kube.apply, body)
        except ApiException as e:
            if delay_s is None or e.status not in (429, 500, 502, 503, 504):
                raise
            await asyncio.sleep(delay_s)
        else:
            log.info("ModelRoute admission webhook in %s: %s", name, client.get("url") or client.get("service"))
            return


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
        if cfg.webhook_port:
            settings.admission.server = webhook_server(cfg, lambda client: _publish_webhook(kube, cfg, client))

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
        ready = (body.get("status") or {}).get("readyReplicas") or 0
        readiness: dict[tuple[str, str], bool] = state.setdefault("readiness", {})
        if event["type"] == "DELETED" or readiness.get(key) != bool(ready):
            readiness[key] = bool(ready)
            if event["type"] == "DELETED":
                readiness.pop(key, None)
            await refresh_routes(namespace)
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

    # ----- ModelRoute status: its pools, its classifier
    classifiers: dict[tuple[str, str, int], Any] = {}
    """(namespace, name, generation) → the classifier's status: cross-validation runs once per spec."""

    async def route_status(body: Mapping[str, Any], pools: Mapping[str, Any] | None = None) -> None:
        meta = body["metadata"]
        namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation", 0)
        previous = ModelRouteStatus.model_validate(body.get("status") or {})
        now = dt.datetime.now(dt.UTC)
        kube = reconciler().kube
        try:
            route = ModelRoute.from_body(body)
        except ValidationError as e:
            status = invalid_status(field_error(e), generation, previous, now)
        else:
            key = (namespace, name, generation)
            if key not in classifiers:
                classifiers[key] = await asyncio.to_thread(classifier_status, route)
            if pools is None:
                pools = await asyncio.to_thread(kube.pools_by_name, namespace)
            status = route_status_of(route, pools, previous, now, classifiers[key])
        patch = status.as_patch()
        if patch != previous.as_patch():
            await asyncio.to_thread(kube.patch_route_status, namespace, name, patch)

    @kopf.on.create(GROUP, VERSION, ROUTE_PLURAL, backoff=RETRY_BACKOFF_S, registry=registry, when=served)
    @kopf.on.update(GROUP, VERSION, ROUTE_PLURAL, backoff=RETRY_BACKOFF_S, registry=registry, when=served)
    @kopf.on.resume(GROUP, VERSION, ROUTE_PLURAL, backoff=RETRY_BACKOFF_S, registry=registry, when=served)
    @kopf.timer(
        GROUP,
        VERSION,
        ROUTE_PLURAL,
        backoff=RETRY_BACKOFF_S,
        interval=cfg.resync_interval_s,
        initial_delay=cfg.resync_interval_s,
        registry=registry,
        when=served,
    )
    async def on_route(body: kopf.Body, **_: Any) -> None:
        try:
            await route_status(body)
        except ApiException as e:
            raise kopf.TemporaryError(f"API error {e.status}: {e.reason}", delay=5) from None

    async def refresh_routes(namespace: str) -> None:
        """A pool came, went or changed readiness: the routes of its namespace say so."""
        if "reconciler" not in state:
            return
        kube = reconciler().kube
        try:
            routes = await asyncio.to_thread(kube.routes, namespace)
            if not routes:
                return
            pools = await asyncio.to_thread(kube.pools_by_name, namespace)
            for body in routes:
                await route_status(body, pools)
        except ApiException as e:
            log.warning("ModelRoutes of %s not refreshed: %s %s", namespace, e.status, e.reason)

    async def judge_route(body: kopf.Body, old: kopf.Body | None, namespace: str) -> None:
        """Raises AdmissionError naming the field for a route that cannot work (see `admission`)."""
        if spec_unchanged(body, old):
            return
        try:
            route = parse_route(body)
        except InvalidRoute as e:
            raise kopf.AdmissionError(str(e), code=422) from None
        refs = new_pool_references(route.spec, old)
        if not refs:
            return
        if "reconciler" not in state:
            raise kopf.AdmissionError("the operator is starting: try again", code=503)
        try:
            existing = await asyncio.to_thread(reconciler().kube.pool_names, namespace)
        except ApiException as e:
            raise kopf.AdmissionError(f"cannot read ModelPools: API error {e.status}: {e.reason}", code=503) from None
        if problem := missing_pool(refs, existing, namespace):
            raise kopf.AdmissionError(problem, code=422)

    if cfg.webhook_port:  # kopf refuses to start with admission handlers and no server to serve them

        @kopf.on.validate(
            GROUP,
            VERSION,
            ROUTE_PLURAL,
            id=WEBHOOK_NAME,
            operations=["CREATE", "UPDATE"],
            registry=registry,
            when=served,
        )
        async def validate_route(body: kopf.Body, old: kopf.Body | None, namespace: str, **_: Any) -> None:
            """Refuses (422) a route pydantic refuses or one naming a ModelPool its namespace lacks; the
            message names the field. 503 when the pools cannot be read (the write is refused: fail closed).
            A route in a namespace this operator does not serve (--namespace) passes; the operator that
            serves it judges it."""
            outcome = "error"
            try:
                await judge_route(body, old, namespace)
                outcome = "admitted"
            except kopf.AdmissionError as e:
                outcome = "refused" if e.code == 422 else "error"
                raise
            finally:
                metrics.ADMISSION_REVIEWS.labels(outcome).inc()

    @kopf.on.probe(id="pools", registry=registry)
    def probe(**_: Any) -> int:
        return len(state.get("pools", {}))

    return registry
