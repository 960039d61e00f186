"""Leader election on a coordination.k8s.io/v1 Lease, clocked by its caller.

Only the holder of the `headway-autoscaler` Lease acts, so two replicas of the autoscaler never write
conflicting recommendations. Times written to the Lease and compared with it come from the injected
clock, so a test can expire a Lease without waiting for it.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

from kubernetes import client as k8s

from headway.api.labels import AUTOSCALER_LEASE

log = logging.getLogger("headway.autoscaler")


class LeaderElector:
    """A coordination.k8s.io/v1 Lease: acquire when free or expired, renew while held; optimistic
    concurrency (resourceVersion) decides a race between two candidates."""

    def __init__(
        self,
        api: k8s.ApiClient,
        namespace: str,
        identity: str,
        duration_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.coord = k8s.CoordinationV1Api(api)
        self.namespace, self.identity, self.duration_s, self.clock = namespace, identity, duration_s, clock

    def _micro(self) -> dt.datetime:
        """Now, never on a whole second: the client turns the body's times into datetimes and writes them
        back with `isoformat()`, which drops a zero fraction, and the API server refuses a MicroTime
        without its six digits (one create in a million on a real clock; every one on a whole-second one)."""
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        return now if now.microsecond else now.replace(microsecond=1)

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
