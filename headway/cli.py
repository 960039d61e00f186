"""The `headway` command: one entry point whose sub-commands belong to the components."""

from __future__ import annotations

import typer

from headway.devenv.cli import app as dev_app

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="headway: a control plane for LLM inference."
)
app.add_typer(dev_app, name="dev")


def main() -> None:
    app()
