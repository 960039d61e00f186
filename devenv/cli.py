"""`headway dev …`: the local development environment (cluster, runner, services, tiny model)."""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from headway.devenv.binaries import BinariesError, ensure_binaries
from headway.devenv.cluster import ClusterError, LocalCluster
from headway.devenv.paths import state_dir
from headway.devenv.podspec import ENGINE_RUNTIMES, EngineRuntimes

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Development environment: a real local Kubernetes with fake GPU nodes. Not for production.",
)
cluster_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="A real local Kubernetes (etcd, apiserver, controller-manager, scheduler, kwok).",
)
app.add_typer(cluster_app, name="cluster")
err = Console(stderr=True)

ClusterName = Annotated[str, typer.Option("--name", help="Cluster name; its state lives under the state dir.")]
NodesFile = Annotated[
    Path | None,
    typer.Option("--nodes", help="Node fleet YAML (default: devenv/nodes.yaml).", exists=True, dir_okay=False),
]


def _cluster_dir(name: str) -> Path:
    return state_dir() / "clusters" / name


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


@cluster_app.command("up")
def cluster_up(name: ClusterName = "default", nodes: NodesFile = None) -> None:
    """Start the cluster (building the binaries on first use) and print the kubeconfig path."""
    from headway.devenv.nodes import load_fleet

    try:
        fleet = load_fleet(nodes)
        t0 = time.monotonic()
        with err.status("cluster binaries") as status:
            bins = ensure_binaries()
            cluster = LocalCluster(_cluster_dir(name), fleet=fleet)
            kubeconfig = cluster.up(binaries=bins, on_progress=lambda s: status.update(f"starting {s}"))
    except (BinariesError, ClusterError, ValueError) as e:
        _fail(str(e))
        return
    err.print(
        f"cluster [bold]{name}[/bold] up in {time.monotonic() - t0:.1f}s "
        f"({cluster.state.node_count if cluster.state else 0} nodes)"
    )
    print(kubeconfig)


@cluster_app.command("down")
def cluster_down(name: ClusterName = "default") -> None:
    """Stop every component of the cluster and remove its state."""
    cluster = LocalCluster(_cluster_dir(name))
    if cluster.state is None:
        err.print(f"no cluster named {name}")
        return
    cluster.down()
    err.print(f"cluster {name} stopped and removed")


@cluster_app.command("status")
def cluster_status(name: ClusterName = "default") -> None:
    """Health of each component; exit code 1 when any is unhealthy."""
    cluster = LocalCluster(_cluster_dir(name))
    if cluster.state is None:
        _fail(f"no cluster named {name}; run `headway dev cluster up`")
        return
    table = Table("component", "pid", "healthy", "detail")
    health = cluster.status()
    for h in health:
        table.add_row(h.name, str(h.pid or "-"), "[green]yes[/green]" if h.healthy else "[red]no[/red]", h.detail)
    Console().print(table)
    print(f"kubeconfig: {cluster.kubeconfig}")
    if not all(h.healthy for h in health):
        raise typer.Exit(1)


@app.command("runner")
def runner(
    kubeconfig: Annotated[Path, typer.Option(help="Kubeconfig of the local cluster.", exists=True, dir_okay=False)],
    engine_runtime: Annotated[
        str,
        typer.Option(
            help=f"What serves `vllm` engine pods: one of {', '.join(ENGINE_RUNTIMES)} "
            f"(a pod may choose with the engine-runtime annotation)."
        ),
    ] = "sim",
    vllm_python: Annotated[
        Path | None, typer.Option(help="Python of the real-vLLM venv (default: .venv-vllm of this checkout).")
    ] = None,
    namespace: Annotated[str | None, typer.Option(help="Only pods of this namespace (default: all).")] = None,
    state: Annotated[Path | None, typer.Option(help="Where process logs and pod kubeconfigs go.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """DEVELOPMENT TOOL: play the kubelet for engine and control-plane pods on the local cluster's fake nodes.

    Starts each pod's container command as a local process on the pod's IP, sets the pod's Ready
    condition from its readiness probe, restarts it on exit (with a pod Event), stops it with the pod.
    """
    from headway.devenv.paths import REPO_ROOT
    from headway.devenv.runner import Runner

    if engine_runtime not in ENGINE_RUNTIMES:
        err.print(f"error: --engine-runtime must be one of {', '.join(ENGINE_RUNTIMES)}")
        raise typer.Exit(2)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    vpy = vllm_python or REPO_ROOT / ".venv-vllm" / "bin" / "python"
    runtimes = EngineRuntimes(vllm=(str(vpy), "-m", "vllm.entrypoints.openai.api_server"))
    r = Runner(
        kubeconfig,
        state_dir=state or state_dir() / "runner",
        engine_runtime=engine_runtime,
        runtimes=runtimes,
        namespace=namespace,
    )

    def _stop(*_: object) -> None:
        r.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    r.run()


@app.command("tiny-model")
def tiny_model(
    out: Annotated[Path | None, typer.Option(help="Directory to write (default: the cache).")] = None,
) -> None:
    """Write the tiny Llama-architecture model (config + tokenizer) and print its directory."""
    from headway.devenv.tinymodel import tiny_model_dir, write_tiny_model

    print(write_tiny_model(out) if out else tiny_model_dir())


@app.command("demo")
def demo(
    down: Annotated[bool, typer.Option("--down", help="Remove everything the demo started.")] = False,
    engine_runtime: Annotated[
        str, typer.Option(help="What serves engine pods: sim (simulator) or vllm (real vLLM on CPU, slower).")
    ] = "sim",
    duration_s: Annotated[float, typer.Option(min=5.0, max=3600.0, help="Seconds of traffic.")] = 180.0,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Concurrent clients.")] = 4,
) -> None:
    """helm install headway on a local cluster with GPU nodes, apply two ModelPools, drive shared-prefix traffic."""
    from headway.devenv.chart import autoscaler_available
    from headway.devenv.demo import DemoConfig, demo_down, demo_up

    if down:
        demo_down()
        err.print("demo removed")
        return
    if engine_runtime not in ("sim", "vllm"):
        err.print("error: --engine-runtime must be sim or vllm")
        raise typer.Exit(2)
    cfg = DemoConfig(
        engine_runtime=engine_runtime,
        duration_s=duration_s,
        concurrency=concurrency,
        autoscaler=autoscaler_available(),
    )
    try:
        with err.status("starting") as status:
            s = demo_up(cfg, progress=status.update)
    except Exception as e:
        _fail(f"{type(e).__name__}: {e}")
        return
    table = Table("", "", title="headway demo", show_header=False)
    table.add_row("gateway", f"{s.gateway_url}/v1  (OpenAI API; try {s.gateway_url}/v1/models)")
    for pool in s.pools:
        variants = ", ".join(f"{v['name']}: {v['ready']}/{v['desired']} × {v['gpu_product']}" for v in pool.variants)
        table.add_row(f"pool {pool.name}", f"model {pool.model}; {variants}")
    t = s.traffic
    table.add_row(
        "requests",
        f"{t.requests} in {s.duration_s:.0f}s ({t.errors} errors); "
        + ", ".join(f"{m}: {n}" for m, n in sorted(t.by_model.items())),
    )
    table.add_row("TTFT", f"p50 {t.percentile(50) * 1000:.0f} ms, p90 {t.percentile(90) * 1000:.0f} ms (client-side)")
    table.add_row("prefix-cache hits", f"{s.prefix_hit_ratio:.1%} of prompt tokens (engines' vllm:prefix_cache_*)")
    table.add_row("cost", f"${s.cost_per_hour_usd:.2f}/hour (ready GPUs × each variant's costPerGpuHourUsd)")
    table.add_row("prometheus", f"{s.prometheus_url}  (alert rules loaded; dashboards in deploy/dashboards)")
    table.add_row("kubeconfig", str(s.kubeconfig))
    Console().print(table)
    kubectl = ensure_binaries(build=False).path("kubectl")
    print(f"try: {kubectl} --kubeconfig {s.kubeconfig} get modelpools,pods -A -o wide")
    print("remove with: make demo-down")
