"""The control loop: for each pool with autoscaling on, observe, decide, write status, post an Event.

The loop never touches a Deployment: it writes `status.autoscaling` of the ModelPool and the operator
applies the recommendation. Only the holder of the `headway-autoscaler` Lease acts, so two replicas of
the autoscaler never write conflicting recommendations. The policy's memory (windows, panic, blocked
variants) lives in `status.autoscaling.state`, so a restarted or newly elected autoscaler resumes.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from kubernetes import client as k8s

from headway.api.events import build_event
from headway.api.labels import AUTOSCALER_LEASE, CONDITION_SCALING_ACTIVE, GROUP, POOL_LABEL, VARIANT_LABEL
from headway.api.modelpool import PLURAL, VERSION, ModelPool
from headway.api.status import AutoscalingStatus, ModelPoolStatus, find_condition
from headway.autoscaler.capacity import CapacityProfile
from headway.autoscaler.config import AutoscalerConfig
from headway.autoscaler.errors import MetricsUnavailable
from headway.autoscaler.forecast import make_forecaster
from headway.autoscaler.metrics import AutoscalerMetrics
from headway.autoscaler.policy import Decision, Observation, PolicyState, VariantState, decide
from headway.autoscaler.provisioning import Provisioning, variant_provisioning
from headway.autoscaler.slo import attainment, quantile
from headway.autoscaler.sources import DirectSource, EnginePod, PoolMetrics, PrometheusSource, mix_of
from headway.autoscaler.status import build_autoscaling_status, slo_status

log = logging.getLogger("headway.autoscaler")
COMPONENT = "headway-autoscaler"


def _plain(api: k8s.ApiClient, obj: Any) -> dict[str, Any]:
    return api.sanitize_for_serialization(obj)


# ----- leader election
class LeaderElector:
    """A coordination.k8s.io/v1 Lease: acquire when free or expired, renew while held; optimistic
    concurrency (resourceVersion) decides a race between two candidates."""

    def __init__(self, api: k8s.ApiClient, namespace: str, identity: str, duration_s: float) -> None:
        self.coord = k8s.CoordinationV1Api(api)
        self.namespace, self.identity, self.duration_s = namespace, identity, duration_s

    def _micro(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def try_acquire(self) -> bool:
        now = self._micro()
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.duration_s),
            "renewTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        try:
            lease = self.coord.read_namespaced_lease(AUTOSCALER_LEASE, self.namespace)
        except k8s.ApiException as e:
            if e.status != 404:
                raise
            body = {"metadata": {"name": AUTOSCALER_LEASE}, "spec": {**spec, "acquireTime": spec["renewTime"]}}
            try:
                self.coord.create_namespaced_lease(self.namespace, body)
                return True
            except k8s.ApiException as e2:
                if e2.status == 409:
                    return False
                raise
        holder = lease.spec.holder_identity
        renew = lease.spec.renew_time
        expired = renew is None or (now - renew).total_seconds() > (lease.spec.lease_duration_seconds or 0)
        if holder not in (None, "", self.identity) and not expired:
            return False
        body = {
            "metadata": {"name": AUTOSCALER_LEASE, "resourceVersion": lease.metadata.resource_version},
            "spec": spec,
        }
        if holder != self.identity:
            body["spec"]["acquireTime"] = spec["renewTime"]
        try:
            self.coord.replace_namespaced_lease(AUTOSCALER_LEASE, self.namespace, body)
            return True
        except k8s.ApiException as e:
            if e.status == 409:
                return False
            raise

    def release(self) -> None:
        """Give the Lease up on a clean stop, so a successor need not wait for it to expire."""
        try:
            lease = self.coord.read_namespaced_lease(AUTOSCALER_LEASE, self.namespace)
            if lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = ""
                self.coord.replace_namespaced_lease(AUTOSCALER_LEASE, self.namespace, lease)
        except k8s.ApiException as e:
            log.warning("could not release the lease: %s %s", e.status, e.reason)


# ----- the loop
def _pod_ready(p: Mapping[str, Any]) -> bool:
    if p["metadata"].get("deletionTimestamp"):
        return False
    conds = (p.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def _unschedulable(p: Mapping[str, Any]) -> bool:
    conds = (p.get("status") or {}).get("conditions") or []
    return any(
        c["type"] == "PodScheduled" and c["status"] == "False" and c.get("reason") == "Unschedulable" for c in conds
    )


def _engine_url(p: Mapping[str, Any]) -> str | None:
    ip = (p.get("status") or {}).get("podIP")
    for c in p["spec"]["containers"]:
        for port in c.get("ports") or []:
            if port.get("name") == "http":
                return f"http://{ip}:{port['containerPort']}" if ip else None
    return None


class Controller:
    def __init__(
        self,
        cfg: AutoscalerConfig,
        api: k8s.ApiClient,
        profile: CapacityProfile,
        metrics: AutoscalerMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg, self.api, self.profile, self.metrics, self.clock = cfg, api, profile, metrics, clock
        self.core, self.apps, self.custom = k8s.CoreV1Api(api), k8s.AppsV1Api(api), k8s.CustomObjectsApi(api)
        self.source = (
            PrometheusSource(cfg.prometheus_url, window_s=max(cfg.interval_s * 2, 10.0))
            if cfg.prometheus_url
            else DirectSource(cfg.gateway_urls)
        )
        self.elector = LeaderElector(
            api,
            cfg.leader_election_namespace,
            cfg.identity or f"{socket.gethostname()}-{id(self):x}",
            cfg.lease_duration_s,
        )
        self.forecaster = make_forecaster(cfg.forecaster)
        self.last_tick = clock()
        self.leader = False

    # --- reads
    def pools(self) -> list[dict[str, Any]]:
        if not self.cfg.namespaces:
            return self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
        out: list[dict[str, Any]] = []
        for ns in self.cfg.namespaces:
            out += self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
        return out

    def variant_states(
        self, pool: ModelPool, known: Mapping[str, Provisioning] | None = None
    ) -> tuple[list[VariantState], list[EnginePod], dict[str, Provisioning]]:
        """Replicas asked of each variant's Deployment, its ready/pending/unschedulable pods, how long
        its Ready pods took to provision (else what `known` remembers), and the URLs of the ready
        engines."""
        sel = f"{POOL_LABEL}={pool.name}"
        deps = [
            _plain(self.api, d) for d in self.apps.list_namespaced_deployment(pool.namespace, label_selector=sel).items
        ]
        pods = [_plain(self.api, p) for p in self.core.list_namespaced_pod(pool.namespace, label_selector=sel).items]
        replicas = {d["metadata"]["labels"].get(VARIANT_LABEL): d["spec"].get("replicas") or 0 for d in deps}
        engines: list[EnginePod] = []
        out = []
        names = {v.name for v in pool.spec.variants}
        provisioning = {k: p for k, p in (known or {}).items() if k in names}
        for v in pool.spec.variants:
            mine = [p for p in pods if p["metadata"]["labels"].get(VARIANT_LABEL) == v.name]
            live = [p for p in mine if not p["metadata"].get("deletionTimestamp")]
            ready = [p for p in live if _pod_ready(p)]
            pending = [p for p in live if (p.get("status") or {}).get("phase") == "Pending"]
            for p in ready:
                url = _engine_url(p)
                if url:
                    engines.append(EnginePod(p["metadata"]["name"], v.name, url))
            if (prov := variant_provisioning(ready)) is not None:
                provisioning[v.name] = prov
            seen = provisioning.get(v.name)
            out.append(
                VariantState(
                    name=v.name,
                    replicas=int(replicas.get(v.name, 0)),
                    ready=len(ready),
                    pending=len(pending),
                    unschedulable=sum(1 for p in pending if _unschedulable(p)),
                    gpus_per_replica=v.gpus_per_replica,
                    cost_per_gpu_hour_usd=v.cost_per_gpu_hour_usd,
                    min_replicas=v.min_replicas,
                    max_replicas=v.max_replicas,
                    capacity=self.profile.for_variant(v.gpu_product, v.gpus_per_replica),
                    provisioning_s=seen.total_s if seen else None,
                )
            )
        return out, engines, provisioning

    # --- one pool
    def reconcile(self, body: Mapping[str, Any]) -> Decision | None:
        try:
            pool = ModelPool.from_body(body)
        except ValueError as e:
            log.warning(
                "skipping %s/%s: %s", body["metadata"]["namespace"], body["metadata"]["name"], str(e).splitlines()[0]
            )
            return None
        if not pool.spec.autoscaling.enabled:
            return None
        now = self.clock()
        auto = pool.status.autoscaling or AutoscalingStatus()
        known = {k: p for k, d in (auto.provisioning or {}).items() if (p := Provisioning.from_status(d))}
        variants, engines, provisioning = self.variant_states(pool, known)
        m: PoolMetrics | None = None
        stale = ""
        try:
            m = self.source.read(pool.namespace, pool.name, engines, pool.spec.model.name)
        except MetricsUnavailable as e:
            stale = str(e)
        slo = pool.spec.slo
        if m is not None:
            variants = [
                replace(
                    v,
                    observed_ttft_s=quantile(m.variant_ttft.get(v.name) or {}, slo.ttft_percentile / 100),
                    observed_itl_s=quantile(m.variant_itl.get(v.name) or {}, slo.itl_percentile / 100),
                )
                for v in variants
            ]
        buckets = sorted({(b.input_tokens, b.output_tokens) for g in self.profile.gpus for b in g.buckets})
        att = (
            attainment(m.ttft, m.itl, slo.ttft_seconds, slo.itl_seconds, slo.ttft_percentile, slo.itl_percentile)
            if m
            else None
        )
        if m is not None and isinstance(self.source, DirectSource) and m.window_s == 0 and engines:
            stale = "first scrape of the engines: no rate yet"
        obs = Observation(
            time=now,
            fresh=not stale,
            rps=m.rps if m else 0.0,
            mix=mix_of(m, buckets) if m else {},
            held_requests=m.held if m else 0.0,
            in_flight=(m.waiting + m.running + m.gateway_in_flight) if m else 0.0,
            attainment=att.value if att else None,
            stale_reason=stale,
        )
        state = PolicyState.from_dict(auto.state)
        decision, new_state = decide(
            pool.spec.autoscaling,
            variants,
            obs,
            state,
            headroom=self.cfg.headroom,
            gpu_budget=self.cfg.gpu_budget,
            forecaster=self.forecaster,
        )
        self.write(body, pool, decision, new_state, auto, obs.attainment, provisioning)
        self.observe(pool, decision, variants, att.value if att else None, provisioning)
        return decision

    def write(
        self,
        body: Mapping[str, Any],
        pool: ModelPool,
        d: Decision,
        state: PolicyState,
        old: AutoscalingStatus,
        attained: float | None,
        provisioning: Mapping[str, Provisioning],
    ) -> None:
        status = build_autoscaling_status(d, state, old, provisioning, dt.datetime.fromtimestamp(self.clock(), dt.UTC))
        slo = slo_status(attained, pool.spec.slo.attainment, d.stale)
        self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            pool.namespace,
            PLURAL,
            pool.name,
            {"status": ModelPoolStatus(autoscaling=status, slo_status=slo).as_patch()},
            _content_type="application/merge-patch+json",
        )
        prev = find_condition(old.conditions, CONDITION_SCALING_ACTIVE)
        flipped = prev is None or prev.status != ("False" if d.stale else "True")
        if d.changed or (flipped and d.stale):
            self.post_event(body, d.reason, d.message, warning=d.stale)
        log.info(
            "pool %s/%s: %s desired=%s cost=%.2f/h changed=%s inputs=%s terms=%s",
            pool.namespace,
            pool.name,
            d.reason,
            d.desired,
            d.cost_per_hour_usd,
            d.changed,
            json.dumps(d.inputs, separators=(",", ":")),
            json.dumps(d.terms, separators=(",", ":")),
        )

    def post_event(self, body: Mapping[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
        meta = body["metadata"]
        event = build_event(body, reason, message, COMPONENT, warning=warning)
        try:
            self.core.create_namespaced_event(meta["namespace"], event)
        except k8s.ApiException as e:  # an Event is best effort; the decision already stands in status
            log.warning("could not post event %s for %s/%s: %s", reason, meta["namespace"], meta["name"], e.reason)

    def observe(
        self,
        pool: ModelPool,
        d: Decision,
        variants: list[VariantState],
        att: float | None,
        provisioning: Mapping[str, Provisioning],
    ) -> None:
        key = f"{pool.namespace}/{pool.name}"
        for name, p in provisioning.items():
            for phase, s in (
                ("scheduling", p.scheduling_s),
                ("starting", p.starting_s),
                ("loading", p.loading_s),
                ("total", p.total_s),
            ):
                self.metrics.provisioning.labels(key, name, phase).set(s)
        for v in variants:
            self.metrics.current.labels(key, v.name).set(v.replicas)
            self.metrics.desired.labels(key, v.name).set(d.desired[v.name])
        if att is not None:
            self.metrics.attainment.labels(key, "ttft+itl").set(att)
        self.metrics.cost.labels(key).set(d.cost_per_hour_usd)
        self.metrics.decisions.labels(key, d.reason).inc()
        self.metrics.demand.labels(key).set(d.terms.get("demandRps", 0.0))

    # --- the loop
    def tick(self) -> None:
        self.leader = self.elector.try_acquire()
        if not self.leader:
            return
        for body in self.pools():
            try:
                self.reconcile(body)
            except k8s.ApiException as e:
                meta = body["metadata"]
                log.warning("pool %s/%s: API error %s %s", meta["namespace"], meta["name"], e.status, e.reason)

    def healthy(self) -> bool:
        """Alive while the loop turns: the last completed tick (as leader or not) is recent."""
        return self.clock() - self.last_tick < max(3 * self.cfg.interval_s, 30.0)

    def run(self, stop: Callable[[], bool], wait: Callable[[float], object] = time.sleep) -> None:
        try:
            self._loop(stop, wait)
        finally:
            if self.leader:
                self.elector.release()

    def _loop(self, stop: Callable[[], bool], wait: Callable[[float], object]) -> None:
        while not stop():
            started = self.clock()
            try:
                self.tick()
            except k8s.ApiException as e:
                log.warning("tick failed: API error %s %s", e.status, e.reason)
            except OSError as e:
                log.warning("tick failed: %s", e)
            self.last_tick = self.clock()
            wait(max(0.0, self.cfg.interval_s - (self.clock() - started)))
