"""The control loop: for each pool with autoscaling on, observe, decide, write status, post an Event.

The loop never touches a Deployment: it writes `status.autoscaling` of the ModelPool and the operator
applies the recommendation. Only the holder of the `headway-autoscaler` Lease acts (`lease`), so two
replicas of the autoscaler never write conflicting recommendations. What it sees of a pool comes from
`observe`, what it writes goes through `writer`; one injected clock times the decisions, the status and
the Lease. The policy's memory (windows, panic, blocked variants) lives in `status.autoscaling.state`, so
a restarted or newly elected autoscaler resumes.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client as k8s

from headway.api.labels import GROUP
from headway.api.modelpool import PLURAL, VERSION, ModelPool
from headway.api.status import AutoscalingStatus
from headway.autoscaler.capacity import CapacityProfile
from headway.autoscaler.config import AutoscalerConfig
from headway.autoscaler.errors import MetricsUnavailable
from headway.autoscaler.forecast import make_forecaster
from headway.autoscaler.lease import LeaderElector
from headway.autoscaler.metrics import AutoscalerMetrics
from headway.autoscaler.observe import observation, variant_states
from headway.autoscaler.policy import Decision, PolicyState, decide
from headway.autoscaler.provisioning import Provisioning
from headway.autoscaler.sources import DirectSource, PoolMetrics, PrometheusSource
from headway.autoscaler.writer import StatusWriter

log = logging.getLogger("headway.autoscaler")


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
        self.custom = k8s.CustomObjectsApi(api)
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
            clock,
        )
        self.writer = StatusWriter(api, metrics, clock)
        self.forecaster = make_forecaster(cfg.forecaster)
        self.buckets = sorted({(b.input_tokens, b.output_tokens) for g in profile.gpus for b in g.buckets})
        self.last_tick = clock()
        self.leader = False

    def pools(self) -> list[dict[str, Any]]:
        if not self.cfg.namespaces:
            return self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
        out: list[dict[str, Any]] = []
        for ns in self.cfg.namespaces:
            out += self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
        return out

    def reconcile(self, body: Mapping[str, Any]) -> Decision | None:
        """One pool: observe, decide, write."""
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
        known: dict[str, Provisioning] = {
            k: p for k, d in (auto.provisioning or {}).items() if (p := Provisioning.from_status(d))
        }
        variants, engines, provisioning = variant_states(self.api, self.profile, pool, known)
        m: PoolMetrics | None = None
        stale = ""
        try:
            m = self.source.read(pool.namespace, pool.name, engines, pool.spec.model.name)
        except MetricsUnavailable as e:
            stale = str(e)
        if m is not None and isinstance(self.source, DirectSource) and m.window_s == 0 and engines:
            stale = "first scrape of the engines: no rate yet"
        variants, obs, att = observation(pool, variants, m, stale, now, self.buckets)
        decision, new_state = decide(
            pool.spec.autoscaling,
            variants,
            obs,
            PolicyState.from_dict(auto.state),
            headroom=self.cfg.headroom,
            gpu_budget=self.cfg.gpu_budget,
            forecaster=self.forecaster,
        )
        self.writer.write(body, pool, decision, new_state, auto, obs.attainment, provisioning)
        self.writer.observe(pool, decision, variants, att.value if att else None, provisioning)
        return decision

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
