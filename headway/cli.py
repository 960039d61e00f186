"""The `headway` command: one entry point whose sub-commands belong to the components."""

from __future__ import annotations

import typer

from headway.autoscaler.cli import app as autoscaler_app
from headway.devenv.cli import app as dev_app
from headway.gateway.cli import app as gateway_app
from headway.kvcache.cli import app as kvcache_app
from headway.operator.cli import app as operator_app
from headway.profile import profile

app = typer.Typer(no_args_is_help=True, add_completion=False, help="headway: a control plane for LLM inference.")
app.add_typer(dev_app, name="dev")
app.registered_commands += operator_app.registered_commands
app.registered_commands += gateway_app.registered_commands
app.registered_commands += kvcache_app.registered_commands
app.registered_commands += autoscaler_app.registered_commands
app.command("profile")(profile)


@app.command(
    "bench",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)
def bench(ctx: typer.Context, name: str = typer.Argument(help="Benchmark name, e.g. cluster-startup.")) -> None:
    """Run a benchmark from this checkout's bench/ folder (arguments after NAME go to it; try NAME --help)."""
    import runpy
    import sys

    from headway.devenv.paths import REPO_ROOT

    module = f"bench.{name.replace('-', '_')}"
    if not (REPO_ROOT / "bench" / f"{name.replace('-', '_')}.py").is_file():
        known = sorted(p.stem.replace("_", "-") for p in (REPO_ROOT / "bench").glob("*.py") if p.stem[0] != "_")
        typer.echo(f"error: no benchmark {name!r}; known: {', '.join(known)}", err=True)
        raise typer.Exit(2)
    # Appended, not prepended: the checkout's operator/ folder must not shadow the standard library.
    sys.path.append(str(REPO_ROOT))
    sys.argv = [f"headway bench {name}", *ctx.args]
    runpy.run_module(module, run_name="__main__")


@app.command(
    "sim",
    add_help_option=False,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)
def sim(ctx: typer.Context) -> None:
    """A vLLM-faithful engine simulator (vLLM's flags; see `headway sim --help`)."""
    from headway.sim.cli import main as sim_main

    sim_main(ctx.args)


def main() -> None:
    app()
