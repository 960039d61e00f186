"""`headway autoscaler`: run the SLO autoscaler against the current kubeconfig or in-cluster."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from headway.autoscaler.errors import ConfigError

app = typer.Typer(add_completion=False)


@app.command()
def autoscaler(
    profiles: Annotated[Path, typer.Option(help="Capacity profile JSON (from `headway profile`).")],
    namespace: Annotated[
        list[str] | None, typer.Option("--namespace", "-n", help="Pools in this namespace (repeatable; default: all).")
    ] = None,
    prometheus_url: Annotated[
        str | None, typer.Option(help="Read metrics from this Prometheus (default: scrape engines directly).")
    ] = None,
    gateway_url: Annotated[
        list[str] | None, typer.Option(help="Gateway to scrape for held requests when scraping directly (repeatable).")
    ] = None,
    interval_s: Annotated[float, typer.Option(help="Seconds between decisions.")] = 15.0,
    metrics_port: Annotated[int, typer.Option(help="Port of /metrics and /healthz (0: off).")] = 9465,
    host: Annotated[str, typer.Option(help="Address of /metrics and /healthz.")] = "127.0.0.1",
    leader_election_namespace: Annotated[str, typer.Option(help="Namespace of the leader-election Lease.")] = (
        "headway-system"
    ),
    lease_duration_s: Annotated[float, typer.Option(help="Seconds a leader's Lease lasts without renewal.")] = 15.0,
    gpu_budget: Annotated[int | None, typer.Option(help="Most GPUs one pool may use (default: no limit).")] = None,
    headroom: Annotated[float, typer.Option(help="SLO capacity kept over demand, ≥ 1.")] = 1.0,
    forecaster: Annotated[
        str, typer.Option(help="Demand forecast one provisioning time ahead: constant, trend or arima.")
    ] = "constant",
    identity: Annotated[str, typer.Option(help="Name in the Lease (default: host name + process).")] = "",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Keep each ModelPool's SLO with the cheapest mix of GPU variants; writes status.autoscaling."""
    from prometheus_client import CollectorRegistry
    from pydantic import ValidationError

    from headway.api.errors import option_error
    from headway.api.events import load_api_client
    from headway.autoscaler.capacity import load_profile
    from headway.autoscaler.config import AutoscalerConfig
    from headway.autoscaler.controller import Controller
    from headway.autoscaler.metrics import AutoscalerMetrics
    from headway.autoscaler.server import serve_http

    try:
        cfg = AutoscalerConfig(
            namespaces=tuple(namespace or ()),
            prometheus_url=prometheus_url,
            gateway_urls=tuple(gateway_url or ()),
            interval_s=interval_s,
            profiles=profiles,
            host=host,
            metrics_port=metrics_port,
            leader_election_namespace=leader_election_namespace,
            lease_duration_s=lease_duration_s,
            gpu_budget=gpu_budget,
            headroom=headroom,
            forecaster=forecaster,
            identity=identity,
        )
        profile = load_profile(profiles)
    except ValidationError as e:
        typer.echo(f"error: {option_error(e)}", err=True)
        raise typer.Exit(2) from None
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    registry = CollectorRegistry()
    controller = Controller(cfg, load_api_client(), profile, AutoscalerMetrics(registry))
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    server = serve_http(cfg.host, cfg.metrics_port, registry, controller.healthy) if cfg.metrics_port else None
    logging.getLogger("headway.autoscaler").info(
        "autoscaler started: %s, every %.0fs, pools in %s",
        f"prometheus {cfg.prometheus_url}" if cfg.prometheus_url else "scraping engines",
        cfg.interval_s,
        ", ".join(cfg.namespaces) or "all namespaces",
    )
    try:
        controller.run(stopping.is_set, stopping.wait)
    finally:
        if server is not None:
            server.shutdown()
