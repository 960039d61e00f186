"""200 ModelPools applied at once, reconciled until every pool is Ready with its pod Running.

    headway bench operator-scale [--pools 200] [--variants 1]

A cluster of its own (30 fake H100 nodes × 8 GPUs), the operator running as its ServiceAccount, and
the runner with the `stub` engine runtime (a process that answers /health), because what is measured
is the control plane, not the engines. Records time to all-Ready, per-pool time to Ready, the
operator's peak RSS and CPU time, and its reconcile count.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import yaml
from kubernetes import client as k8s

from bench._machine import write_result
from headway.devenv import procs
from headway.devenv.cluster import LocalCluster
from headway.devenv.controlplane import (
    OperatorProcess,
    install_crd_and_rbac,
    pool_manifest,
    rss_bytes,
    service_account_kubeconfig,
)
from headway.devenv.nodes import NodeFleet
from headway.devenv.runner import spawn_runner

GROUP, VERSION, PLURAL = "inference.headway.dev", "v1alpha1", "modelpools"


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", type=int, default=200)
    parser.add_argument("--timeout-s", type=float, default=900)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="headway-operator-scale-"))
    fleet = NodeFleet.model_validate(
        {
            "groups": [
                {"name": "h100", "count": 30, "gpus": 8, "product": "NVIDIA-H100-80GB-HBM3", "pods": 250},
                {"name": "system", "count": 2},
            ]
        }
    )
    cluster = LocalCluster(work / "cluster", fleet=fleet)
    cluster.up()
    runner = op = None
    try:
        install_crd_and_rbac(cluster)
        runner = spawn_runner(cluster.kubeconfig, work / "runner", "--engine-runtime", "stub")
        op = OperatorProcess(
            service_account_kubeconfig(cluster, work / "operator.kubeconfig"),
            work / "operator.log",
            procs.free_port(),
            procs.free_port(),
        ).start()
        api = cluster.api_client()
        custom, core = k8s.CustomObjectsApi(api), k8s.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": "bench"}})
        names = [f"pool-{i:03d}" for i in range(args.pools)]
        peak_rss, stop = [rss_bytes(op.pid)], threading.Event()

        def sample() -> None:
            while not stop.wait(0.25):
                peak_rss.append(rss_bytes(op.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cpu0 = _cpu_s(op.pid)
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda n: custom.create_namespaced_custom_object(
                        GROUP,
                        VERSION,
                        "bench",
                        PLURAL,
                        pool_manifest(
                            n,
                            [{"name": "h100", "gpuProduct": "NVIDIA-H100-80GB-HBM3", "replicas": 1}],
                            source="org/model",
                        ),
                    ),
                    names,
                )
            )
        applied_s = time.monotonic() - t0
        ready_at: dict[str, float] = {}
        while len(ready_at) < len(names) and time.monotonic() - t0 < args.timeout_s:
            for item in custom.list_namespaced_custom_object(GROUP, VERSION, "bench", PLURAL)["items"]:
                conds = (item.get("status") or {}).get("conditions") or []
                if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
                    ready_at.setdefault(item["metadata"]["name"], time.monotonic() - t0)
            print(f"\r{len(ready_at)}/{len(names)} pools Ready after {time.monotonic() - t0:.0f}s", end="", flush=True)
            time.sleep(0.5)
        print()
        stop.set()
        running = sum(1 for p in core.list_namespaced_pod("bench").items if p.status.phase == "Running")
        cpu = _cpu_s(op.pid) - cpu0
        reconciles = sum(
            float(line.split()[-1])
            for line in op.metrics_text().splitlines()
            if line.startswith("headway_operator_reconciles_total{")
        )
        times = sorted(ready_at.values())
        payload = {
            "pools": args.pools,
            "variants_per_pool": 1,
            "nodes": sum(g.count for g in fleet.groups),
            "engine_runtime": "stub",
            "all_applied_s": round(applied_s, 2),
            "all_ready": len(ready_at) == len(names),
            "ready_pools": len(ready_at),
            "running_pods": running,
            "time_to_all_ready_s": round(times[-1], 2) if len(times) == len(names) else None,
            "pool_ready_s": {
                "p50": round(statistics.median(times), 2),
                "p90": round(times[int(0.9 * (len(times) - 1))], 2),
                "max": round(times[-1], 2),
            }
            if times
            else None,
            "operator_peak_rss_mib": round(max(peak_rss) / 2**20, 1),
            "operator_cpu_s": round(cpu, 1),
            "operator_reconciles": int(reconciles),
        }
        print(yaml.safe_dump(payload, sort_keys=False))
        print(write_result("operator-scale", payload))
    finally:
        if op is not None:
            op.stop()
        if runner is not None:
            procs.stop(runner.pid, grace_s=60)
        cluster.down()


if __name__ == "__main__":
    main()
