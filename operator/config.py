"""Operator settings: one default each, overridable by flags or HEADWAY_OPERATOR_* environment variables."""

from __future__ import annotations

from fnmatch import fnmatchcase

from pydantic import BaseModel, Field


class OperatorConfig(BaseModel, frozen=True, extra="forbid"):
    kv_events_endpoint: str = Field(
        "tcp://headway-kvcache.headway-system.svc.cluster.local:5557",
        description="ZMQ endpoint of the KV-cache indexer that engines connect to (the indexer binds).",
    )
    kv_replay_port: int = Field(
        5558,
        ge=1,
        le=65535,
        description="Port of each engine's KV-event replay socket "
        "(bound on the pod IP), from which the indexer fetches batches it missed.",
    )
    engine_port: int = Field(8000, ge=1, le=65535, description="Port of the engines' OpenAI API and /metrics.")
    resync_interval_s: float = Field(60.0, gt=0, description="Full reconcile of every pool this often.")
    status_debounce_s: float = Field(0.5, ge=0, description="Coalesce status refreshes of one pool.")
    field_manager: str = Field("headway-operator", description="Server-side apply field manager.")
    metrics_host: str = Field("127.0.0.1", description="Address of the operator's /metrics endpoint.")
    metrics_port: int = Field(9464, ge=0, le=65535, description="Port of /metrics (0: disabled).")
    webhook_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port of the ModelRoute admission webhook (HTTPS), which refuses routes naming a missing "
        "ModelPool or an invalid pattern (0: no webhook).",
    )
    webhook_bind: str = Field("127.0.0.1", description="Address the admission webhook listens on.")
    webhook_host: str | None = Field(
        None,
        description="Host name or IP address the API server calls the webhook at (its URL and certificate); "
        "default: the bind address. Unused with --webhook-service.",
    )
    webhook_service: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="NAMESPACE/NAME of the Service (port 443) in front of the webhook, which the API server "
        "then calls instead of a URL (in a cluster).",
    )
    webhook_configuration: str = Field(
        "headway-operator",
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Name of the ValidatingWebhookConfiguration the operator creates and keeps up to date "
        "(one per operator).",
    )
    namespaces: tuple[str, ...] = Field(
        (),
        description="Namespaces whose pools this operator serves: names or globs, `!glob` to exclude "
        "(e.g. `team-*`, `!demo-*`); empty: all.",
    )

    def serves(self, namespace: str | None) -> bool:
        """Whether a pool in `namespace` is this operator's: it matches an included pattern (or none is
        given) and no excluded one.

        Checked in each handler, over one cluster-wide watch, rather than handed to kopf as namespace
        patterns: kopf then watches namespaces, and a namespace created while its watch starts is listed
        by the watch and ignored as already known, so its pools go unserved until some later change to
        the namespace."""
        if not self.namespaces:
            return True
        ns = namespace or ""
        include = [p for p in self.namespaces if not p.startswith("!")]
        exclude = [p[1:] for p in self.namespaces if p.startswith("!")]
        if include and not any(fnmatchcase(ns, p) for p in include):
            return False
        return not any(fnmatchcase(ns, p) for p in exclude)
