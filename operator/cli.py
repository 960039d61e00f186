"""`headway operator`: run the ModelPool operator (kopf) against the current kubeconfig or in-cluster."""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
from typing import Annotated, Any

import typer

from headway.api.options import settings_command, verbose_parameter
from headway.operator.config import OperatorConfig

app = typer.Typer(add_completion=False)


def _run(cfg: OperatorConfig, *, liveness: str | None, verbose: bool) -> None:
    """Reconcile ModelPools into vLLM Deployments, a Service and a PodDisruptionBudget each."""
    import kopf

    from headway.api.events import load_api_client
    from headway.operator.handlers import build_registry
    from headway.operator.served import wait_until_served

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if not verbose:  # kopf logs every handled watch event at INFO; keep the operator's own logs readable
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    registry = build_registry(cfg)
    wait_until_served(load_api_client())

    async def run() -> None:
        asyncio.get_running_loop().set_exception_handler(_quiet_watch_close)
        await kopf.operator(
            registry=registry,
            standalone=True,
            clusterwide=True,  # cfg.namespaces is applied in each handler (OperatorConfig.serves)
            liveness_endpoint=liveness,
        )

    asyncio.run(run())


operator = settings_command(
    OperatorConfig,
    _run,
    name="operator",
    doc="Reconcile ModelPools into vLLM Deployments, a Service and a PodDisruptionBudget each.",
    flags={"namespaces": ("--namespace", "-n")},
    extra=[
        inspect.Parameter(
            "liveness",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                str | None, typer.Option(help="Serve /healthz here, e.g. http://127.0.0.1:8080/healthz.")
            ],
        ),
        verbose_parameter(),
    ],
)
app.command("operator")(operator)


def _quiet_watch_close(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """kopf leaves its watch streams' async generators suspended when it stops; asyncio closes them at
    exit, and closing one can raise inside kopf's streaming block ("generator didn't stop after
    athrow()"). The operator has already stopped and nothing is lost: one warning line, not a traceback
    that reads like a crash. Every other loop error keeps asyncio's own report."""
    gen = context.get("asyncgen")
    if gen is not None and getattr(gen, "__qualname__", "") == "infinite_watch":
        logging.getLogger("headway.operator").warning(
            "a watch stream raised while closing at exit: %r", context.get("exception")
        )
        return
    loop.default_exception_handler(context)
