"""`headway gateway`: the OpenAI-compatible routing gateway (local mode: a static list of engines)."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Annotated

import typer

from headway.gateway.config import GatewayConfig

app = typer.Typer(add_completion=False)


@app.command()
def gateway(
    model: Annotated[str | None, typer.Option(help="Static discovery: the served model name.")] = None,
    endpoint: Annotated[
        list[str] | None, typer.Option("--endpoint", "-e", help="Static: engine URL (repeatable).")
    ] = None,
    discovery: Annotated[str, typer.Option(help="static, or kubernetes (every ModelPool's Ready pods).")] = "static",
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Kubernetes discovery: only this namespace (repeatable; default all)."),
    ] = None,
    tokenizer: Annotated[str | None, typer.Option(help="Directory with the model's tokenizer.json.")] = None,
    strategy: Annotated[
        str, typer.Option(help="kv-aware, approx-prefix, least-request, round-robin, random, or a --router name.")
    ] = "kv-aware",
    router: Annotated[
        list[str] | None,
        typer.Option(help="Custom router NAME=module:factory or NAME=file.py:factory (repeatable)."),
    ] = None,
    kv_events_bind: Annotated[str | None, typer.Option(help="Bind this ZMQ endpoint for engines' KV events.")] = None,
    weights: Annotated[str | None, typer.Option(help="Scorer weights, e.g. prefix=3,queue=2,kvUtilization=2.")] = None,
    speculative_ttl_s: Annotated[float, typer.Option(min=0.0, help="Lifetime of a routed prefix's entries.")] = 2.0,
    redis_url: Annotated[
        str | None, typer.Option(help="Share the KV index through this Redis, e.g. redis://127.0.0.1:6379/0.")
    ] = None,
    kv_replay_port: Annotated[int | None, typer.Option(help="Engines' KV-event replay port, to fill gaps.")] = None,
    api_keys_file: Annotated[str | None, typer.Option(help="YAML/JSON of hashed API keys and their limits.")] = None,
    max_body_bytes: Annotated[int, typer.Option(min=1024, help="Largest request body accepted.")] = 16 * 1024**2,
    event_loop: Annotated[
        str, typer.Option(help="uvloop (measured faster; see bench gateway-overhead) or asyncio.")
    ] = "uvloop",
    host: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8080,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Route each OpenAI request to the engine that holds its prefix, bounded by load."""
    from pydantic import ValidationError

    from headway.api.errors import option_error

    try:
        parsed = dict(kv.split("=", 1) for kv in weights.split(",")) if weights else {}
        cfg = GatewayConfig(
            model=model,
            endpoints=tuple(endpoint or ()),
            discovery=discovery,
            namespaces=tuple(namespace or ()),
            tokenizer=tokenizer,
            strategy=strategy,
            routers=tuple(router or ()),
            kv_events_bind=kv_events_bind,
            host=host,
            port=port,
            weights=parsed,
            speculative_ttl_s=speculative_ttl_s,
            max_body_bytes=max_body_bytes,
            redis_url=redis_url,
            api_keys_file=api_keys_file,
            kv_replay_port=kv_replay_port,
        )
    except ValueError as e:
        if not isinstance(e, ValidationError):
            typer.echo(f"error: --weights: expected name=value pairs: {e}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"error: {option_error(e)}", err=True)
        raise typer.Exit(2) from None
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    from aiohttp import web

    from headway.gateway.app import Gateway

    if event_loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    elif event_loop != "asyncio":
        typer.echo("error: --event-loop must be uvloop or asyncio", err=True)
        raise typer.Exit(2)
    try:
        gw = Gateway(cfg)
    except (ValueError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    web.run_app(gw.app(), host=cfg.host, port=cfg.port, print=None, access_log=None)
