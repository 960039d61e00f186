"""The operator's Kubernetes I/O: server-side apply of children (and of its webhook configuration), reads
of what exists, status writes.

Synchronous (the official client); handlers call it through `asyncio.to_thread`. Foreign exceptions
stay here as ApiException for the handler boundary to translate.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s

from headway.api import MANAGED_BY_LABEL, MANAGED_BY_VALUE, POOL_LABEL, VARIANT_LABEL
from headway.api.labels import (
    GROUP,
    INFERENCE_POOL_GROUP,
    INFERENCE_POOL_KIND,
    INFERENCE_POOL_PLURAL,
    INFERENCE_POOL_VERSION,
)
from headway.api.modelpool import PLURAL, VERSION
from headway.api.modelroute import PLURAL as ROUTE_PLURAL

_APPLY = "application/apply-patch+yaml"


class Kube:
    def __init__(self, api: k8s.ApiClient, field_manager: str) -> None:
        self.api = api
        self.apps = k8s.AppsV1Api(api)
        self.core = k8s.CoreV1Api(api)
        self.policy = k8s.PolicyV1Api(api)
        self.custom = k8s.CustomObjectsApi(api)
        self.admission = k8s.AdmissionregistrationV1Api(api)
        self.field_manager = field_manager

    def _plain(self, obj: Any) -> dict[str, Any]:
        return self.api.sanitize_for_serialization(obj)

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply as the operator's field manager, taking fields back from anyone who changed them."""
        meta, kw = obj["metadata"], {"field_manager": self.field_manager, "force": True, "_content_type": _APPLY}
        kind = obj["kind"]
        if kind == "Deployment":
            out = self.apps.patch_namespaced_deployment(meta["name"], meta["namespace"], obj, **kw)
        elif kind == "Service":
            out = self.core.patch_namespaced_service(meta["name"], meta["namespace"], obj, **kw)
        elif kind == "PodDisruptionBudget":
            out = self.policy.patch_namespaced_pod_disruption_budget(meta["name"], meta["namespace"], obj, **kw)
        elif kind == INFERENCE_POOL_KIND:
            out = self.custom.patch_namespaced_custom_object(
                INFERENCE_POOL_GROUP,
                INFERENCE_POOL_VERSION,
                meta["namespace"],
                INFERENCE_POOL_PLURAL,
                meta["name"],
                obj,
                **kw,
            )
        elif kind == "ValidatingWebhookConfiguration":
            out = self.admission.patch_validating_webhook_configuration(meta["name"], obj, **kw)
        else:
            raise ValueError(f"the operator does not manage {kind}")
        return self._plain(out)

    def serves_inference_pools(self) -> bool:
        """Whether the API server serves InferencePools (the Gateway API Inference Extension's CRD) to this
        operator: a 404 means not served, a 403 that its RBAC lacks them (both: none are kept)."""
        try:
            self.custom.list_cluster_custom_object(
                INFERENCE_POOL_GROUP, INFERENCE_POOL_VERSION, INFERENCE_POOL_PLURAL, limit=1
            )
        except k8s.ApiException as e:
            if e.status in (403, 404):
                return False
            raise
        return True

    def get_inference_pool(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(
                INFERENCE_POOL_GROUP, INFERENCE_POOL_VERSION, namespace, INFERENCE_POOL_PLURAL, name
            )
        except k8s.ApiException as e:
            if e.status == 404:
                return None
            raise

    def delete_inference_pool(self, namespace: str, name: str) -> bool:
        """True when one was deleted."""
        try:
            self.custom.delete_namespaced_custom_object(
                INFERENCE_POOL_GROUP, INFERENCE_POOL_VERSION, namespace, INFERENCE_POOL_PLURAL, name
            )
            return True
        except k8s.ApiException as e:
            if e.status == 404:
                return False
            raise

    def get_pool(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except k8s.ApiException as e:
            if e.status == 404:
                return None
            raise

    def clear_webhooks(self, name: str) -> None:
        """Empty the ValidatingWebhookConfiguration `name`; one already gone stays gone (never re-created,
        as applying would: an uninstall may have deleted it)."""
        try:
            self.admission.patch_validating_webhook_configuration(
                name,
                {"webhooks": []},
                field_manager=self.field_manager,
                _content_type="application/merge-patch+json",
            )
        except k8s.ApiException as e:
            if e.status != 404:
                raise

    def pool_names(self, namespace: str) -> set[str]:
        return {
            p["metadata"]["name"]
            for p in self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        }

    def pools_by_name(self, namespace: str) -> dict[str, dict[str, Any]]:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        return {p["metadata"]["name"]: p for p in items}

    def routes(self, namespace: str) -> list[dict[str, Any]]:
        return self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, ROUTE_PLURAL)["items"]

    def patch_route_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            ROUTE_PLURAL,
            name,
            {"status": status},
            _content_type="application/merge-patch+json",
        )

    def all_pools(self) -> list[dict[str, Any]]:
        return self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]

    def deployments(self, namespace: str, pool: str) -> list[dict[str, Any]]:
        sel = f"{POOL_LABEL}={pool},{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
        return [self._plain(d) for d in self.apps.list_namespaced_deployment(namespace, label_selector=sel).items]

    def pods(self, namespace: str, pool: str) -> list[dict[str, Any]]:
        sel = f"{POOL_LABEL}={pool},{VARIANT_LABEL}"
        return [self._plain(p) for p in self.core.list_namespaced_pod(namespace, label_selector=sel).items]

    def delete_deployment(self, namespace: str, name: str) -> None:
        try:
            self.apps.delete_namespaced_deployment(name, namespace, propagation_policy="Background")
        except k8s.ApiException as e:
            if e.status != 404:
                raise

    def patch_pool_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
            _content_type="application/merge-patch+json",
        )
