"""Development-only engine runner: plays the kubelet for pods on the fake (kwok) nodes.

For each Running pod that carries the engine label or headway's control-plane label, it starts the
pod's container command as a local process bound to the pod's IP, probes its readiness and writes
the pod's Ready condition, restarts it with back-off when it exits (reporting the exit in a pod
Event), and stops it when the pod goes away. Control-plane pods get a kubeconfig holding a token of
their own ServiceAccount (TokenRequest API), so RBAC applies to them exactly as in a cluster. A pod's
ConfigMap and Secret volumes are written as files in its working directory, and paths under their
mountPath in the command point there.

This is a stand-in for a kubelet on a laptop, not part of headway.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime as dt
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.rest import ApiException

from headway.api import CONTROL_PLANE_LABEL, CONTROL_PLANE_VALUE, ENGINE_LABEL, ENGINE_RUNTIME_ANNOTATION
from headway.devenv import procs
from headway.devenv.kubeconfig import read_server_and_ca, write_kubeconfig
from headway.devenv.podspec import (
    ConfigVolume,
    EngineRuntimes,
    LocalCommand,
    PodSpecError,
    ServiceNotReady,
    ServiceView,
    config_volumes,
    local_command,
)

log = logging.getLogger(__name__)
COMPONENT = "headway-dev-runner"
_PR_SET_PDEATHSIG = 1
_MAX_BACKOFF_S = 60.0


try:
    _prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl  # resolved before any fork
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent() -> None:
    """Child processes die with the runner, even if it is killed with SIGKILL."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ready(pod: Any) -> bool:
    return (
        bool(pod.status.pod_ip)
        and not pod.metadata.deletion_timestamp
        and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    )


def _target_port(pod: Any, target: int | str) -> int | None:
    """A Service targetPort (number or container port name) resolved against one backend pod."""
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for c in pod.spec.containers:
        for p in c.ports or []:
            if p.name == target:
                return int(p.container_port)
    return None


def is_managed(pod: Mapping[str, Any]) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return ENGINE_LABEL in labels or labels.get(CONTROL_PLANE_LABEL) == CONTROL_PLANE_VALUE


def wants_process(pod: Mapping[str, Any]) -> bool:
    """A pod gets a process while it is Running on a node, has an IP, and is not being deleted."""
    st = pod.get("status") or {}
    return (
        is_managed(pod)
        and not pod["metadata"].get("deletionTimestamp")
        and st.get("phase") == "Running"
        and bool(st.get("podIP"))
        and bool(pod["spec"].get("nodeName"))
    )


@dataclass
class Probe:
    kind: str  # "http" | "tcp" | "none"
    port: int = 0
    path: str = "/"
    period_s: float = 1.0
    failure_threshold: int = 3

    @classmethod
    def from_container(cls, container: Mapping[str, Any]) -> Probe:
        spec = container.get("readinessProbe") or {}
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports") or [] if p.get("name")}

        def port_of(v: Any) -> int:
            return int(ports.get(v, v)) if not str(v).isdigit() else int(v)

        period = float(spec.get("periodSeconds", 10))
        threshold = int(spec.get("failureThreshold", 3))
        if "httpGet" in spec:
            g = spec["httpGet"]
            return cls("http", port_of(g["port"]), g.get("path", "/"), period, threshold)
        if "tcpSocket" in spec:
            return cls("tcp", port_of(spec["tcpSocket"]["port"]), period_s=period, failure_threshold=threshold)
        return cls("none")

    def check(self, ip: str) -> bool:
        if self.kind == "none":
            return True
        if self.kind == "tcp":
            try:
                with socket.create_connection((ip, self.port), timeout=1.0):
                    return True
            except OSError:
                return False
        try:
            with urllib.request.urlopen(f"http://{ip}:{self.port}{self.path}", timeout=1.0) as r:
                return 200 <= r.status < 400
        except (urllib.error.URLError, OSError, ValueError):
            return False


@dataclass
class Managed:
    """One pod's local process and what the runner has reported about it."""

    uid: str
    namespace: str
    name: str
    pod_ip: str
    probe: Probe
    proc: subprocess.Popen[bytes] | None = None
    command: LocalCommand | None = None
    restarts: int = 0
    ready: bool = False
    failures: int = 0
    next_start: float = 0.0
    next_probe: float = 0.0
    waiting_reported: str = ""
    next_resync: float = 0.0
    started_at: float = field(default_factory=time.monotonic)


class Runner:
    def __init__(
        self,
        kubeconfig: Path,
        *,
        state_dir: Path,
        engine_runtime: str = "sim",
        runtimes: EngineRuntimes | None = None,
        namespace: str | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.state_dir = state_dir
        self.engine_runtime = engine_runtime
        self.runtimes = runtimes or EngineRuntimes()
        self.namespace = namespace
        self.api_client = k8s_config.new_client_from_config(config_file=str(kubeconfig))
        self.core = k8s.CoreV1Api(self.api_client)
        self.server, self.ca = read_server_and_ca(kubeconfig)
        self.pods: dict[str, dict[str, Any]] = {}
        self.managed: dict[str, Managed] = {}
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._stop = threading.Event()
        self.host = socket.gethostname()

    # ----- watching
    def _watch_pods(self) -> None:
        while not self._stop.is_set():
            try:
                listing = (
                    self.core.list_namespaced_pod(self.namespace)
                    if self.namespace
                    else self.core.list_pod_for_all_namespaces()
                )
                fresh = {
                    p["metadata"]["uid"]: p
                    for p in (self.api_client.sanitize_for_serialization(i) for i in listing.items)
                    if is_managed(p)
                }
                with self._lock:
                    self.pods = fresh
                self._changed.set()
                w = k8s_watch.Watch()
                kwargs = {
                    "resource_version": listing.metadata.resource_version,
                    "timeout_seconds": 60,
                    "allow_watch_bookmarks": True,
                }
                fn = self.core.list_namespaced_pod if self.namespace else self.core.list_pod_for_all_namespaces
                args = (self.namespace,) if self.namespace else ()
                for ev in w.stream(fn, *args, **kwargs):
                    if self._stop.is_set():
                        w.stop()
                        return
                    if ev["type"] == "BOOKMARK":
                        continue
                    pod = self.api_client.sanitize_for_serialization(ev["object"])
                    uid = pod["metadata"]["uid"]
                    with self._lock:
                        if ev["type"] == "DELETED" or not is_managed(pod):
                            self.pods.pop(uid, None)
                        else:
                            self.pods[uid] = pod
                    self._changed.set()
            except Exception as e:  # the watch restarts from a fresh list on any error, e.g. 410 Gone
                if not self._stop.is_set():
                    log.debug("pod watch restarting: %s", e)
                    time.sleep(0.5)

    # ----- reporting
    def _event(self, m: Managed, reason: str, message: str, warning: bool = False) -> None:
        body = {
            "metadata": {"generateName": f"{m.name}."},
            "involvedObject": {
                "kind": "Pod",
                "apiVersion": "v1",
                "namespace": m.namespace,
                "name": m.name,
                "uid": m.uid,
            },
            "reason": reason,
            "message": message[:1000],
            "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT, "host": self.host},
            "firstTimestamp": _now(),
            "lastTimestamp": _now(),
            "count": 1,
            "reportingComponent": COMPONENT,
            "reportingInstance": self.host,
        }
        try:
            self.core.create_namespaced_event(m.namespace, body)
        except ApiException as e:
            log.warning("could not record event %s on %s/%s: %s", reason, m.namespace, m.name, e.reason)
        log.info("%s %s/%s: %s", reason, m.namespace, m.name, message)

    def _set_ready(self, m: Managed, ready: bool, *, terminated: int | None = None) -> None:
        with self._lock:
            pod = self.pods.get(m.uid)
        if pod is None:
            return
        flag = "True" if ready else "False"
        statuses = []
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            cs = {**cs, "ready": ready, "restartCount": m.restarts, "started": m.proc is not None}
            if terminated is not None:
                cs["lastState"] = {
                    "terminated": {
                        "exitCode": terminated,
                        "finishedAt": _now(),
                        "reason": "Completed" if terminated == 0 else "Error",
                    }
                }
            statuses.append(cs)
        patch: dict[str, Any] = {
            "status": {
                "conditions": [
                    {"type": "Ready", "status": flag, "lastTransitionTime": _now()},
                    {"type": "ContainersReady", "status": flag, "lastTransitionTime": _now()},
                ]
            }
        }
        if statuses:
            patch["status"]["containerStatuses"] = statuses
        try:
            self.core.patch_namespaced_pod_status(m.name, m.namespace, patch)
            m.ready = ready
        except ApiException as e:
            if e.status != 404:
                log.warning("could not set Ready=%s on %s/%s: %s", flag, m.namespace, m.name, e.reason)

    # ----- processes
    def _services(self) -> list[ServiceView]:
        """Each Service with a ready backend per port, found from the pods its selector picks.

        Not from EndpointSlices: the API server refuses loopback addresses in them, so on this cluster
        they stay empty; the selector over Ready pods is what the EndpointSlice controller would use.
        """
        views = []
        pods_by_ns: dict[str, list[Any]] = {}
        for svc in self.core.list_service_for_all_namespaces().items:
            ns, selector = svc.metadata.namespace, svc.spec.selector or {}
            endpoints: dict[int, tuple[str, int]] = {}
            if selector:
                if ns not in pods_by_ns:
                    pods_by_ns[ns] = sorted(self.core.list_namespaced_pod(ns).items, key=lambda p: p.metadata.name)
                backends = [
                    p for p in pods_by_ns[ns] if _ready(p) and selector.items() <= (p.metadata.labels or {}).items()
                ]
                for port in svc.spec.ports or []:
                    for pod in backends:
                        target = _target_port(pod, port.target_port if port.target_port is not None else port.port)
                        if target is not None:
                            endpoints[port.port] = (pod.status.pod_ip, target)
                            break
            views.append(ServiceView(svc.metadata.name, ns, svc.spec.cluster_ip, endpoints))
        return views

    def _control_plane_kubeconfig(self, pod: Mapping[str, Any]) -> Path:
        sa = pod["spec"].get("serviceAccountName") or "default"
        ns, name, uid = pod["metadata"]["namespace"], pod["metadata"]["name"], pod["metadata"]["uid"]
        req = k8s.AuthenticationV1TokenRequest(
            spec=k8s.V1TokenRequestSpec(
                audiences=["https://kubernetes.default.svc.cluster.local"],
                expiration_seconds=86400,
                bound_object_ref=k8s.V1BoundObjectReference(kind="Pod", api_version="v1", name=name, uid=uid),
            )
        )
        token = self.core.create_namespaced_service_account_token(sa, ns, req).status.token
        return write_kubeconfig(
            self.state_dir / "kubeconfigs" / ns / f"{name}.kubeconfig",
            server=self.server,
            ca=self.ca,
            user=f"system:serviceaccount:{ns}:{sa}",
            token=token,
            namespace=ns,
        )

    def _write_volume(self, namespace: str, vol: ConfigVolume, directory: Path) -> None:
        """Write a ConfigMap's or Secret's keys as files, as the kubelet's volume plugins do."""
        try:
            if vol.kind == "configMap":
                obj = self.core.read_namespaced_config_map(vol.source, namespace)
                files = {k: v.encode() for k, v in (obj.data or {}).items()}
                files |= {k: base64.b64decode(v) for k, v in (obj.binary_data or {}).items()}
            else:
                obj = self.core.read_namespaced_secret(vol.source, namespace)
                files = {k: base64.b64decode(v) for k, v in (obj.data or {}).items()}
        except ApiException as e:
            if e.status == 404 and vol.optional:
                files = {}
            elif e.status == 404:
                raise ServiceNotReady(f"volume {vol.volume}: {vol.kind} {namespace}/{vol.source} does not exist") from e
            else:
                raise
        wanted = dict(vol.items) if vol.items else {k: k for k in files}
        directory.mkdir(parents=True, exist_ok=True)
        for key, rel in wanted.items():
            if key not in files:
                raise PodSpecError(f"volume {vol.volume}: {vol.kind} {vol.source} has no key {key}")
            target = directory / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(files[key])
            target.chmod(0o600 if vol.kind == "secret" else 0o644)

    def _start(self, m: Managed, pod: Mapping[str, Any]) -> None:
        runtime = (pod["metadata"].get("annotations") or {}).get(ENGINE_RUNTIME_ANNOTATION, self.engine_runtime)
        # Each pod gets its own working directory, as a container has its own filesystem; never the
        # runner's (a checkout's `operator/` folder would shadow the standard library's module).
        workdir = self.state_dir / "work" / m.namespace / m.name
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            mounts = {}
            for vol in config_volumes(pod, pod["spec"]["containers"][0]):
                local = workdir / "volumes" / vol.volume
                self._write_volume(m.namespace, vol, local)
                mounts[vol.mount_path] = str(local)
            cmd = local_command(pod, runtime=runtime, runtimes=self.runtimes, services=self._services(), mounts=mounts)
        except ServiceNotReady as e:
            if m.waiting_reported != str(e):
                self._event(m, "WaitingForService", str(e))
                m.waiting_reported = str(e)
            m.next_start = time.monotonic() + 1.0
            return
        except PodSpecError as e:
            self._event(m, "RunnerUnsupported", str(e), warning=True)
            m.next_start = time.monotonic() + _MAX_BACKOFF_S
            return
        env = {**os.environ, **cmd.env}
        labels = pod["metadata"].get("labels") or {}
        if labels.get(CONTROL_PLANE_LABEL) == CONTROL_PLANE_VALUE:
            env["KUBECONFIG"] = str(self._control_plane_kubeconfig(pod))
        logfile = self.state_dir / "logs" / m.namespace / f"{m.name}.log"
        logfile.parent.mkdir(parents=True, exist_ok=True)
        with open(logfile, "ab") as out:
            m.proc = subprocess.Popen(
                cmd.argv,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        m.command, m.started_at, m.failures, m.next_probe = cmd, time.monotonic(), 0, time.monotonic()
        self._event(m, "Started", f"pid {m.proc.pid}: {' '.join(cmd.argv)[:800]} (log: {logfile})")

    def _stop_process(self, m: Managed, grace_s: float = 10.0) -> None:
        if m.proc is not None:
            procs.stop(m.proc.pid, grace_s=grace_s)
            with contextlib.suppress(subprocess.TimeoutExpired):
                m.proc.wait(timeout=1)
            m.proc = None

    def _tend(self, m: Managed, pod: Mapping[str, Any]) -> None:
        now = time.monotonic()
        if m.proc is None:
            if now >= m.next_start:
                self._start(m, pod)
            return
        code = m.proc.poll()
        if code is not None:
            m.proc = None
            m.restarts += 1
            backoff = min(_MAX_BACKOFF_S, 2.0 ** min(m.restarts, 6) / 4)
            m.next_start = now + backoff
            self._event(
                m,
                "ProcessExited",
                f"exit code {code}; restarting in {backoff:.1f}s (restart {m.restarts})",
                warning=code != 0,
            )
            self._set_ready(m, False, terminated=code)
            return
        if now < m.next_probe:
            return
        ok = m.probe.check(m.pod_ip)
        if ok and not m.ready:
            self._set_ready(m, True)
            self._event(m, "Ready", f"readiness probe passed after {now - m.started_at:.1f}s")
        elif not ok and m.ready:
            m.failures += 1
            if m.failures >= m.probe.failure_threshold:
                self._set_ready(m, False)
                self._event(m, "Unhealthy", "readiness probe failed", warning=True)
        elif ok:
            m.failures = 0
            self._resync_ready(m, pod, now)
        # Until first ready, probe often so start-up is noticed quickly; then at the pod's period.
        m.next_probe = now + (m.probe.period_s if m.ready else 0.2)

    def _resync_ready(self, m: Managed, pod: Mapping[str, Any], now: float) -> None:
        """Like a kubelet's status sync: if someone else (the node lifecycle controller) marked a pod whose
        probe passes as unready, say again that it is ready, at most every few seconds."""
        conds = (pod.get("status") or {}).get("conditions") or []
        if now < m.next_resync or any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
            return
        m.next_resync = now + 5.0
        self._set_ready(m, True)

    def reconcile_once(self) -> None:
        with self._lock:
            pods = dict(self.pods)
        wanted = {uid: p for uid, p in pods.items() if wants_process(p)}
        for uid in list(self.managed):
            if uid not in wanted:
                m = self.managed.pop(uid)
                pod = pods.get(uid)
                grace = float((pod or {}).get("spec", {}).get("terminationGracePeriodSeconds") or 10)
                self._stop_process(m, grace_s=min(grace, 30.0))
                if pod is not None:
                    self._event(m, "Stopped", "pod is terminating; process stopped")
        for uid, pod in wanted.items():
            m = self.managed.get(uid)
            if m is None:
                m = Managed(
                    uid,
                    pod["metadata"]["namespace"],
                    pod["metadata"]["name"],
                    pod["status"]["podIP"],
                    Probe.from_container(pod["spec"]["containers"][0]),
                )
                self.managed[uid] = m
            try:
                self._tend(m, pod)
            except Exception as e:  # one bad pod must not stop the others
                log.exception("tending %s/%s failed", m.namespace, m.name)
                m.next_start = time.monotonic() + 5.0
                self._event(m, "RunnerError", f"{type(e).__name__}: {e}", warning=True)

    def run(self) -> None:
        watcher = threading.Thread(target=self._watch_pods, name="pod-watch", daemon=True)
        watcher.start()
        try:
            while not self._stop.is_set():
                self._changed.wait(timeout=0.2)
                self._changed.clear()
                self.reconcile_once()
        finally:
            for m in self.managed.values():
                self._stop_process(m, grace_s=5.0)
            self.managed.clear()

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()


def spawn_runner(
    kubeconfig: Path, state: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`headway dev runner` as its own process, as a developer runs it (logs in `state`/runner.log); `args`:
    more of its options, e.g. `--engine-runtime stub`."""
    import sys

    argv = [sys.executable, "-m", "headway", "dev", "runner", "--kubeconfig", str(kubeconfig), "--state", str(state)]
    return procs.spawn([*argv, *args], state / "runner.log", env=env)
