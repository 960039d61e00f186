"""Faults injected mid-load into headway as its chart installs it on the local cluster: one row per fault.

    headway bench faults [--faults engine-kill,engine-hang,...] [--rate 6] [--before-s 8] [--during-s 15]
                         [--after-s 15]

The chart runs the operator, two gateway replicas sharing an external Redis, and the indexer; two
ModelPools of simulated engines (two replicas each) serve models `chat` and `code`. A load balancer in
front of the gateway replicas (Envoy: round robin, retrying refused connections and resets before a
response began on the other replica, ejecting a replica on its first refused connection, as an ingress in
front of replicas does) takes a steady open-loop load, half streaming, over both models.
Each fault is injected after `--before-s`, held `--during-s` (where it has a duration), then the load goes
on `--after-s`.

Per row: requests sent, succeeded, failed by status, streams cut without an error event, requests still
unanswered at the client's deadline, p99 latency during the fault against the p99 before it, time to
recover (from the injection to the end of the last request that failed or took over 3x the p99 before
it), and the cluster afterwards (every pool back to its replicas, all Ready, no stray Deployment or pod,
no index entries for pods that do not exist).

Goals per row: no request lost where another endpoint could serve it (a failed non-streaming request, or
a stream refused before it began), none left hanging, every stream ends with [DONE] or an error event
(except a stream whose gateway was killed under it: nothing is left to write the event, so the client
sees the connection cut, counted), recovery within 10 s for data-plane faults and 30 s for control-plane
ones, nothing stray.

Writes bench/results/faults-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis
from kubernetes import client as k8s

from bench._machine import write_result
from headway.api import ENGINE_LABEL, POOL_LABEL
from headway.devenv import procs
from headway.devenv.chart import install, local_values, restricted_namespace, values_file
from headway.devenv.cluster import LocalCluster
from headway.devenv.controlplane import pool_manifest
from headway.devenv.envoy import EnvoyProcess, bootstrap
from headway.devenv.runner import spawn_runner
from headway.devenv.services import RedisServer
from headway.devenv.tinymodel import tiny_model_dir

GROUP, VERSION, PLURAL = "inference.headway.dev", "v1alpha1", "modelpools"
MODELS = ("chat", "code")
GPUS = {"chat": "NVIDIA-L4", "code": "NVIDIA-A100-SXM4-80GB"}
REPLICAS = 2
COMPONENT = "app.kubernetes.io/component"
MAX_TOKENS = 200
"""Long enough answers (over a second from a simulated engine) that a fault meets requests mid-answer."""
DEADLINE_S = 30.0
"""A request unanswered this long counts as hung (a simulated engine answers these in well under a second)."""
DATA_PLANE_RECOVERY_S, CONTROL_PLANE_RECOVERY_S = 10.0, 30.0
_PID = re.compile(r"^pid (\d+):")


# ----- the installation
@dataclass
class Env:
    cluster: LocalCluster
    namespace: str
    pools_namespace: str
    release: str
    redis: RedisServer
    balancer: EnvoyProcess
    work: Path

    @property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.cluster.api_client())

    def pods(self, namespace: str, selector: str) -> list[Any]:
        return [
            p
            for p in self.core.list_namespaced_pod(namespace, label_selector=selector).items
            if not p.metadata.deletion_timestamp
        ]

    def component_pods(self, component: str) -> list[Any]:
        return self.pods(self.namespace, f"app.kubernetes.io/instance={self.release},{COMPONENT}={component}")

    def engine_pods(self, pool: str | None = None) -> list[Any]:
        return self.pods(self.pools_namespace, f"{POOL_LABEL}={pool}" if pool else ENGINE_LABEL)

    def pid(self, pod: Any) -> int:
        """The pod's process, as the runner reported it in its latest Started event."""
        events = self.core.list_namespaced_event(
            pod.metadata.namespace, field_selector=f"involvedObject.name={pod.metadata.name},reason=Started"
        ).items
        pid = 0
        for e in sorted(events, key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp):
            m = _PID.match(e.message or "")
            pid = int(m.group(1)) if m else 0
        if not pid or not procs.alive(pid):
            raise RuntimeError(f"no live process for pod {pod.metadata.name}")
        return pid

    def stop(self) -> None:
        self.balancer.stop()
        self.redis.stop()


def _ready(pod: Any) -> bool:
    return pod.status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
    )


def _until(cond: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if out := cond():
                return out
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not within {timeout_s:.0f}s")


def setup(cluster: LocalCluster, work: Path, *, namespace: str, pools_namespace: str, release: str = "faults") -> Env:
    """Install the chart (two gateway replicas, the indexer, an external Redis) and two pools of simulated
    engines, and start the load balancer in front of the gateways."""
    core = k8s.CoreV1Api(cluster.api_client())
    redis_server = RedisServer(work / "redis").start()
    for body in (restricted_namespace(namespace), {"metadata": {"name": pools_namespace}}):
        with contextlib.suppress(k8s.ApiException):
            core.create_namespace(body)
    values = local_values(autoscaler=False)
    values["redis"] = {"enabled": False, "externalUrl": redis_server.url}
    values["operator"]["watchNamespaces"] = [pools_namespace]
    values["gateway"] = {"replicas": 2, "watchNamespaces": [pools_namespace]}
    install(cluster.kubeconfig, release, namespace, values_file(work / "values.yaml", values))
    custom = k8s.CustomObjectsApi(cluster.api_client())
    for model in MODELS:
        variants = [{"name": "gpu", "gpuProduct": GPUS[model], "replicas": REPLICAS}]
        pool = pool_manifest(model, variants, source=str(tiny_model_dir()), model=model)
        custom.create_namespaced_custom_object(GROUP, VERSION, pools_namespace, PLURAL, pool)
    env = Env(cluster, namespace, pools_namespace, release, redis_server, None, work)  # type: ignore[arg-type]
    _until(lambda: sum(map(_ready, env.engine_pods())) == REPLICAS * len(MODELS), 180, "engines ready")
    gateways = _until(
        lambda: (g := env.component_pods("gateway")) and all(map(_ready, g)) and len(g) == 2 and g, 120, "gateways"
    )
    endpoints = [f"{p.status.pod_ip}:8080" for p in gateways]
    cfg = bootstrap(
        listen_port=procs.free_port(),
        admin_port=procs.free_port(),
        epp_port=None,
        upstream="round_robin",
        endpoints=endpoints,
        retry_on="connect-failure,refused-stream,reset",
        retry_other_hosts=True,
    )
    env.balancer = EnvoyProcess(work, cfg, name="balancer").start()
    _until(lambda: _models(env.balancer.url) >= set(MODELS), 60, "gateways listing both models")
    return env


def _models(url: str) -> set[str]:
    import urllib.request

    with urllib.request.urlopen(f"{url}/v1/models", timeout=2) as r:
        return {m["id"] for m in json.loads(r.read())["data"]}


# ----- load
@dataclass
class Outcome:
    start: float
    latency_s: float
    model: str
    stream: bool
    status: int
    """HTTP status; 0 when no response came (connection failed) and -1 when none came by the deadline."""
    done: bool = False
    """A stream's [DONE], or a non-streaming body with choices."""
    error_event: bool = False
    """A stream ended with an OpenAI error event."""
    detail: str = ""
    """The start of a failed answer's body, or the exception: what a row's failures were."""


async def _request(session: aiohttp.ClientSession, url: str, model: str, stream: bool, n: int) -> Outcome:
    prompt = f"Request {n}: say something about faults."
    body = {"model": model, "prompt": prompt, "max_tokens": MAX_TOKENS, "stream": stream}
    t0 = time.monotonic()
    out = Outcome(t0, 0.0, model, stream, 0)
    try:
        async with asyncio.timeout(DEADLINE_S):
            async with session.post(f"{url}/v1/completions", json=body) as r:
                out.status = r.status
                if r.status != 200:
                    out.detail = (await r.text())[:200]
                elif not stream:
                    data = await r.json(content_type=None)
                    out.done = r.status == 200 and bool(data.get("choices"))
                else:
                    async for raw in r.content:
                        line = raw.decode(errors="replace").strip()
                        if line == "data: [DONE]":
                            out.done = True
                        elif line.startswith("data: ") and '"error"' in line:
                            out.error_event = True
    except TimeoutError:
        out.status = -1
    except (aiohttp.ClientError, ValueError) as e:
        out.detail = f"{type(e).__name__}: {e}"[:200]
    out.latency_s = time.monotonic() - t0
    return out


async def _load(url: str, rate: float, duration_s: float, seed: int) -> list[Outcome]:
    rng = random.Random(seed)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    tasks = []
    async with aiohttp.ClientSession(connector=connector) as session:
        t0 = time.monotonic()
        for n in range(int(rate * duration_s)):
            await asyncio.sleep(max(0.0, t0 + n / rate - time.monotonic()))
            tasks.append(asyncio.create_task(_request(session, url, rng.choice(MODELS), n % 2 == 1, n)))
        return list(await asyncio.gather(*tasks))


# ----- faults
@dataclass(frozen=True)
class Fault:
    name: str
    plane: str
    """data or control: which recovery goal applies."""
    description: str
    inject: Callable[[Env], Callable[[], None] | None]
    """Injects the fault; returns how to end it (None: it ends by itself, e.g. a killed process restarts)."""
    kills_stream_holder: bool = False
    """The process relaying streams to clients dies: its streams can only be cut, not ended with an event."""


def _kill(env: Env, pod: Any, sig: int = signal.SIGKILL) -> int:
    pid = env.pid(pod)
    os.kill(pid, sig)
    return pid


def _engine_kill(env: Env) -> None:
    _kill(env, env.engine_pods("chat")[0])


def _engine_hang(env: Env) -> Callable[[], None]:
    pid = _kill(env, env.engine_pods("chat")[0], signal.SIGSTOP)
    return lambda: os.kill(pid, signal.SIGCONT)


def _gateway_kill(env: Env) -> None:
    _kill(env, env.component_pods("gateway")[0])


def _indexer_kill(env: Env) -> None:
    _kill(env, env.component_pods("kvcache")[0])


def _redis_restart(env: Env) -> Callable[[], None]:
    env.redis.stop()
    return lambda: env.redis.start()


def _redis_flush(env: Env) -> None:
    redis.Redis.from_url(env.redis.url).flushall()


def _engine_slow(env: Env) -> Callable[[], None]:
    """Ten times slower: the engine runs 10 ms of every 100 (SIGCONT, then SIGSTOP for 90 ms)."""
    import threading

    pid, stop = env.pid(env.engine_pods("chat")[0]), threading.Event()

    def duty_cycle() -> None:
        while not stop.is_set():
            os.kill(pid, signal.SIGSTOP)
            stop.wait(0.09)
            os.kill(pid, signal.SIGCONT)
            stop.wait(0.01)
        os.kill(pid, signal.SIGCONT)

    thread = threading.Thread(target=duty_cycle, daemon=True)
    thread.start()
    return lambda: (stop.set(), thread.join())  # type: ignore[func-returns-value]


def _restart(component: str) -> Callable[[Env], Callable[[], None]]:
    """A control-plane component stopped for 5 s, then started again (in the background, so the load goes
    on; the row's end waits for it)."""

    def inject(env: Env) -> Callable[[], None]:
        import threading

        thread = threading.Thread(target=env.cluster.restart, args=(component,), kwargs={"down_s": 5.0}, daemon=True)
        thread.start()
        return thread.join

    return inject


def _operator_kill_mid_rollout(env: Env) -> None:
    """A rollout begins (new engine arguments for `code`), and the operator is SIGKILLed in its midst."""
    custom = k8s.CustomObjectsApi(env.cluster.api_client())
    args = ["--max-num-seqs", "128"]
    patch = {"spec": {"model": {"engineArgs": args}}}
    custom.patch_namespaced_custom_object(GROUP, VERSION, env.pools_namespace, PLURAL, "code", patch)
    _kill(env, env.component_pods("operator")[0])


FAULTS = {
    f.name: f
    for f in (
        Fault("engine-kill", "data", "SIGKILL of one engine pod's process (it restarts)", _engine_kill),
        Fault("engine-hang", "data", "SIGSTOP of one engine (socket open, no answers), SIGCONT after", _engine_hang),
        Fault("gateway-kill", "data", "SIGKILL of one of the two gateway replicas (it restarts)", _gateway_kill, True),
        Fault("indexer-kill", "data", "SIGKILL of the KV-event indexer (it restarts)", _indexer_kill),
        Fault("redis-restart", "data", "the shared index's Redis stopped, started again after", _redis_restart),
        Fault("redis-flush", "data", "FLUSHALL on the shared index's Redis", _redis_flush),
        Fault("engine-slow", "data", "one engine 10x slower (SIGSTOP 90 ms of every 100) for the fault", _engine_slow),
        Fault("operator-kill", "control", "SIGKILL of the operator mid-rollout of a pool", _operator_kill_mid_rollout),
        Fault("apiserver-restart", "control", "kube-apiserver down 5 s, then restarted", _restart("kube-apiserver")),
        Fault("etcd-restart", "control", "etcd down 5 s, then restarted", _restart("etcd")),
    )
}
SMOKE = ("engine-kill", "engine-hang", "gateway-kill")


# ----- one row
@dataclass
class Row:
    fault: str
    description: str
    sent: int
    succeeded: int
    failed_by_status: dict[str, int]
    failure_details: list[str]
    """Up to five distinct answers or errors of the failed requests."""
    lost: int
    """Requests never answered though another endpoint could have: a non-streaming request that failed, or
    a stream refused before it began (a stream cut mid-answer is counted below instead)."""
    non_streaming_lost: int
    streams: int
    streams_cut: int
    """Streams that ended without [DONE] or an error event."""
    streams_error_event: int
    hung: int
    p99_before_s: float
    p99_during_s: float
    recovery_s: float
    recovery_goal_s: float
    control_plane_acts_s: float | None = None
    """Control-plane rows: seconds, after the fault, from asking a pool for a replica to it serving."""
    after: dict[str, Any] = field(default_factory=dict)
    goals: dict[str, bool] = field(default_factory=dict)


def _p99(xs: Sequence[float]) -> float:
    if not xs:
        return float("nan")
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=100, method="inclusive")[98]


def _ok(o: Outcome) -> bool:
    return o.status == 200 and o.done and not o.error_event


def check_cluster(env: Env, timeout_s: float = 90.0) -> dict[str, Any]:
    """Every pool back to its replicas and Ready, nothing stray, no index entry for a pod that does not
    serve (after the indexer has had time to catch up)."""
    apps = k8s.AppsV1Api(env.cluster.api_client())

    def rolled_out() -> bool:
        return all(
            (d.status.observed_generation or 0) >= d.metadata.generation
            and (d.status.updated_replicas or 0) == d.spec.replicas
            for d in apps.list_namespaced_deployment(env.pools_namespace).items
        )

    def settled() -> bool:
        pods = env.engine_pods()
        return (
            len(pods) == REPLICAS * len(MODELS)
            and all(map(_ready, pods))
            and all(map(_ready, env.component_pods("gateway") + env.component_pods("kvcache")))
            and rolled_out()
        )

    ready = True
    try:
        _until(settled, timeout_s, "cluster settled")
    except TimeoutError:
        ready = False
    deployments = sorted(d.metadata.name for d in apps.list_namespaced_deployment(env.pools_namespace).items)
    pods = env.engine_pods()
    live = {f"{p.status.pod_ip}:8000" for p in pods if p.status.pod_ip}
    r = redis.Redis.from_url(env.redis.url)
    indexed = {k.decode().split(":p:", 1)[1] for k in r.scan_iter("hw:p:*") if r.scard(k)}
    return {
        "all_ready": ready,
        "rollouts_complete": rolled_out(),
        "deployments": deployments,
        "stray_deployments": [d for d in deployments if d.split("-")[0] not in MODELS],
        "engine_pods": len(pods),
        "orphaned_index_pods": sorted(indexed - live),
    }


def _scale(env: Env, pool: str, replicas: int) -> None:
    custom = k8s.CustomObjectsApi(env.cluster.api_client())
    variants = [{"name": "gpu", "gpuProduct": GPUS[pool], "replicas": replicas}]
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, env.pools_namespace, PLURAL, pool, {"spec": {"variants": variants}}
    )


def control_plane_acts(env: Env, timeout_s: float = 60.0) -> float | None:
    """Seconds from asking `chat` for one more replica to that replica serving Ready (the API server, etcd,
    the operator, the scheduler and the runner all acting again); None if not within `timeout_s`. The pool
    is put back to its replicas after."""
    t0 = time.monotonic()
    _scale(env, "chat", REPLICAS + 1)
    try:
        _until(lambda: sum(map(_ready, env.engine_pods("chat"))) == REPLICAS + 1, timeout_s, "one more replica")
        took: float | None = time.monotonic() - t0
    except TimeoutError:
        took = None
    _scale(env, "chat", REPLICAS)
    return took


def run_fault(
    env: Env, fault: Fault, *, rate: float, before_s: float, during_s: float, after_s: float, seed: int
) -> Row:
    total = before_s + during_s + after_s

    async def run() -> list[Outcome]:
        load = asyncio.create_task(_load(env.balancer.url, rate, total, seed))
        await asyncio.sleep(before_s)
        restore = await asyncio.to_thread(fault.inject, env)
        injected = time.monotonic()
        if restore is not None:
            await asyncio.sleep(during_s)
            await asyncio.to_thread(restore)
        outcomes = await load
        return [replace_start(o, injected) for o in outcomes]

    outcomes = asyncio.run(run())
    # before: answered before the injection; the rest met the fault (those in flight at it included)
    before = [o for o in outcomes if o.start + o.latency_s < 0]
    after = [o for o in outcomes if o.start + o.latency_s >= 0]
    bad = [o for o in after if not _ok(o)]
    by_status: dict[str, int] = {}
    for o in bad:
        key = {0: "no-response", -1: "deadline"}.get(o.status, str(o.status))
        if o.status == 200:
            key = "200-error-event" if o.error_event else "200-incomplete"
        by_status[key] = by_status.get(key, 0) + 1
    streams = [o for o in after if o.stream]
    goal_s = DATA_PLANE_RECOVERY_S if fault.plane == "data" else CONTROL_PLANE_RECOVERY_S
    # recovered once requests neither fail nor take over 3x the p99 before the fault (at least 1 s)
    slow_s = max(1.0, 3 * _p99([o.latency_s for o in before if _ok(o)]))
    recovery = max((o.start + o.latency_s for o in after if not _ok(o) or o.latency_s > slow_s), default=0.0)
    acts = control_plane_acts(env) if fault.plane == "control" else None
    state = check_cluster(env)
    row = Row(
        fault=fault.name,
        description=fault.description,
        sent=len(after),
        succeeded=len(after) - len(bad),
        failed_by_status=by_status,
        failure_details=sorted({f"{o.status} {'stream' if o.stream else 'plain'}: {o.detail}" for o in bad})[:5],
        lost=sum(1 for o in bad if not (o.stream and o.status == 200)),
        non_streaming_lost=sum(1 for o in bad if not o.stream),
        streams=len(streams),
        streams_cut=sum(1 for o in streams if o.status == 200 and not o.done and not o.error_event),
        streams_error_event=sum(1 for o in streams if o.error_event),
        hung=sum(1 for o in after if o.status == -1),
        p99_before_s=round(_p99([o.latency_s for o in before if _ok(o)]), 3),
        p99_during_s=round(_p99([o.latency_s for o in after if _ok(o)]), 3),
        recovery_s=round(recovery, 1),
        recovery_goal_s=goal_s,
        control_plane_acts_s=None if acts is None else round(acts, 1),
        after=state,
    )
    row.goals = {
        "nothing_lost": row.lost == 0,
        "nothing_hangs": row.hung == 0,
        "streams_end_cleanly": row.streams_cut == 0 or fault.kills_stream_holder,
        "recovery": row.recovery_s <= goal_s
        and (fault.plane != "control" or (acts is not None and acts <= CONTROL_PLANE_RECOVERY_S)),
        "nothing_stray": state["all_ready"]
        and state["rollouts_complete"]
        and not state["stray_deployments"]
        and not state["orphaned_index_pods"]
        and state["engine_pods"] == REPLICAS * len(MODELS),
    }
    return row


def replace_start(o: Outcome, origin: float) -> Outcome:
    """The outcome with its start relative to the injection (negative: before it)."""
    return Outcome(**{**asdict(o), "start": o.start - origin})


def run_matrix(env: Env, names: Sequence[str], *, progress: Callable[[str], None] = print, **kw: Any) -> list[Row]:
    rows = []
    for i, name in enumerate(names):
        progress(f"[{i + 1}/{len(names)}] {name}: {FAULTS[name].description}")
        row = run_fault(env, FAULTS[name], seed=i, **kw)
        progress(f"    {row.succeeded}/{row.sent} ok, recovery {row.recovery_s}s, goals {row.goals}")
        rows.append(row)
    return rows


def table(rows: Sequence[Row]) -> str:
    head = (
        "| fault | sent | ok | failed | streams cut | hung | p99 before → during (s) | recovery (s) | stray | goals |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        failed = ", ".join(f"{k}: {v}" for k, v in sorted(r.failed_by_status.items())) or "0"
        stray = "none" if r.goals["nothing_stray"] else json.dumps(r.after)
        met = "all met" if all(r.goals.values()) else "missed: " + ", ".join(k for k, v in r.goals.items() if not v)
        recovery = f"{r.recovery_s} (≤ {r.recovery_goal_s:g})"
        if r.control_plane_acts_s is not None:
            recovery += f"; a scale-up served {r.control_plane_acts_s} s after"
        lines.append(
            f"| {r.fault} | {r.sent} | {r.succeeded} | {failed} | {r.streams_cut} | {r.hung} | "
            f"{r.p99_before_s} → {r.p99_during_s} | {recovery} | {stray} | {met} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of {', '.join(FAULTS)}")
    parser.add_argument("--rate", type=float, default=6.0, help="requests per second (half streaming)")
    parser.add_argument("--before-s", type=float, default=8.0)
    parser.add_argument("--during-s", type=float, default=15.0)
    parser.add_argument("--after-s", type=float, default=15.0)
    args = parser.parse_args()
    names = [n.strip() for n in args.faults.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        sys.exit(f"error: unknown fault(s) {', '.join(unknown)}; known: {', '.join(FAULTS)}")
    work = Path(tempfile.mkdtemp(prefix="headway-faults-"))
    cluster = LocalCluster(work / "cluster")
    kubeconfig = cluster.up(on_progress=lambda s: print(f"local cluster: {s}", flush=True))
    runner = spawn_runner(kubeconfig, work / "runner")
    env = None
    try:
        env = setup(cluster, work, namespace="headway-system", pools_namespace="faults")
        windows = {"rate": args.rate, "before_s": args.before_s, "during_s": args.during_s, "after_s": args.after_s}
        rows = run_matrix(env, names, progress=lambda s: print(s, flush=True), **windows)
    finally:
        if env is not None:
            env.stop()
        procs.stop(runner.pid, grace_s=30)
        cluster.down()
    print(table(rows))
    payload = {
        "setup": {
            "chart": "operator, gateway x2 (external Redis), indexer; load balancer: Envoy over both gateways, "
            "retrying connect failures and resets before the request was sent",
            "pools": {m: f"{REPLICAS} x {GPUS[m]} (simulated engines)" for m in MODELS},
            "load": f"{args.rate:g} req/s open loop, half streaming, both models, max_tokens {MAX_TOKENS}, "
            f"deadline {DEADLINE_S:g}s",
            "windows_s": {"before": args.before_s, "during": args.during_s, "after": args.after_s},
        },
        "rows": [asdict(r) for r in rows],
        "all_goals_met": all(all(r.goals.values()) for r in rows),
    }
    print(write_result("faults", payload))


if __name__ == "__main__":
    main()
