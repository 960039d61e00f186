"""`headway autoscaler`: run the SLO autoscaler against the current kubeconfig or in-cluster."""

from __future__ import annotations

import logging
import signal
import sys
import threading

import typer

from headway.api.options import settings_command, verbose_parameter
from headway.autoscaler.config import AutoscalerConfig
from headway.autoscaler.errors import ConfigError

app = typer.Typer(add_completion=False)


def _run(cfg: AutoscalerConfig, *, verbose: bool) -> None:
    """Keep each ModelPool's SLO with the cheapest mix of GPU variants; writes status.autoscaling."""
    from prometheus_client import CollectorRegistry

    from headway.api.events import load_api_client
    from headway.autoscaler.capacity import load_profile
    from headway.autoscaler.controller import Controller
    from headway.autoscaler.metrics import AutoscalerMetrics
    from headway.autoscaler.server import serve_http

    try:
        profile = load_profile(cfg.profiles)
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


autoscaler = settings_command(
    AutoscalerConfig,
    _run,
    name="autoscaler",
    doc="Keep each ModelPool's SLO with the cheapest mix of GPU variants; writes status.autoscaling.",
    flags={"namespaces": ("--namespace", "-n"), "gateway_urls": ("--gateway-url",)},
    extra=[
        verbose_parameter(),
    ],
)
app.command("autoscaler")(autoscaler)
