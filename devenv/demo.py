"""`make demo`: headway installed with its Helm chart on the local cluster, serving two ModelPools.

The installed system really runs: the dev runner starts the chart's control-plane pods and the
operator's engine pods as local processes. Redis and Prometheus run on 127.0.0.1 beside the cluster
(Prometheus scrapes every headway and engine pod, and loads the alert rules). Shared-prefix traffic
goes through the gateway, and the summary reports what users would look at.

`run_demo` does the work on any cluster (tests use the session cluster and runner); `demo_up` adds
what a laptop needs (its own cluster and runner) and records every process in one state directory,
so `make demo-down` removes it all.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import statistics
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from headway.api import CONTROL_PLANE_LABEL, ENGINE_LABEL, POOL_LABEL, VARIANT_LABEL
from headway.api.modelpool import KIND, ModelPoolSpec
from headway.devenv import procs
from headway.devenv.chart import install, local_values, restricted_namespace, values_file
from headway.devenv.cluster import LocalCluster
from headway.devenv.monitors import chart_engine_jobs
from headway.devenv.paths import REPO_ROOT, state_dir
from headway.devenv.runner import spawn_runner
from headway.devenv.services import PrometheusServer, RedisServer
from headway.devenv.tinymodel import tiny_model_dir

SAMPLES = REPO_ROOT / "deploy" / "samples"
RULES = REPO_ROOT / "deploy" / "prometheus" / "rules.yaml"
GROUP, VERSION, PLURAL = "inference.headway.dev", "v1alpha1", "modelpools"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class DemoConfig:
    release: str = "headway"
    namespace: str = "headway-system"
    """Where the chart is installed; it enforces PodSecurity `restricted`."""
    pools_namespace: str = "headway-demo"
    duration_s: float = 180.0
    concurrency: int = 4
    engine_runtime: str = "sim"
    """What serves engine pods (the runner's choice, recorded on each pod): `sim` or real `vllm` on CPU."""
    autoscaler: bool = False
    """Install the autoscaler too (the checkout must have it)."""
    scrape_interval_s: float = 1.0


@dataclass
class PoolSummary:
    name: str
    model: str
    variants: list[dict[str, Any]]
    """name, gpu_product, ready and desired replicas, cost_per_hour_usd."""


@dataclass
class TrafficStats:
    requests: int = 0
    errors: int = 0
    ttft_s: list[float] = field(default_factory=list)
    by_model: dict[str, int] = field(default_factory=dict)

    def percentile(self, q: float) -> float:
        if not self.ttft_s:
            return float("nan")
        if len(self.ttft_s) == 1:
            return self.ttft_s[0]
        return statistics.quantiles(self.ttft_s, n=100, method="inclusive")[int(q) - 1]


@dataclass
class DemoSummary:
    kubeconfig: Path
    gateway_url: str
    prometheus_url: str
    pools: list[PoolSummary]
    traffic: TrafficStats
    duration_s: float
    prefix_hit_ratio: float
    cost_per_hour_usd: float


@dataclass
class DemoServices:
    """What run_demo started beside the cluster; the caller decides when to stop them."""

    redis: RedisServer
    prometheus: PrometheusServer

    def stop(self) -> None:
        self.prometheus.stop()
        self.redis.stop()


def sample_pools(model_dir: Path, engine_runtime: str) -> list[dict[str, Any]]:
    """deploy/samples' ModelPools, pointed at the tiny local model: its tokenizer serves gateway and engines alike,
    and real vLLM loads it with dummy weights (nothing is downloaded)."""
    pools = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        pool = yaml.safe_load(path.read_text())
        if pool.get("kind") != KIND:  # e.g. the HTTPRoute sample for a Gateway
            continue
        model = pool["spec"]["model"]
        model["source"] = str(model_dir)
        if engine_runtime == "vllm":
            model["engineArgs"] = [*model.get("engineArgs", []), "--load-format=dummy"]
        pools.append(pool)
    return pools


def _ensure_namespace(core: k8s.CoreV1Api, body: dict[str, Any]) -> None:
    try:
        core.create_namespace(body)
    except ApiException as e:
        if e.status != 409:
            raise


def _wait(check: Callable[[], Any], timeout_s: float, what: str, progress: Progress) -> Any:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        result = check()
        if result:
            return result
        progress(f"{what} ({time.monotonic() - t0:.0f}s)")
        time.sleep(1.0)
    raise TimeoutError(f"{what}: not done after {timeout_s:.0f}s")


def _ready(pod: Any) -> bool:
    return (
        pod.status.phase == "Running"
        and not pod.metadata.deletion_timestamp
        and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    )


def scrape_targets(core: k8s.CoreV1Api, cfg: DemoConfig) -> list[dict[str, Any]]:
    """Prometheus file_sd target groups: what the chart's ServiceMonitors select, with the same labels
    (namespace, pod). They discover through EndpointSlices, which stay empty on this cluster; the engines'
    PodMonitor is Prometheus' own job (headway.devenv.monitors)."""
    groups = []
    selector = f"app.kubernetes.io/instance={cfg.release},{CONTROL_PLANE_LABEL}"
    for pod in core.list_namespaced_pod(cfg.namespace, label_selector=selector).items:
        if not _ready(pod):
            continue
        ports = {p.name: p.container_port for c in pod.spec.containers for p in c.ports or []}
        port = ports.get("metrics") or ports.get("http")
        if port is None:
            continue
        labels = pod.metadata.labels or {}
        target_labels = {
            "namespace": cfg.namespace,
            "pod": pod.metadata.name,
            "job": labels.get("app.kubernetes.io/component", "headway"),
        }
        groups.append({"targets": [f"{pod.status.pod_ip}:{port}"], "labels": target_labels})
    return groups


def prometheus_for(
    directory: Path, targets_file: Path, cfg: DemoConfig, kubeconfig: Path, port: int = 0
) -> PrometheusServer:
    """The control plane from a target file, and the engines as the chart's PodMonitor has Prometheus
    discover them. The operator reports each pool's own `namespace` label; honor_labels keeps it, as the
    chart's ServiceMonitor does, instead of renaming it to exported_namespace."""
    targets_file.write_text("[]")
    scrape = [
        {
            "job_name": "headway",
            "honor_labels": True,
            "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
        },
        *chart_engine_jobs(kubeconfig, cfg.scrape_interval_s, cfg.release, cfg.namespace),
    ]
    return PrometheusServer(directory, scrape, port=port, rule_files=(RULES,), scrape_interval_s=cfg.scrape_interval_s)


async def _traffic(gateway: str, models: list[str], cfg: DemoConfig, progress: Progress, stats: TrafficStats) -> None:
    """Shared-prefix load: each request repeats one of a few long system prompts (a tenant's), then asks
    something new, so prefix-aware routing has something to find."""
    rng = random.Random(7)  # noqa: S311 - a load pattern, not a secret
    tenants = {
        m: [
            f"You are assistant {t} of team {m}. " + f"Policy {t}: answer briefly, cite sources, be kind. " * 12
            for t in range(4)
        ]
        for m in models
    }
    deadline = time.monotonic() + cfg.duration_s
    t0 = time.monotonic()

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        model = rng.choice(models)
        prompt = f"{rng.choice(tenants[model])}\nQuestion {i}: what is {rng.randint(1, 10_000)}?"
        body = {"model": model, "prompt": prompt, "max_tokens": 16, "stream": True}
        start = time.monotonic()
        first = None
        try:
            async with session.post(f"{gateway}/v1/completions", json=body) as r:
                async for _chunk in r.content.iter_any():
                    if first is None:
                        first = time.monotonic() - start
                ok = r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        stats.requests += 1
        stats.by_model[model] = stats.by_model.get(model, 0) + 1
        if ok and first is not None:
            stats.ttft_s.append(first)
        else:
            stats.errors += 1

    async def worker(w: int, session: aiohttp.ClientSession) -> None:
        i = w
        while time.monotonic() < deadline:
            await one(session, i)
            i += cfg.concurrency

    async def report() -> None:
        while time.monotonic() < deadline:
            p50 = stats.percentile(50) * 1000 if stats.ttft_s else 0.0
            progress(
                f"traffic {time.monotonic() - t0:.0f}/{cfg.duration_s:.0f}s: {stats.requests} requests, "
                f"{stats.errors} errors, TTFT p50 {p50:.0f} ms"
            )
            await asyncio.sleep(1.0)

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(report(), *(worker(w, session) for w in range(cfg.concurrency)))


def _pool_summaries(custom: k8s.CustomObjectsApi, apps: k8s.AppsV1Api, ns: str) -> list[PoolSummary]:
    out = []
    for obj in custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]:
        spec = ModelPoolSpec.model_validate(obj["spec"])
        variants = []
        for v in spec.variants:
            try:
                dep = apps.read_namespaced_deployment(f"{obj['metadata']['name']}-{v.name}", ns)
                ready, desired = dep.status.ready_replicas or 0, dep.spec.replicas or 0
            except ApiException:
                ready = desired = 0
            variants.append(
                {
                    "name": v.name,
                    "gpu_product": v.gpu_product,
                    "ready": ready,
                    "desired": desired,
                    "cost_per_hour_usd": ready * v.gpus_per_replica * v.cost_per_gpu_hour_usd,
                }
            )
        out.append(PoolSummary(obj["metadata"]["name"], spec.model.name, variants))
    return out


def run_demo(
    cluster: LocalCluster,
    directory: Path,
    cfg: DemoConfig,
    progress: Progress = print,
    *,
    redis_port: int = 0,
    prometheus_port: int = 0,
) -> tuple[DemoSummary, DemoServices]:
    """Install headway with helm, apply the sample pools, drive traffic through the gateway, summarise.

    Needs the dev runner watching the cluster. Leaves everything running; the returned services (and
    the release) are the caller's to stop. A run again on the same ports leaves the release's values,
    and so its pods, as they were.
    """
    directory.mkdir(parents=True, exist_ok=True)
    api = cluster.api_client()
    core, apps, custom = k8s.CoreV1Api(api), k8s.AppsV1Api(api), k8s.CustomObjectsApi(api)
    progress("redis and prometheus")
    redis = RedisServer(directory / "redis", port=redis_port).start()
    targets = directory / "prometheus-targets.json"
    prometheus = prometheus_for(directory / "prometheus", targets, cfg, cluster.kubeconfig, prometheus_port).start()
    services = DemoServices(redis, prometheus)
    try:
        progress(f"helm install {cfg.release} into {cfg.namespace} (PodSecurity restricted)")
        _ensure_namespace(core, restricted_namespace(cfg.namespace))
        _ensure_namespace(core, {"metadata": {"name": cfg.pools_namespace}})
        values = local_values(autoscaler=cfg.autoscaler, prometheus_url=prometheus.url)
        values["redis"] = {"enabled": False, "externalUrl": redis.url}
        values["operator"]["watchNamespaces"] = [cfg.pools_namespace]
        values["autoscaler"]["watchNamespaces"] = [cfg.pools_namespace]
        values["gateway"] = {"watchNamespaces": [cfg.pools_namespace]}
        install(cluster.kubeconfig, cfg.release, cfg.namespace, values_file(directory / "values.yaml", values))
        gw_pods = [
            p
            for p in core.list_namespaced_pod(
                cfg.namespace,
                label_selector=f"app.kubernetes.io/instance={cfg.release},app.kubernetes.io/component=gateway",
            ).items
            if _ready(p)
        ]
        gateway = f"http://{gw_pods[0].status.pod_ip}:8080"

        pools = sample_pools(tiny_model_dir(), cfg.engine_runtime)
        for pool in pools:
            progress(f"kubectl apply ModelPool {pool['metadata']['name']}")
            try:
                custom.create_namespaced_custom_object(GROUP, VERSION, cfg.pools_namespace, PLURAL, pool)
            except ApiException as e:
                if e.status != 409:
                    raise
        wanted = {
            (p["metadata"]["name"], v["name"])
            for p in pools
            for v in p["spec"]["variants"]
            if v.get("replicas", v.get("minReplicas", 0)) > 0
        }

        def engines_ready() -> bool:
            pods = core.list_namespaced_pod(cfg.pools_namespace, label_selector=ENGINE_LABEL).items
            serving = {(p.metadata.labels[POOL_LABEL], p.metadata.labels[VARIANT_LABEL]) for p in pods if _ready(p)}
            return wanted <= serving

        timeout = 900 if cfg.engine_runtime == "vllm" else 180
        _wait(engines_ready, timeout, f"engines of {len(wanted)} variants starting ({cfg.engine_runtime})", progress)
        models = [p["spec"]["model"]["name"] for p in pools]

        def gateway_lists_models() -> bool:
            try:
                with urllib.request.urlopen(f"{gateway}/v1/models", timeout=2) as r:
                    return {m["id"] for m in json.loads(r.read())["data"]} >= set(models)
            except OSError:
                return False

        _wait(gateway_lists_models, 60, "gateway discovering the pools", progress)
        targets.write_text(json.dumps(scrape_targets(core, cfg)))

        stats = TrafficStats()
        t0 = time.monotonic()
        asyncio.run(_traffic(gateway, models, cfg, progress, stats))
        elapsed = time.monotonic() - t0
        # Two more scrapes, so the last requests are in Prometheus before it is asked.
        time.sleep(2 * cfg.scrape_interval_s + 0.5)
        targets.write_text(json.dumps(scrape_targets(core, cfg)))
        window = f"{int(elapsed + 30)}s"
        hits = prometheus.query(
            f"sum(increase(vllm:prefix_cache_hits_total[{window}]))"
            f" / sum(increase(vllm:prefix_cache_queries_total[{window}]))"
        )
        pool_summaries = _pool_summaries(custom, apps, cfg.pools_namespace)
        summary = DemoSummary(
            kubeconfig=cluster.kubeconfig,
            gateway_url=gateway,
            prometheus_url=prometheus.url,
            pools=pool_summaries,
            traffic=stats,
            duration_s=round(elapsed, 1),
            prefix_hit_ratio=float(hits[0]["value"][1]) if hits else float("nan"),
            cost_per_hour_usd=sum(v["cost_per_hour_usd"] for p in pool_summaries for v in p.variants),
        )
        return summary, services
    except BaseException:
        services.stop()
        raise


def demo_dir() -> Path:
    return state_dir() / "demo"


def demo_up(cfg: DemoConfig, progress: Progress = print) -> DemoSummary:
    """The laptop path: its own cluster and runner, then run_demo; every pid goes into state.json."""
    d = demo_dir()
    d.mkdir(parents=True, exist_ok=True)
    state_file = d / "state.json"
    state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.exists() else {}
    progress("local cluster")
    cluster = LocalCluster(d / "cluster")
    kubeconfig = cluster.up(on_progress=lambda s: progress(f"local cluster: {s}"))
    runner_pid = int(state.get("runner", 0))
    if not (runner_pid and procs.alive(runner_pid)):
        progress("engine runner")
        state["runner"] = spawn_runner(kubeconfig, d / "runner", "--engine-runtime", cfg.engine_runtime).pid
        state_file.write_text(json.dumps(state))
    for name in ("redis", "prometheus"):
        if state.get(name):
            procs.stop(int(state[name]), grace_s=5.0)
    summary, services = run_demo(
        cluster,
        d / "run",
        cfg,
        progress,
        redis_port=int(state.get("redis_port", 0)),
        prometheus_port=int(state.get("prometheus_port", 0)),
    )
    state |= {"redis": services.redis.pid, "prometheus": services.prometheus.pid}
    state |= {"redis_port": services.redis.port, "prometheus_port": services.prometheus.port}
    state_file.write_text(json.dumps(state))
    return summary


def demo_down() -> None:
    d = demo_dir()
    state_file = d / "state.json"
    if state_file.exists():
        state = json.loads(state_file.read_text())
        for name in ("runner", "prometheus", "redis"):
            if state.get(name):
                procs.stop(int(state[name]), grace_s=30.0 if name == "runner" else 10.0)
    LocalCluster(d / "cluster").down()
    shutil.rmtree(d, ignore_errors=True)
