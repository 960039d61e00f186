"""Wait until the API server serves ModelPools before watching them.

kopf looks up which resources exist once, when it starts; a resource that is not in the API's discovery
yet is not watched until something else makes kopf look again. Right after `helm install` (the chart
installs the CRD a moment before the operator starts) the CRD can be Established while discovery does
not list it yet, and the operator would then ignore every ModelPool for minutes. So the operator first
waits, with a deadline, until discovery lists `modelpools`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from headway.api.labels import GROUP
from headway.api.modelpool import PLURAL, VERSION

log = logging.getLogger(__name__)


def wait_until_served(
    api: k8s.ApiClient,
    *,
    group: str = GROUP,
    version: str = VERSION,
    plural: str = PLURAL,
    timeout_s: float = 120.0,
    interval_s: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """True once discovery lists the resource (ModelPools by default); False at the deadline (the operator
    then starts anyway and says so: kopf will pick the resource up when the CRD next changes)."""
    custom = k8s.CustomObjectsApi(api)
    deadline, told = clock() + timeout_s, False
    while True:
        try:
            resources = custom.get_api_resources(group, version).resources or []
            if any(r.name == plural for r in resources):
                if told:
                    log.info("%s.%s is served now", plural, group)
                return True
        except (ApiException, HTTPError) as e:  # 404 while the group is not served yet
            log.debug("discovery of %s/%s: %s", group, version, e)
        if clock() >= deadline:
            log.warning("%s.%s/%s is not served after %.0fs; starting anyway", plural, group, version, timeout_s)
            return False
        if not told:
            log.info("waiting until the API server serves %s.%s/%s", plural, group, version)
            told = True
        sleep(interval_s)
