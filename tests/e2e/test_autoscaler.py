"""The SLO autoscaler end to end on the real local cluster: it runs as its least-privilege ServiceAccount
beside the operator, the runner's simulated engines and a gateway, and scales pools through status only."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes import client as k8s

from headway.api.labels import CONDITION_SCALING_ACTIVE, POOL_LABEL, VARIANT_LABEL
from headway.autoscaler.capacity import BucketCapacity, CapacityProfile, GpuCapacity, LatencyPoint, Slo
from headway.autoscaler.lease import LeaderElector
from headway.devenv import procs
from headway.devenv.cluster import LocalCluster
from headway.devenv.controlplane import OperatorProcess, pool_manifest, service_account_kubeconfig
from headway.devenv.monitors import chart_engine_jobs
from headway.devenv.services import PrometheusServer
from headway.devenv.tinymodel import tiny_model_dir
from tests.conftest import eventually
from tests.e2e.kube import discovering_gateway, namespace_report

# Every test runs beside the session operator and runner (its pools need both).
pytestmark = pytest.mark.usefixtures("operator", "runner")

GROUP, VERSION, PLURAL = "inference.headway.dev", "v1alpha1", "modelpools"
H100, A100, L4 = "NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB", "NVIDIA-L4"
HEADROOM = 1.1
# One bucket near the test requests (a few prompt tokens, 4 output tokens); capacities chosen so that
# an L4 replica is the cheapest replica but an H100 is cheaper per request.
CAPACITY_RPS = {"L4": 2.0, "H100": 20.0, "A100": 1.0}


def write_profile(path: Path) -> Path:
    slo = Slo(ttft_s=0.5, ttft_percentile=90, itl_s=0.05, itl_percentile=90)
    gpus = [
        GpuCapacity(
            gpu=g,
            buckets=[
                BucketCapacity(
                    input_tokens=8,
                    output_tokens=4,
                    max_rps=rps,
                    points=[
                        LatencyPoint(rps=0, ttft_s=0.05, itl_s=0.01),
                        LatencyPoint(rps=rps, ttft_s=0.3, itl_s=0.03),
                    ],
                )
            ],
        )
        for g, rps in CAPACITY_RPS.items()
    ]
    CapacityProfile(model="tiny", source="test", slo=slo, gpus=gpus).dump(path)
    return path


class Autoscaler:
    """`headway autoscaler` as its own process with the headway-autoscaler ServiceAccount's token."""

    def __init__(self, cluster: LocalCluster, work: Path, namespace: str, *args: str) -> None:
        self.work, self.log = work, work / f"autoscaler-{procs.free_port()}.log"
        self.kubeconfig = service_account_kubeconfig(cluster, work / "autoscaler.kubeconfig", "headway-autoscaler")
        self.port = procs.free_port()
        self.argv = [
            sys.executable,
            "-m",
            "headway",
            "autoscaler",
            "--profiles",
            str(write_profile(work / "profile.json")),
            "--namespace",
            namespace,
            "--interval-s",
            "1",
            "--lease-duration-s",
            "3",
            "--headroom",
            str(HEADROOM),
            "--metrics-port",
            str(self.port),
            *args,
        ]
        self.pid = 0

    def start(self) -> Autoscaler:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        self.pid = procs.spawn(self.argv, self.log, env=env, cwd=self.work).pid
        return self

    def stop(self) -> None:
        procs.stop(self.pid, grace_s=10)
        text = self.log.read_text()
        assert "Traceback" not in text, text[-3000:]


@pytest.fixture
def autoscaler(crd: LocalCluster, namespace: str, tmp_path: Path) -> Iterator[Callable[..., Autoscaler]]:
    started: list[Autoscaler] = []

    def start(*args: str) -> Autoscaler:
        a = Autoscaler(crd, tmp_path, namespace, *args).start()
        started.append(a)
        return a

    yield start
    for a in started:
        a.stop()


@pytest.fixture
def why(
    core: k8s.CoreV1Api, namespace: str, operator: OperatorProcess, runner: Path, tmp_path: Path
) -> Callable[[], str]:
    """The namespace's objects and the logs of every component of the test, for a wait that timed out."""
    return lambda: namespace_report(
        core, namespace, operator.log, runner / "runner.log", *sorted(tmp_path.glob("*.log"))
    )


@pytest.fixture
def gateway(crd: LocalCluster, namespace: str, tmp_path: Path) -> Iterator[str]:
    with discovering_gateway(crd, namespace, tmp_path) as url:
        yield url


class Load:
    """Open-loop completions at a fixed rate through the gateway; records statuses."""

    def __init__(self, gateway: str, rps: float) -> None:
        self.gateway, self.rps, self.statuses = gateway, rps, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _one(self, s: aiohttp.ClientSession, i: int) -> None:
        body = {"model": "tiny", "prompt": f"request {i}", "max_tokens": 4, "ignore_eos": True}
        try:
            async with s.post(f"{self.gateway}/v1/completions", json=body) as r:
                await r.read()
                self.statuses.append(r.status)
        except aiohttp.ClientError:
            self.statuses.append(0)

    async def _run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
            tasks = set()
            for i in itertools.count():
                if self._stop.is_set():
                    break
                t = asyncio.create_task(self._one(s, i))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                await asyncio.sleep(1 / self.rps)
            await asyncio.gather(*tasks)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=90)


def custom(cluster: LocalCluster) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(cluster.api_client())


def autoscaling(cluster: LocalCluster, ns: str, name: str = "tiny") -> dict[str, Any]:
    pool = custom(cluster).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    return (pool.get("status") or {}).get("autoscaling") or {}


def desired(cluster: LocalCluster, ns: str) -> dict[str, int]:
    return {v["name"]: v["desiredReplicas"] for v in autoscaling(cluster, ns).get("variants") or []}


def running(core: k8s.CoreV1Api, ns: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in core.list_namespaced_pod(ns, label_selector=POOL_LABEL).items:
        if p.status.phase == "Running" and not p.metadata.deletion_timestamp:
            v = p.metadata.labels[VARIANT_LABEL]
            out[v] = out.get(v, 0) + 1
    return out


def create_pool(
    cluster: LocalCluster,
    ns: str,
    variants: list[dict[str, Any]],
    *,
    engine_args: list[str] | None = None,
    slo: dict[str, float] | None = None,
    **auto: Any,
) -> None:
    manifest = pool_manifest(
        "tiny",
        variants,
        source=str(tiny_model_dir()),
        engine_args=engine_args,
        autoscaling={"enabled": True, "panicWindowSeconds": 2, **auto},
    )
    manifest["spec"]["slo"] = slo or {"ttftSeconds": 0.5, "itlSeconds": 0.05}
    custom(cluster).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, manifest)


L4_UP_TO_FOUR = {"name": "l4", "gpuProduct": L4, "minReplicas": 1, "maxReplicas": 4, "costPerGpuHourUsd": 0.8}


def start_l4_pool(cluster: LocalCluster, core: k8s.CoreV1Api, ns: str, why: Callable[[], str], **pool: Any) -> None:
    """The pool most tests start from: one L4 variant (1 to 4 replicas), its first replica Running."""
    create_pool(cluster, ns, [L4_UP_TO_FOUR], **pool)
    eventually(lambda: running(core, ns).get("l4") == 1, timeout_s=90, what="one L4 replica running", explain=why)


def scaling_active(cluster: LocalCluster, ns: str) -> dict[str, Any] | None:
    conds = autoscaling(cluster, ns).get("conditions") or []
    return next((c for c in conds if c["type"] == CONDITION_SCALING_ACTIVE), None)


def events(core: k8s.CoreV1Api, ns: str) -> list[k8s.CoreV1Event]:
    return [e for e in core.list_namespaced_event(ns).items if e.source and e.source.component == "headway-autoscaler"]


def test_load_scales_the_pool_up_and_scale_down_waits_for_the_window(
    crd: LocalCluster,
    core: k8s.CoreV1Api,
    namespace: str,
    gateway: str,
    autoscaler: Callable[..., Autoscaler],
    why: Callable[[], str],
) -> None:
    window_s = 20
    start_l4_pool(crd, core, namespace, why, scaleDownWindowSeconds=window_s)
    autoscaler()
    eventually(lambda: desired(crd, namespace) == {"l4": 1}, timeout_s=30, what="a first recommendation", explain=why)
    with Load(gateway, rps=5.0) as load:
        # 5 req/s over 2 req/s per L4 replica with 10% headroom: 3 replicas
        eventually(
            lambda: desired(crd, namespace).get("l4", 0) >= 3, timeout_s=60, what="recommendation up", explain=why
        )
        eventually(
            lambda: running(core, namespace).get("l4", 0) >= 3, timeout_s=90, what="new pods Running", explain=why
        )
        auto = autoscaling(crd, namespace)
        record = auto["decision"]
        assert record["inputs"]["requestsPerSecond"] > 2
        # how long the L4 pods took to become Ready, by phase, from their own timestamps (whole seconds:
        # a simulated engine can be Ready within the second it was created)
        prov = auto["provisioning"]["l4"]
        assert prov["pods"] >= 1 and 0 <= prov["totalSeconds"] < 90
        assert prov["totalSeconds"] == pytest.approx(
            prov["schedulingSeconds"] + prov["startingSeconds"] + prov["loadingSeconds"], abs=0.2
        )
        assert record["terms"]["horizonSeconds"] == pytest.approx(prov["totalSeconds"], abs=0.2)
        assert record["terms"]["capacityRpsPerReplica"]["l4"] == CAPACITY_RPS["L4"]
        assert any(e.reason in ("ScaleUp", "PanicScaleUp") for e in events(core, namespace))
        pool = custom(crd).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "tiny")
        assert pool["status"]["sloStatus"] in ("Met", "Breached")
        peak = desired(crd, namespace)["l4"]
    stopped = time.monotonic()
    assert load.statuses.count(200) > 0.95 * len(load.statuses)
    eventually(lambda: desired(crd, namespace).get("l4", peak) < peak, timeout_s=90, what="scale-down", explain=why)
    assert time.monotonic() - stopped >= window_s - 2  # not before the window (2 s of scrape lag allowed)
    eventually(lambda: desired(crd, namespace) == {"l4": 1}, timeout_s=60, what="back to the minimum", explain=why)
    assert scaling_active(crd, namespace)["status"] == "True"


def slo_status(cluster: LocalCluster, ns: str) -> str | None:
    return (custom(cluster).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "tiny").get("status") or {}).get(
        "sloStatus"
    )


def test_a_load_ramp_breaks_the_slo_and_the_scaled_pool_meets_it_again(
    crd: LocalCluster,
    core: k8s.CoreV1Api,
    namespace: str,
    gateway: str,
    autoscaler: Callable[..., Autoscaler],
    why: Callable[[], str],
) -> None:
    """Engines slow enough to queue (an L4 simulator at 0.18× speed running at most 2 sequences serves about
    2 req/s, as the test profile says): 5 req/s on one replica queues requests past the 1.5 s TTFT target
    while new replicas start; the autoscaler must read the breach from the engines' own histograms, grow
    the pool, and read the SLO met again under the same load."""
    start_l4_pool(
        crd,
        core,
        namespace,
        why,
        engine_args=["--gpu-profile", "L4", "--time-scale", "0.18", "--max-num-seqs", "2"],
        slo={"ttftSeconds": 1.5, "itlSeconds": 1.0, "attainment": 0.9},
        scaleDownWindowSeconds=300,
    )
    autoscaler()
    eventually(lambda: desired(crd, namespace) == {"l4": 1}, timeout_s=30, what="a first recommendation", explain=why)
    with Load(gateway, rps=5.0) as load:
        eventually(lambda: slo_status(crd, namespace) == "Breached", timeout_s=60, what="the SLO breached", explain=why)
        eventually(lambda: running(core, namespace).get("l4", 0) >= 3, timeout_s=90, what="the pool grown", explain=why)
        eventually(lambda: slo_status(crd, namespace) == "Met", timeout_s=120, what="the SLO met again", explain=why)
        inputs = autoscaling(crd, namespace)["decision"]["inputs"]
    assert load.statuses.count(200) > 0.95 * len(load.statuses)
    # the decision reads the load: the engines' completion rate over the stable window, which still holds
    # seconds of one queued replica's ~2 req/s when the grown pool meets the SLO (measured 1.96-3 of 5 offered)
    assert inputs["requestsPerSecond"] > 1.0


def test_the_chosen_mix_is_the_ilp_optimum_and_an_unschedulable_variant_falls_back(
    crd: LocalCluster,
    core: k8s.CoreV1Api,
    namespace: str,
    gateway: str,
    autoscaler: Callable[..., Autoscaler],
    why: Callable[[], str],
) -> None:
    create_pool(
        crd,
        namespace,
        [
            {"name": "l4", "gpuProduct": L4, "minReplicas": 0, "maxReplicas": 6, "costPerGpuHourUsd": 0.8},
            {"name": "h100", "gpuProduct": H100, "minReplicas": 0, "maxReplicas": 2, "costPerGpuHourUsd": 4.0},
        ],
        scaleDownWindowSeconds=600,
        maxScaleUpStep=8,
    )
    eventually(
        lambda: sum(running(core, namespace).values()) == 2, timeout_s=90, what="initial replicas running", explain=why
    )
    autoscaler()
    with Load(gateway, rps=12.0):
        rec = eventually(
            lambda: (d := autoscaling(crd, namespace).get("decision")) and d["inputs"]["requestsPerSecond"] > 10 and d,
            timeout_s=60,
            what="a decision under load",
            explain=why,
        )
        demand = rec["terms"]["demandRps"] * HEADROOM
        # brute force over all integer mixes: the cheapest whose SLO capacity covers the demand (fewer
        # replicas among equals)
        feasible = [
            {"l4": l4, "h100": h100}
            for l4 in range(7)
            for h100 in range(3)
            if l4 * CAPACITY_RPS["L4"] + h100 * CAPACITY_RPS["H100"] >= demand - 1e-9
        ]
        best = min(feasible, key=lambda m: (round(m["l4"] * 0.8 + m["h100"] * 4.0, 6), m["l4"] + m["h100"]))
        assert rec["terms"]["solverMix"] == best, (rec["terms"], demand)
        assert best["h100"] >= 1  # more than six L4s' worth: the H100 is the cheaper way per request

    # Exhaust the L4s: a replica that needs 8 L4s fits no node (they have 4), so its pods stay Pending.
    namespace2 = namespace  # same namespace, a second pool would race the first for the gateway
    custom(crd).delete_namespaced_custom_object(GROUP, VERSION, namespace2, PLURAL, "tiny")
    eventually(lambda: not running(core, namespace2), timeout_s=60, what="first pool gone", explain=why)
    create_pool(
        crd,
        namespace2,
        [
            {
                "name": "l4",
                "gpuProduct": L4,
                "gpusPerReplica": 8,
                "minReplicas": 0,
                "maxReplicas": 4,
                "costPerGpuHourUsd": 0.05,
            },
            {"name": "a100", "gpuProduct": A100, "minReplicas": 0, "maxReplicas": 6, "costPerGpuHourUsd": 2.5},
        ],
        scaleDownWindowSeconds=600,
    )
    with Load(gateway, rps=3.0):
        rec = eventually(
            lambda: (d := autoscaling(crd, namespace2).get("decision")) and d["reason"] == "VariantUnschedulable" and d,
            timeout_s=90,
            what="fallback decision",
            explain=why,
        )
        assert "l4 has Unschedulable pods" in rec["message"]
        eventually(
            lambda: running(core, namespace2).get("a100", 0) >= 2, timeout_s=90, what="a100 grows instead", explain=why
        )
    assert math.isfinite(rec["costPerHourUsd"])


def test_prometheus_down_holds_the_size_with_a_reason_and_resumes(
    crd: LocalCluster,
    core: k8s.CoreV1Api,
    namespace: str,
    gateway: str,
    autoscaler: Callable[..., Autoscaler],
    prometheus_factory: Callable[..., PrometheusServer],
    why: Callable[[], str],
) -> None:
    """Prometheus scrapes the engines as the chart's PodMonitor tells it (generated as the Prometheus
    Operator does, discovering pods through the API server): the namespace, pool and variant labels the
    autoscaler reads are the chart's relabelling at work, not a test's."""
    prom = prometheus_factory(chart_engine_jobs(crd.kubeconfig, interval_s=1.0))
    start_l4_pool(crd, core, namespace, why, scaleDownWindowSeconds=600)
    eventually(
        lambda: prom.query(f'vllm:num_requests_running{{namespace="{namespace}",pool="tiny",variant="l4"}}'),
        timeout_s=60,
        what="the engine scraped under the PodMonitor's labels",
        explain=why,
    )
    autoscaler("--prometheus-url", prom.url)
    eventually(
        lambda: (c := scaling_active(crd, namespace)) and c["status"] == "True", timeout_s=60, what="scaling active"
    )
    prom.stop()
    with Load(gateway, rps=5.0):
        c = eventually(
            lambda: (c := scaling_active(crd, namespace)) and c["status"] == "False" and c, timeout_s=30, what="stale"
        )
        assert c["reason"] == "MetricsStale" and "prometheus" in c["message"]
        time.sleep(5)
        assert desired(crd, namespace) == {"l4": 1}, "scaled on stale metrics"
        prom.start()
        eventually(lambda: desired(crd, namespace).get("l4", 0) >= 3, timeout_s=90, what="scaling resumed", explain=why)
    assert scaling_active(crd, namespace)["status"] == "True"


def test_a_pool_at_zero_scales_up_for_a_held_request_which_then_succeeds(
    crd: LocalCluster,
    core: k8s.CoreV1Api,
    namespace: str,
    gateway: str,
    autoscaler: Callable[..., Autoscaler],
    why: Callable[[], str],
) -> None:
    create_pool(
        crd,
        namespace,
        [{"name": "l4", "gpuProduct": L4, "minReplicas": 0, "maxReplicas": 2, "costPerGpuHourUsd": 0.8}],
        scaleToZero=True,
        idleWindowSeconds=3,
        scaleDownWindowSeconds=3,
    )
    autoscaler("--gateway-url", gateway)
    eventually(lambda: desired(crd, namespace) == {"l4": 0}, timeout_s=60, what="idle pool at zero", explain=why)
    eventually(lambda: not running(core, namespace), timeout_s=60, what="no pods", explain=why)
    with Load(gateway, rps=0.2) as load:
        eventually(lambda: load.statuses, timeout_s=60, what="the first request answered", explain=why)
    assert load.statuses[0] == 200, load.statuses
    assert any(e.reason == "ScaleFromZero" for e in events(core, namespace))


def test_only_the_lease_holder_decides_and_a_successor_takes_over(
    crd: LocalCluster,
    core: k8s.CoreV1Api,
    namespace: str,
    autoscaler: Callable[..., Autoscaler],
    why: Callable[[], str],
) -> None:
    create_pool(
        crd,
        namespace,
        [{"name": "l4", "gpuProduct": L4, "minReplicas": 1, "maxReplicas": 2, "costPerGpuHourUsd": 0.8}],
        scaleDownWindowSeconds=600,
    )
    first = autoscaler("--identity", f"{namespace}-a")
    eventually(lambda: autoscaling(crd, namespace).get("decision"), timeout_s=60, what="a decision", explain=why)
    second = autoscaler("--identity", f"{namespace}-b")
    coord = k8s.CoordinationV1Api(crd.api_client())

    def holder() -> str:
        return coord.read_namespaced_lease("headway-autoscaler", "headway-system").spec.holder_identity or ""

    eventually(
        lambda: holder() == f"{namespace}-a", timeout_s=10, what="the first autoscaler holds the Lease", explain=why
    )
    time.sleep(3)
    assert f"pool {namespace}/tiny" not in second.log.read_text(), "the standby decided"
    first.stop()
    eventually(lambda: holder() == f"{namespace}-b", timeout_s=15, what="the standby takes the Lease", explain=why)
    before = autoscaling(crd, namespace)["decision"]["time"]
    eventually(
        lambda: autoscaling(crd, namespace)["decision"]["time"] != before, timeout_s=15, what="the successor decides"
    )
    assert f"pool {namespace}/tiny" in second.log.read_text()


def test_a_lease_is_timed_by_the_injected_clock(crd: LocalCluster, namespace: str) -> None:
    """The Lease's renew time is written and compared on the autoscaler's clock: a holder silent for a lease
    duration of that clock is replaced, with no wall-clock wait."""
    api, now = crd.api_client(), [1_900_000_000.0]
    a = LeaderElector(api, namespace, "a", 30, clock=lambda: now[0])
    b = LeaderElector(api, namespace, "b", 30, clock=lambda: now[0])
    assert a.try_acquire() and not b.try_acquire()
    lease = k8s.CoordinationV1Api(api).read_namespaced_lease("headway-autoscaler", namespace)
    assert lease.spec.holder_identity == "a" and lease.spec.renew_time.timestamp() == pytest.approx(now[0])
    now[0] += 20
    assert a.try_acquire() and not b.try_acquire()  # renewed within the duration
    now[0] += 31
    assert b.try_acquire() and not a.try_acquire()
