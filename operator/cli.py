"""`headway operator`: run the ModelPool operator (kopf) against the current kubeconfig or in-cluster."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Annotated

import typer

from headway.operator.config import OperatorConfig

app = typer.Typer(add_completion=False)


@app.command()
def operator(
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Watch only this namespace (repeatable; default: cluster-wide)."),
    ] = None,
    kv_events_endpoint: Annotated[
        str | None, typer.Option(help="Indexer endpoint engines publish KV events to.")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address of /metrics.")] = "127.0.0.1",
    metrics_port: Annotated[int, typer.Option(min=0, max=65535, help="Port of /metrics (0: off).")] = 9464,
    liveness: Annotated[
        str | None, typer.Option(help="Serve /healthz here, e.g. http://127.0.0.1:8080/healthz.")
    ] = None,
    resync_interval_s: Annotated[float, typer.Option(min=1.0, help="Full reconcile of each pool this often.")] = 60.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Reconcile ModelPools into vLLM Deployments, a Service and a PodDisruptionBudget each."""
    import kopf

    from headway.operator.handlers import build_registry

    settings = {
        "metrics_host": metrics_host,
        "metrics_port": metrics_port,
        "resync_interval_s": resync_interval_s,
        "namespaces": tuple(namespace or ()),
    }
    if kv_events_endpoint is not None:
        settings["kv_events_endpoint"] = kv_events_endpoint
    cfg = OperatorConfig(**settings)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if not verbose:  # kopf logs every handled watch event at INFO; keep the operator's own logs readable
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    registry = build_registry(cfg)
    asyncio.run(
        kopf.operator(
            registry=registry,
            standalone=True,
            clusterwide=not cfg.namespaces,
            namespaces=cfg.namespaces,
            liveness_endpoint=liveness,
        )
    )
