"""Turn a pod's first container into a local command line, as a kubelet plus kube-proxy plus DNS would.

Pure functions over plain dicts (the pod as the API returns it), so every translation is unit-tested:
- `$(VAR)` expansion in command, args and env, with kubelet semantics (`$$` escapes, unknown stays);
- downward-API env (`status.podIP`, `metadata.name`, …) and literal env values;
- Service host names and ClusterIPs followed by a port rewritten to a ready endpoint, since this
  cluster has no DNS and no kube-proxy;
- engine commands (`vllm serve …`) mapped to the chosen runtime, the simulator or real vLLM on CPU;
- a wildcard bind address replaced by the pod IP, so pods sharing a port do not collide on one host;
- paths under a ConfigMap or Secret volume's mountPath pointed at the files the runner wrote for it.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from headway.devenv.engines import VLLM_CPU_ENV

_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_FIELD_PATHS = {
    "status.podIP": lambda p: p["status"].get("podIP", ""),
    "status.hostIP": lambda p: p["status"].get("hostIP", ""),
    "metadata.name": lambda p: p["metadata"]["name"],
    "metadata.namespace": lambda p: p["metadata"]["namespace"],
    "metadata.uid": lambda p: p["metadata"].get("uid", ""),
    "spec.nodeName": lambda p: p["spec"].get("nodeName", ""),
    "spec.serviceAccountName": lambda p: p["spec"].get("serviceAccountName", "default"),
}
_VLLM_MODULE = "vllm.entrypoints.openai.api_server"
ENGINE_RUNTIMES = ("sim", "vllm", "stub")
_STUB_SERVER = """
import http.server, sys
a = sys.argv[1:]
def opt(name, default):
    return a[a.index(name) + 1] if name in a else default
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path in ("/health", "/ping") else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *_):
        pass
http.server.HTTPServer((opt("--host", "127.0.0.1"), int(opt("--port", "8000"))), Health).serve_forever()
"""


class PodSpecError(ValueError):
    """The pod asks for something the runner cannot provide; the message goes into a pod Event."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubelet's `$(VAR)` expansion: defined names are replaced, `$$` is a literal `$`, others stay."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _VAR.sub(sub, text)


def container_env(pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, str]:
    """The container's environment in declaration order, each value expanded against the ones before."""
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item:
            env[name] = expand(str(item.get("value") or ""), env)
            continue
        source = item.get("valueFrom") or {}
        ref = source.get("fieldRef")
        if ref:
            path = ref["fieldPath"]
            m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
            if m:
                env[name] = (pod["metadata"].get(m.group(1)) or {}).get(m.group(2), "")
            elif path in _FIELD_PATHS:
                env[name] = _FIELD_PATHS[path](pod)
            else:
                raise PodSpecError(f"env {name}: fieldPath {path} is not supported by the dev runner")
        elif source.get("resourceFieldRef"):
            env[name] = ""
        else:
            raise PodSpecError(f"env {name}: only literal values and fieldRef are supported by the dev runner")
    return env


@dataclass(frozen=True)
class ServiceView:
    """What the runner knows of one Service: its names, ClusterIP and a ready endpoint per port."""

    name: str
    namespace: str
    cluster_ip: str | None
    endpoints: Mapping[int, tuple[str, int]] = field(default_factory=dict)
    """service port → (endpoint IP, target port), for ports with at least one ready endpoint."""

    def hosts(self, from_namespace: str) -> list[str]:
        fq = [
            f"{self.name}.{self.namespace}",
            f"{self.name}.{self.namespace}.svc",
            f"{self.name}.{self.namespace}.svc.cluster.local",
        ]
        names = ([self.name] if from_namespace == self.namespace else []) + fq
        if self.cluster_ip and self.cluster_ip != "None":
            names.append(self.cluster_ip)
        return names


class ServiceNotReady(PodSpecError):
    """A Service named in the pod's command has no ready endpoint yet; the runner tries again later."""


def rewrite_service_refs(text: str, namespace: str, services: Sequence[ServiceView]) -> str:
    """Replace `<service host>:<port>` by `<endpoint ip>:<target port>`, as DNS plus kube-proxy would."""
    table: dict[str, ServiceView] = {}
    for svc in services:
        for host in svc.hosts(namespace):
            table[host] = svc
    if not table:
        return text
    hosts = "|".join(re.escape(h) for h in sorted(table, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w.-])({hosts}):(\d+)(?![\w.])")

    def sub(m: re.Match[str]) -> str:
        svc, port = table[m.group(1)], int(m.group(2))
        if port not in svc.endpoints:
            raise ServiceNotReady(f"service {svc.namespace}/{svc.name} has no ready endpoint for port {port}")
        ip, target = svc.endpoints[port]
        return f"{ip}:{target}"

    return pattern.sub(sub, text)


@dataclass(frozen=True)
class ConfigVolume:
    """A ConfigMap or Secret volume the container mounts: the runner writes its keys as files."""

    volume: str
    kind: str  # "configMap" | "secret"
    source: str
    mount_path: str
    items: tuple[tuple[str, str], ...] = ()
    """(key, relative path) pairs; empty: every key, each as a file named after it."""
    optional: bool = False


def config_volumes(pod: Mapping[str, Any], container: Mapping[str, Any]) -> list[ConfigVolume]:
    """The container's ConfigMap and Secret mounts; other volume kinds need nothing from the runner
    (an emptyDir is the process's own working directory)."""
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    out = []
    for mount in container.get("volumeMounts") or []:
        vol = volumes.get(mount["name"]) or {}
        for kind, name_key in (("configMap", "name"), ("secret", "secretName")):
            if kind in vol:
                src = vol[kind]
                if mount.get("subPath"):
                    raise PodSpecError(f"volume {mount['name']}: subPath mounts are not supported by the dev runner")
                items = tuple((i["key"], i["path"]) for i in src.get("items") or [])
                out.append(
                    ConfigVolume(
                        mount["name"], kind, src[name_key], mount["mountPath"], items, bool(src.get("optional"))
                    )
                )
    return out


def rewrite_mount_paths(text: str, mounts: Mapping[str, str]) -> str:
    """A path at or under a mountPath becomes the same path under the directory that stands in for it."""
    for mount_path, local in sorted(mounts.items(), key=lambda kv: len(kv[0]), reverse=True):
        base = mount_path.rstrip("/")
        replacement = local.rstrip("/")
        text = re.sub(rf"(?<![\w./-]){re.escape(base)}(?=/|$|[^\w.-])", lambda _, r=replacement: r, text)
    return text


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def bind_to_pod_ip(argv: list[str], pod_ip: str) -> list[str]:
    """Wildcard bind addresses become the pod IP: on one host, pods listening on all interfaces collide."""

    def rebind(value: str) -> str:
        if _is_wildcard(value):
            return pod_ip
        host, sep, port = value.rpartition(":")
        return f"{pod_ip}:{port}" if sep and port.isdigit() and _is_wildcard(host) else value

    out = []
    for arg in argv:
        flag, eq, value = arg.partition("=")
        out.append(f"{flag}={rebind(value)}" if eq and flag.startswith("--") else rebind(arg))
    return out


def _engine_args(argv: list[str]) -> list[str] | None:
    """The vLLM server arguments if argv starts vLLM's OpenAI server, else None."""
    if argv and argv[0].rsplit("/", 1)[-1] == "vllm" and len(argv) >= 2 and argv[1] == "serve":
        rest = argv[2:]
        if rest and not rest[0].startswith("-"):
            return ["--model", rest[0], *rest[1:]]
        return rest
    if len(argv) >= 3 and argv[0].rsplit("/", 1)[-1].startswith("python") and argv[1:3] == ["-m", _VLLM_MODULE]:
        return argv[3:]
    return None


def _has_flag(args: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)


@dataclass(frozen=True)
class EngineRuntimes:
    """How to start each engine runtime on this machine."""

    sim: Sequence[str] = (sys.executable, "-m", "headway", "sim")
    vllm: Sequence[str] = ("python3", "-m", _VLLM_MODULE)
    vllm_env: Mapping[str, str] = field(default_factory=lambda: {**VLLM_CPU_ENV, "VLLM_TARGET_DEVICE": "cpu"})
    stub: Sequence[str] = (sys.executable, "-S", "-c", _STUB_SERVER)
    """Answers /health only: for control-plane scale tests, where what an engine does is beside the point."""
    headway: Sequence[str] = (sys.executable, "-m", "headway")
    python: str = sys.executable
    """Control-plane images run headway's Python; locally that is the runner's own interpreter."""


@dataclass(frozen=True)
class LocalCommand:
    argv: list[str]
    env: dict[str, str]
    is_engine: bool


def local_command(
    pod: Mapping[str, Any],
    *,
    runtime: str,
    runtimes: EngineRuntimes,
    services: Sequence[ServiceView] = (),
    mounts: Mapping[str, str] | None = None,
) -> LocalCommand:
    """The command line and environment to run for the pod's first container. `mounts` maps each
    ConfigMap/Secret mountPath to the local directory holding its files."""
    spec = pod["spec"]
    containers = spec.get("containers") or []
    if not containers:
        raise PodSpecError("pod has no containers")
    container = containers[0]
    argv_raw = [*(container.get("command") or []), *(container.get("args") or [])]
    if not argv_raw:
        raise PodSpecError(f"container {container['name']}: no command (image entrypoints are not known locally)")
    namespace, pod_ip = pod["metadata"]["namespace"], pod["status"].get("podIP") or ""
    env = container_env(pod, container)
    mounts = mounts or {}
    env = {k: rewrite_mount_paths(rewrite_service_refs(v, namespace, services), mounts) for k, v in env.items()}
    argv = [rewrite_mount_paths(rewrite_service_refs(expand(a, env), namespace, services), mounts) for a in argv_raw]

    engine = _engine_args(argv)
    if engine is not None:
        if runtime not in ENGINE_RUNTIMES:
            raise PodSpecError(f"engine runtime {runtime!r} is not one of {', '.join(ENGINE_RUNTIMES)}")
        if not _has_flag(engine, "--host"):
            engine = [*engine, "--host", pod_ip]
        base = {"sim": runtimes.sim, "vllm": runtimes.vllm, "stub": runtimes.stub}[runtime]
        extra_env = dict(runtimes.vllm_env) if runtime == "vllm" else {}
        return LocalCommand(bind_to_pod_ip([*base, *engine], pod_ip), {**extra_env, **env}, True)
    if argv[0] == "headway":
        argv = [*runtimes.headway, *argv[1:]]
    elif argv[0] in ("python", "python3"):
        argv = [runtimes.python, *argv[1:]]
    return LocalCommand(bind_to_pod_ip(argv, pod_ip), env, False)
