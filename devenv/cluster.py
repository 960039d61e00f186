"""A real Kubernetes control plane on 127.0.0.1, from locally built binaries, with kwok-managed GPU nodes.

etcd, kube-apiserver (RBAC, ServiceAccount tokens, PodSecurity admission), kube-controller-manager,
kube-scheduler and kwok run as detached processes; their ports, pids and logs live in one state
directory, so `up`, `status` and `down` may run in different processes. There is no kubelet,
kube-proxy or DNS: the engine runner (runner.py) plays the kubelet's part for the pods it serves.
"""

from __future__ import annotations

import json
import shutil
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from headway.devenv import procs
from headway.devenv.binaries import Binaries, ensure_binaries
from headway.devenv.kubeconfig import write_kubeconfig
from headway.devenv.nodes import KWOK_ANNOTATION_SELECTOR, NodeFleet, load_fleet
from headway.devenv.pki import Pki

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
SERVICE_CIDR = "10.96.0.0/16"
KWOK_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)
STATE_FILE = "cluster.json"


class ClusterError(RuntimeError):
    """The local cluster could not be started or is not running."""


@dataclass
class ClusterState:
    directory: str
    bin_dir: str
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    startup_s: float = 0.0
    node_count: int = 0

    @property
    def kubeconfig(self) -> Path:
        return Path(self.directory) / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['kube-apiserver']}"


@dataclass(frozen=True)
class ComponentHealth:
    name: str
    pid: int | None
    running: bool
    healthy: bool
    detail: str


def _noop(_: str) -> None:
    pass


class LocalCluster:
    """Owns one cluster's state directory. Construct it, then `up()`; or `attach()` to a running one."""

    def __init__(self, directory: Path, *, fleet: NodeFleet | None = None) -> None:
        self.dir = directory.resolve()
        self.fleet = fleet or load_fleet()
        self.state: ClusterState | None = None
        if (self.dir / STATE_FILE).exists():
            self.state = ClusterState(**json.loads((self.dir / STATE_FILE).read_text()))

    # ----- paths and clients
    @property
    def kubeconfig(self) -> Path:
        return self._require().kubeconfig

    @property
    def pki_dir(self) -> Path:
        return self.dir / "pki"

    def _require(self) -> ClusterState:
        if self.state is None:
            raise ClusterError(f"no cluster in {self.dir}; run `headway dev cluster up`")
        return self.state

    def api_client(self) -> k8s.ApiClient:
        return k8s_config.new_client_from_config(config_file=str(self.kubeconfig))

    def _save(self) -> None:
        assert self.state is not None
        (self.dir / STATE_FILE).write_text(json.dumps(asdict(self.state), indent=2))

    # ----- lifecycle
    def up(
        self,
        *,
        binaries: Binaries | None = None,
        on_progress: Callable[[str], None] = _noop,
        timeout_s: float = 120.0,
    ) -> Path:
        """Start every component and the node fleet; idempotent when the cluster is already healthy."""
        if self.state is not None:
            if all(h.healthy for h in self.status()):
                return self.kubeconfig
            on_progress("previous cluster in this directory is unhealthy; replacing it")
            self.down()
        t0 = time.monotonic()
        bins = binaries or ensure_binaries()
        self.dir.mkdir(parents=True, exist_ok=True)
        ports = {name: procs.free_port() for name in (*COMPONENTS, "etcd-peer")}
        self.state = ClusterState(directory=str(self.dir), bin_dir=str(bins.dir), ports=ports)
        self._save()
        try:
            on_progress("certificates")
            self._write_pki_and_kubeconfigs()
            on_progress("etcd")
            self._start("etcd", self._etcd_args(bins))
            self._wait_healthy("etcd", timeout_s)
            on_progress("kube-apiserver")
            self._start("kube-apiserver", self._apiserver_args(bins))
            self._wait_healthy("kube-apiserver", timeout_s)
            on_progress("kube-controller-manager, kube-scheduler, kwok")
            self._start("kube-controller-manager", self._controller_manager_args(bins))
            self._start("kube-scheduler", self._scheduler_args(bins))
            self._start("kwok", self._kwok_args(bins))
            for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
                self._wait_healthy(name, timeout_s)
            on_progress(f"{sum(g.count for g in self.fleet.groups)} nodes")
            self._create_nodes(timeout_s)
            on_progress("default service account")
            self._wait_default_service_account(timeout_s)
        except BaseException:
            self.down(keep_logs=True)
            raise
        self.state.startup_s = round(time.monotonic() - t0, 2)
        self._save()
        return self.kubeconfig

    def down(self, *, keep_logs: bool = False) -> None:
        """Stop every component (reverse order) and remove the state directory."""
        if self.state is not None:
            for name in reversed(COMPONENTS):
                pid = self.state.pids.get(name)
                if pid:
                    procs.stop(pid, grace_s=5.0)
        self.state = None
        if keep_logs:
            (self.dir / STATE_FILE).unlink(missing_ok=True)
            return
        shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self, name: str, *, down_s: float = 0.0, timeout_s: float = 60.0) -> float:
        """Stop one control-plane component, wait `down_s`, start it again with the same arguments and
        wait until it is healthy (a fault for tests and benchmarks). Returns the seconds until healthy."""
        if name not in COMPONENTS:
            raise ClusterError(f"no component {name!r}; one of {', '.join(COMPONENTS)}")
        st = self._require()
        bins = Binaries(Path(st.bin_dir))
        args = {
            "etcd": self._etcd_args,
            "kube-apiserver": self._apiserver_args,
            "kube-controller-manager": self._controller_manager_args,
            "kube-scheduler": self._scheduler_args,
            "kwok": self._kwok_args,
        }[name](bins)
        t0 = time.monotonic()
        procs.stop(st.pids[name], grace_s=10.0)
        time.sleep(down_s)
        self._start(name, args)
        self._wait_healthy(name, timeout_s)
        return time.monotonic() - t0

    def status(self) -> list[ComponentHealth]:
        st = self._require()
        out = []
        for name in COMPONENTS:
            pid = st.pids.get(name)
            running = bool(pid) and procs.alive(pid or 0)
            healthy, detail = self._probe(name) if running else (False, "not running")
            out.append(ComponentHealth(name, pid, running, healthy, detail))
        return out

    # ----- set-up steps
    def _write_pki_and_kubeconfigs(self) -> None:
        st = self._require()
        pki = Pki(self.pki_dir)
        pki.issue(
            "apiserver",
            "kube-apiserver",
            dns=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=("127.0.0.1", "10.96.0.1"),
        )
        for component in ("controller-manager", "scheduler"):
            pki.issue(f"{component}-serving", f"kube-{component}", dns=("localhost",), ips=("127.0.0.1",))
        pki.service_account_keys()
        users = {
            "admin": ("headway-admin", "system:masters"),
            "controller-manager": ("system:kube-controller-manager", None),
            "scheduler": ("system:kube-scheduler", None),
            "kwok": ("kwok-controller", "system:masters"),
        }
        for stem, (cn, org) in users.items():
            pair = pki.issue(stem, cn, org=org, client=True)
            path = st.kubeconfig if stem == "admin" else self.dir / f"{stem}.kubeconfig"
            write_kubeconfig(path, server=st.server, ca=pki.ca.cert, user=cn, cert=pair.cert, key=pair.key)

    def _start(self, name: str, argv: list[str]) -> None:
        st = self._require()
        proc = procs.spawn(argv, self.dir / "logs" / f"{name}.log", cwd=self.dir)
        st.pids[name] = proc.pid
        self._save()

    def _etcd_args(self, bins: Binaries) -> list[str]:
        p = self._require().ports
        client, peer = f"http://127.0.0.1:{p['etcd']}", f"http://127.0.0.1:{p['etcd-peer']}"
        return [
            bins.path("etcd"),
            "--name=headway-dev",
            f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=headway-dev={peer}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
            "--quota-backend-bytes=4294967296",
        ]

    def _apiserver_args(self, bins: Binaries) -> list[str]:
        p, pki = self._require().ports, self.pki_dir
        return [
            bins.path("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={p['kube-apiserver']}",
            f"--cert-dir={self.dir / 'apiserver-certs'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction,ExtendedResourceToleration",
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--profiling=false",
            "--event-ttl=1h",
            "-v=1",
        ]

    def _controller_manager_args(self, bins: Binaries) -> list[str]:
        p, kc = self._require().ports, str(self.dir / "controller-manager.kubeconfig")
        return [
            bins.path("kube-controller-manager"),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={p['kube-controller-manager']}",
            f"--tls-cert-file={self.pki_dir / 'controller-manager-serving.crt'}",
            f"--tls-private-key-file={self.pki_dir / 'controller-manager-serving.key'}",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--root-ca-file={self.pki_dir / 'ca.crt'}",
            f"--service-account-private-key-file={self.pki_dir / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
            "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10",
            "--kube-api-qps=100",
            "--kube-api-burst=200",
            "-v=1",
        ]

    def _scheduler_args(self, bins: Binaries) -> list[str]:
        p, kc = self._require().ports, str(self.dir / "scheduler.kubeconfig")
        return [
            bins.path("kube-scheduler"),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={p['kube-scheduler']}",
            f"--tls-cert-file={self.pki_dir / 'scheduler-serving.crt'}",
            f"--tls-private-key-file={self.pki_dir / 'scheduler-serving.key'}",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
            "--leader-elect=false",
            "-v=1",
        ]

    def _kwok_args(self, bins: Binaries) -> list[str]:
        p = self._require().ports
        stages = [yaml.safe_load((bins.kwok_stages / s).read_text()) for s in KWOK_STAGES]
        for stage in stages:
            if stage["metadata"]["name"] == "pod-ready":
                stage["spec"]["next"]["statusTemplate"] = _unready_until_probed(stage["spec"]["next"]["statusTemplate"])
        config = self.dir / "kwok.yaml"
        config.write_text(yaml.safe_dump_all(stages, sort_keys=False))
        return [
            bins.path("kwok"),
            f"--kubeconfig={self.dir / 'kwok.kubeconfig'}",
            f"--config={config}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION_SELECTOR}",
            f"--server-address=127.0.0.1:{p['kwok']}",
            # Node liveness through Leases, as kubelets do; without them the node lifecycle controller
            # declares the nodes NotReady after its grace period and marks every pod on them unready.
            "--node-lease-duration-seconds=40",
            "--node-ip=127.0.0.1",
            f"--cidr=127.{self.fleet.pod_cidr_octet}.255.0/24",
        ]

    def _create_nodes(self, timeout_s: float) -> None:
        api = k8s.CoreV1Api(self.api_client())
        manifests = self.fleet.manifests()
        for node in manifests:
            try:
                api.create_node(node)
            except ApiException as e:
                if e.status != 409:
                    raise
        want = {n["metadata"]["name"] for n in manifests}

        def ready() -> bool:
            nodes = api.list_node(label_selector="type=kwok").items
            return want <= {
                n.metadata.name
                for n in nodes
                if any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))
            }

        _poll(ready, timeout_s, f"{len(want)} kwok nodes Ready")
        st = self._require()
        st.node_count = len(want)
        self._save()

    def _wait_default_service_account(self, timeout_s: float) -> None:
        api = k8s.CoreV1Api(self.api_client())

        def exists() -> bool:
            try:
                api.read_namespaced_service_account("default", "default")
                return True
            except ApiException as e:
                if e.status == 404:
                    return False
                raise

        _poll(exists, timeout_s, "ServiceAccount default/default")

    # ----- health
    def _probe(self, name: str) -> tuple[bool, str]:
        p = self._require().ports
        urls = {
            "etcd": f"http://127.0.0.1:{p['etcd']}/health",
            "kube-apiserver": f"https://127.0.0.1:{p['kube-apiserver']}/readyz",
            "kube-controller-manager": f"https://127.0.0.1:{p['kube-controller-manager']}/healthz",
            "kube-scheduler": f"https://127.0.0.1:{p['kube-scheduler']}/healthz",
            "kwok": f"http://127.0.0.1:{p['kwok']}/healthz",
        }
        ctx = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        if name == "kube-apiserver":
            ctx.load_cert_chain(str(self.pki_dir / "admin.crt"), str(self.pki_dir / "admin.key"))
        try:
            with urllib.request.urlopen(urls[name], timeout=2, context=ctx) as r:
                body = r.read(200).decode(errors="replace").strip()
                return r.status == 200, f"{urls[name]} → {r.status} {body[:60]}"
        except (urllib.error.URLError, OSError) as e:
            return False, f"{urls[name]} → {e}"

    def _wait_healthy(self, name: str, timeout_s: float) -> None:
        st = self._require()

        def ok() -> bool:
            if not procs.alive(st.pids[name]):
                log = self.dir / "logs" / f"{name}.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise ClusterError(f"{name} exited during start-up; last log lines:\n{tail}")
            return self._probe(name)[0]

        _poll(ok, timeout_s, f"{name} healthy")


def _unready_until_probed(template: str) -> str:
    """kwok marks every pod Ready at once; a kubelet waits for the readiness probe. Pods with a probe
    start unready here, and the runner sets Ready when its probe of the real process passes."""
    ready = '{{ $ready := "True" }}{{ range .spec.containers }}{{ if .readinessProbe }}'
    ready += '{{ $ready = "False" }}{{ end }}{{ end }}\n'
    unready = "{{ $ready | Quote }}"
    probed = "{{ if .readinessProbe }}false{{ else }}true{{ end }}"
    replacements = {
        '  status: "True"\n  type: Ready\n': f"  status: {unready}\n  type: Ready\n",
        '  status: "True"\n  type: ContainersReady\n': f"  status: {unready}\n  type: ContainersReady\n",
        "  name: {{ .name | Quote }}\n  ready: true\n": "  name: {{ .name | Quote }}\n  ready: " + probed + "\n",
    }
    text = template
    for old, new in replacements.items():
        if old not in text:
            raise ClusterError(f"kwok pod-ready stage changed; cannot find {old!r}")
        text = text.replace(old, new, 1)
    return ready + text


def _poll(check: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval_s)
    raise ClusterError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def read_events(api: k8s.CoreV1Api, namespace: str, name: str) -> list[Any]:
    """Events about one object, oldest first (tests and status use them to explain outcomes)."""
    evs = api.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return sorted(evs, key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)
