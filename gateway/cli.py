"""`headway gateway`: the OpenAI-compatible routing gateway. Its options are generated from
`GatewayConfig` (gateway/config.py), where each default and description is written once."""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from headway.api.options import Parser, settings_command, verbose_parameter
from headway.gateway.config import GatewayConfig

if TYPE_CHECKING:
    from headway.gateway.app import Gateway

app = typer.Typer(add_completion=False)


def _pairs(text: str) -> dict[str, str]:
    try:
        return dict(kv.split("=", 1) for kv in text.split(","))
    except ValueError:
        raise ValueError("expected name=value pairs, e.g. prefix=3,queue=2") from None


def _profiles(path: str) -> dict[str, Any]:
    import yaml

    with open(path) as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError("expected a mapping of profile names to lists of plugins")
    return data


def _run(cfg: GatewayConfig, *, event_loop: str, verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if cfg.workers > 1:  # before anything imports prometheus_client: the hub sets its multiprocess mode
        from headway.gateway.workers import serve_workers

        serve_workers(cfg, event_loop=event_loop, verbose=verbose, check=_check)
        return
    from aiohttp import web

    from headway.gateway.app import SERVE_OPTIONS

    if event_loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    gw = _check(cfg)
    if cfg.mode == "epp":
        from headway.gateway.epp import epp_app

        web.run_app(epp_app(gw), host=cfg.host, port=cfg.metrics_port, print=None, access_log=None)
        return
    web.run_app(gw.app(), host=cfg.host, port=cfg.port, print=None, **SERVE_OPTIONS)


def _check(cfg: GatewayConfig) -> Gateway:
    """The gateway these settings make, or one line and exit 2 (an unknown plugin in a profile, a
    tokenizer directory without tokenizer.json, a custom router that does not load)."""
    from headway.gateway.app import Gateway

    try:
        return Gateway(cfg)
    except (ValueError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


gateway = settings_command(
    GatewayConfig,
    _run,
    name="gateway",
    doc="Route each OpenAI request to the engine that holds its prefix, bounded by load.",
    flags={"endpoints": ("--endpoint", "-e"), "namespaces": ("--namespace", "-n"), "routers": ("--router",)},
    parsers={
        "weights": Parser(_pairs, "NAME=W,...", "Preset scorer weights, e.g. prefix=3,queue=2,kvUtilization=2."),
        "profiles": Parser(_profiles, "FILE", "YAML file of named routing profiles: NAME: [{plugin, weight, params}]."),
    },
    prefixes={"timeouts": "timeout"},
    extra=[
        inspect.Parameter(
            "event_loop",
            inspect.Parameter.KEYWORD_ONLY,
            default="uvloop",
            annotation=Annotated[
                Literal["uvloop", "asyncio"], typer.Option(help="uvloop (measured faster; bench gateway-overhead).")
            ],
        ),
        verbose_parameter(),
    ],
)
app.command("gateway")(gateway)
