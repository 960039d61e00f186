"""Each gateway replica's traffic through each ModelRoute, in the route's status.

Every `interval_s` the replica server-side applies its own entry of `status.gateways` (keyed by its name,
under its own field manager): the API server merges the replicas' entries, so none overwrites another's
counts, and the operator's merge patches of the conditions leave them alone. An entry is written only
when its counts changed. Writing needs `patch` on `modelroutes/status` (deploy/rbac/gateway.yaml); a
refusal is logged once per route and the gateway goes on routing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
from typing import Any

from kubernetes import client as k8s

from headway.api.labels import GROUP
from headway.api.modelroute import API_VERSION, KIND, PLURAL, VERSION
from headway.gateway.modelrouting.table import ModelRouteTable, RouteKey

log = logging.getLogger(__name__)


def replica_name() -> str:
    """The pod's name (downward API, POD_NAME), else the host's."""
    return os.environ.get("POD_NAME") or socket.gethostname()


async def write_statuses(table: ModelRouteTable, api: k8s.ApiClient, replica: str, interval_s: float) -> None:
    custom = k8s.CustomObjectsApi(api)
    written: dict[RouteKey, dict[str, Any]] = {}
    refused: set[RouteKey] = set()
    while True:
        await asyncio.sleep(interval_s)
        now = dt.datetime.now(dt.UTC)
        for entry in list(table.by_model.values()):
            namespace, name = entry.key
            if not namespace:
                continue
            mine = entry.compiled.status(replica, now).as_patch()
            counts = {k: v for k, v in mine.items() if k != "time"}
            if written.get(entry.key) == counts:
                continue
            body = {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": {"name": name, "namespace": namespace},
                "status": {"gateways": [mine]},
            }
            try:
                await asyncio.to_thread(
                    custom.patch_namespaced_custom_object_status,
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    name,
                    body,
                    field_manager=f"headway-gateway-{replica}"[:128],
                    force=True,
                    _content_type="application/apply-patch+yaml",
                )
            except k8s.ApiException as e:
                if entry.key not in refused:
                    refused.add(entry.key)
                    log.warning("status of ModelRoute %s/%s not written: %s %s", namespace, name, e.status, e.reason)
                continue
            written[entry.key] = counts
            refused.discard(entry.key)
