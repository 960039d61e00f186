"""The local cluster schedules GPU pods like a real one, and the runner serves them on pod IPs."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import urllib.request
from pathlib import Path

from kubernetes import client as k8s

from headway.api import CONTROL_PLANE_LABEL, CONTROL_PLANE_VALUE, GPU_PRODUCT_LABEL
from headway.devenv import procs
from headway.devenv.binaries import ensure_binaries
from tests.conftest import eventually, run_cli
from tests.e2e.kube import deployment, event_reasons, is_ready, pods_of

HTTP_SERVER = ["python3", "-m", "http.server", "8000", "--bind", "$(POD_IP)"]
H100 = "NVIDIA-H100-80GB-HBM3"


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def test_gpu_pod_is_scheduled_on_its_product_and_served_on_its_ip(
    core: k8s.CoreV1Api, apps: k8s.AppsV1Api, runner: Path, namespace: str
) -> None:
    apps.create_namespaced_deployment(namespace, deployment("web", HTTP_SERVER, gpus=1, product=H100))
    pod = eventually(
        lambda: next((p for p in pods_of(core, namespace, "web") if is_ready(p)), None),
        timeout_s=60,
        what="web pod Ready (runner's readiness probe passed)",
    )

    node = core.read_node(pod.spec.node_name)
    assert node.metadata.labels[GPU_PRODUCT_LABEL] == H100
    ip = ipaddress.ip_address(pod.status.pod_ip)
    assert ip in ipaddress.ip_network("127.0.0.0/8") and not ip.is_unspecified
    assert ip in ipaddress.ip_network(node.spec.pod_cidr)
    assert pod.status.phase == "Running"
    assert _http_ok(f"http://{pod.status.pod_ip}:8000/")
    reasons = [r for r, _ in event_reasons(core, namespace, pod.metadata.name)]
    assert "Scheduled" in reasons and "Started" in reasons and "Ready" in reasons

    # Deleting the Deployment stops the process.
    apps.delete_namespaced_deployment("web", namespace)
    eventually(
        lambda: not _http_ok(f"http://{pod.status.pod_ip}:8000/"),
        timeout_s=30,
        what="process stopped after its pod was deleted",
    )


def test_pod_that_needs_more_gpus_than_a_node_has_stays_pending_unschedulable(
    core: k8s.CoreV1Api, apps: k8s.AppsV1Api, namespace: str
) -> None:
    apps.create_namespaced_deployment(namespace, deployment("big", HTTP_SERVER, gpus=9, product=H100))

    def unschedulable() -> k8s.V1PodCondition | None:
        for p in pods_of(core, namespace, "big"):
            c = next((c for c in p.status.conditions or [] if c.type == "PodScheduled"), None)
            if c and c.status == "False" and c.reason == "Unschedulable":
                return c
        return None

    cond = eventually(unschedulable, timeout_s=30, what="PodScheduled=False/Unschedulable")
    assert "nvidia.com/gpu" in cond.message
    pod = pods_of(core, namespace, "big")[0]
    assert pod.status.phase == "Pending" and not pod.spec.node_name


def test_process_exit_is_reported_in_a_pod_event_and_restarted(
    core: k8s.CoreV1Api, apps: k8s.AppsV1Api, runner: Path, namespace: str
) -> None:
    crash = ["python3", "-c", "import sys; print('bye'); sys.exit(3)"]
    apps.create_namespaced_deployment(namespace, deployment("crash", crash, probe_path=None))
    pod = eventually(lambda: next(iter(pods_of(core, namespace, "crash")), None), timeout_s=30, what="crash pod")

    def exits() -> list[str]:
        return [m for r, m in event_reasons(core, namespace, pod.metadata.name) if r == "ProcessExited"]

    msgs = eventually(lambda: (m := exits()) and len(m) >= 2 and m, timeout_s=30, what="two ProcessExited events")
    assert all("exit code 3" in m for m in msgs)
    fresh = core.read_namespaced_pod(pod.metadata.name, namespace)
    assert fresh.status.container_statuses[0].restart_count >= 1
    assert fresh.status.container_statuses[0].last_state.terminated.exit_code == 3


WHOAMI = """
import os, sys, time
from kubernetes import client, config
api = config.new_client_from_config(config_file=os.environ["KUBECONFIG"])
review = client.AuthenticationV1Api(api).create_self_subject_review({"apiVersion": "authentication.k8s.io/v1",
                                                                      "kind": "SelfSubjectReview"})
print("user", review.status.user_info.username, flush=True)
core = client.CoreV1Api(api)
print("pods", len(core.list_namespaced_pod(os.environ["NS"]).items) >= 1, flush=True)
try:
    core.list_namespaced_secret(os.environ["NS"])
    print("secrets allowed", flush=True)
except client.ApiException as e:
    print("secrets", e.status, flush=True)
time.sleep(3600)
"""


def test_control_plane_pod_runs_as_its_service_account(
    core: k8s.CoreV1Api, apps: k8s.AppsV1Api, cluster: object, runner: Path, namespace: str
) -> None:
    rbac = k8s.RbacAuthorizationV1Api(core.api_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    dep = deployment(
        "whoami",
        ["python3", "-c", WHOAMI],
        probe_path=None,
        service_account="reader",
        labels={CONTROL_PLANE_LABEL: CONTROL_PLANE_VALUE},
    )
    dep["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "NS", "value": namespace})
    apps.create_namespaced_deployment(namespace, dep)
    pod = eventually(lambda: next(iter(pods_of(core, namespace, "whoami")), None), timeout_s=30, what="pod")
    log = runner / "logs" / namespace / f"{pod.metadata.name}.log"
    text = eventually(
        lambda: log.exists() and "secrets" in log.read_text() and log.read_text(),
        timeout_s=60,
        what=f"whoami output in {log}",
    )
    assert f"user system:serviceaccount:{namespace}:reader" in text
    assert "pods True" in text
    assert "secrets 403" in text


def test_cli_cluster_up_lists_gpu_nodes_reports_status_and_down_leaves_nothing(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path)}
    up = run_cli("dev", "cluster", "up", "--name", "cli", env=env)
    assert up.returncode == 0, up.stderr
    kubeconfig = Path(up.stdout.strip().splitlines()[-1])
    assert kubeconfig.is_file()
    state = json.loads((kubeconfig.parent / "cluster.json").read_text())
    try:
        kubectl = ensure_binaries(build=False).path("kubectl")
        out = subprocess.run(
            [
                kubectl,
                "--kubeconfig",
                str(kubeconfig),
                "get",
                "nodes",
                "-L",
                GPU_PRODUCT_LABEL,
                "--no-headers",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        products = {line.split()[-1] for line in out.splitlines() if "NVIDIA" in line}
        assert len(products) >= 3, out
        status = run_cli("dev", "cluster", "status", "--name", "cli", env=env)
        assert status.returncode == 0, status.stdout + status.stderr
        for component in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"):
            assert component in status.stdout
    finally:
        down = run_cli("dev", "cluster", "down", "--name", "cli", env=env)
    assert down.returncode == 0, down.stderr
    assert not any(procs.alive(pid) for pid in state["pids"].values()), state["pids"]
    assert not kubeconfig.parent.exists()
    assert run_cli("dev", "cluster", "status", "--name", "cli", env=env).returncode == 1


CLIENT = """
import sys, time, urllib.request
url = sys.argv[1]
for _ in range(300):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            print("status", r.status, url, flush=True)
            break
    except OSError:
        time.sleep(0.2)
time.sleep(3600)
"""


def test_service_names_in_a_command_reach_a_ready_backend(
    core: k8s.CoreV1Api, apps: k8s.AppsV1Api, runner: Path, namespace: str
) -> None:
    apps.create_namespaced_deployment(namespace, deployment("backend", HTTP_SERVER))
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "backend"},
            "spec": {"selector": {"app": "backend"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]},
        },
    )
    backend = eventually(
        lambda: next((p for p in pods_of(core, namespace, "backend") if is_ready(p)), None),
        timeout_s=60,
        what="backend Ready",
    )
    apps.create_namespaced_deployment(
        namespace,
        deployment(
            "client", ["python3", "-c", CLIENT, f"http://backend.{namespace}.svc.cluster.local:80/"], probe_path=None
        ),
    )
    pod = eventually(lambda: next(iter(pods_of(core, namespace, "client")), None), timeout_s=30, what="client pod")
    log = runner / "logs" / namespace / f"{pod.metadata.name}.log"
    text = eventually(
        lambda: log.exists() and "status" in log.read_text() and log.read_text(),
        timeout_s=60,
        what="client reached the backend through the Service name",
    )
    assert f"status 200 http://{backend.status.pod_ip}:8000/" in text
