"""The Helm chart on the local cluster: run helm against it, and install headway the way users do.

Shared by `make demo` and the chart tests, so both exercise the same install: the chart from
charts/headway, the pinned helm binary, and values suited to a laptop (no image pulls happen; the
runner starts each control-plane pod's command as a local process).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from headway.devenv.binaries import ensure_binaries
from headway.devenv.paths import REPO_ROOT

CHART = REPO_ROOT / "charts" / "headway"
RBAC_DIR = REPO_ROOT / "deploy" / "rbac"


class HelmError(RuntimeError):
    """helm exited non-zero; the message carries its stderr."""


def helm(*args: str, kubeconfig: Path | None = None, timeout_s: float = 600, check: bool = True) -> str:
    """Run the pinned helm; returns stdout. Helm's notes about the chart's symlinks are dropped from errors."""
    env = dict(os.environ)
    for kind in ("cache", "config", "data"):  # helm's own state stays in the checkout, not in $HOME
        env.setdefault(f"HELM_{kind.upper()}_HOME", str(REPO_ROOT / ".headway" / "helm" / kind))
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    proc = subprocess.run(
        [ensure_binaries(build=False).path("helm"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
        check=False,
    )
    if check and proc.returncode != 0:
        stderr = "\n".join(line for line in proc.stderr.splitlines() if "found symbolic link" not in line)
        raise HelmError(f"helm {' '.join(args[:2])} failed (exit {proc.returncode}): {stderr.strip()[-3000:]}")
    return proc.stdout


def autoscaler_profile() -> Path | None:
    """A capacity profile of the simulator's GPU types, as `headway profile` writes it (bench/profiles)."""
    return next(iter(sorted((REPO_ROOT / "bench" / "profiles").glob("*.json"))), None)


def autoscaler_available() -> bool:
    """Whether this checkout has what the chart's autoscaler needs: its command, its RBAC source and a
    capacity profile for the local engines."""
    if not (RBAC_DIR / "autoscaler.yaml").is_file() or autoscaler_profile() is None:
        return False
    proc = subprocess.run(
        [sys.executable, "-m", "headway", "autoscaler", "--help"], capture_output=True, timeout=120, check=False
    )
    return proc.returncode == 0


def local_values(*, autoscaler: bool, prometheus_url: str | None = None) -> dict[str, Any]:
    """Values for the local cluster: short resync and decision periods, so a minutes-long demo shows
    them at work, the autoscaler only when this checkout has it (with the simulator's profile), and no
    ModelRoute webhook (the e2e session runs the operator with one, reached at 127.0.0.1)."""
    values: dict[str, Any] = {
        # The API server calls a webhook behind a Service at one of its EndpointSlice addresses, and this
        # cluster's EndpointSlices stay empty (pod IPs are loopback addresses, which the API server refuses
        # in them): the chart's ModelRoute webhook would refuse every route write here, unreachable.
        "operator": {"resyncIntervalS": 15, "webhook": {"enabled": False}},
        "autoscaler": {"enabled": autoscaler, "intervalS": 5},
    }
    profile = autoscaler_profile()
    if autoscaler and profile is not None:
        values["autoscaler"]["profiles"] = profile.read_text()
    if prometheus_url:
        values["autoscaler"]["prometheusUrl"] = prometheus_url
    return values


def values_file(path: Path, values: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(values), sort_keys=False))
    return path


def template(release: str, namespace: str, values: Path | None = None, *extra: str) -> list[dict[str, Any]]:
    """The chart rendered offline, as parsed objects (CRDs included)."""
    args = ["template", release, str(CHART), "--namespace", namespace, "--include-crds", *extra]
    if values is not None:
        args += ["--values", str(values)]
    return [d for d in yaml.safe_load_all(helm(*args)) if d]


def install(
    kubeconfig: Path,
    release: str,
    namespace: str,
    values: Path,
    *extra: str,
    timeout_s: float = 300,
) -> str:
    """`helm upgrade --install --wait`: returns once every Deployment and StatefulSet is Ready."""
    return helm(
        "upgrade",
        "--install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--values",
        str(values),
        "--wait",
        "--timeout",
        f"{int(timeout_s)}s",
        *extra,
        kubeconfig=kubeconfig,
        timeout_s=timeout_s + 60,
    )


def rbac_rules(component: str) -> dict[str, list[dict[str, Any]]]:
    """The rules each Role/ClusterRole kind grants in deploy/rbac/<component>.yaml (the single source)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for doc in yaml.safe_load_all((RBAC_DIR / f"{component}.yaml").read_text()):
        if doc and doc.get("kind") in ("Role", "ClusterRole"):
            out.setdefault(doc["kind"], []).extend(doc.get("rules") or [])
    return out


def restricted_namespace(name: str) -> dict[str, Any]:
    """A namespace that enforces (and warns about) PodSecurity `restricted`, where the chart must install."""
    labels = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def component_objects(objects: Sequence[Mapping[str, Any]], component: str) -> list[Mapping[str, Any]]:
    return [
        o
        for o in objects
        if (o.get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/component") == component
    ]
