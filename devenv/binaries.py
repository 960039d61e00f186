"""Locate the local-cluster binaries, building them from the pinned Go module on first use.

The versions are pinned once, in hack/tools/go.mod; the build script puts the binaries in a cache
outside the repository so that every clone and every test run on this machine reuses them.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from headway.devenv.paths import REPO_ROOT, cache_dir

TOOLS_DIR = REPO_ROOT / "hack" / "tools"
_GIE_MOD = TOOLS_DIR / "gie" / "go.mod"
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
    "prometheus",
    "promtool",
)


class BinariesError(RuntimeError):
    """The cluster binaries could not be found or built."""


@dataclass(frozen=True)
class Binaries:
    dir: Path

    def path(self, name: str) -> str:
        return str(self.dir / name)

    @property
    def kwok_stages(self) -> Path:
        return self.dir / "kwok-stages"

    @property
    def gateway_crds(self) -> Path:
        """CRDs from the modules hack/tools/gie pins: the Inference Extension's InferencePool and the
        Gateway API's GatewayClass, Gateway and HTTPRoute."""
        return self.dir / _gateway_crds_dir()

    @property
    def inference_pool_crd(self) -> Path:
        return self.gateway_crds / "inference.networking.k8s.io_inferencepools.yaml"


def _gateway_crds_dir() -> str:
    text = _GIE_MOD.read_text()
    versions = []
    for module in ("sigs.k8s.io/gateway-api-inference-extension", "sigs.k8s.io/gateway-api"):
        m = re.search(rf"^require {re.escape(module)} (v\S+)", text, re.MULTILINE)
        if m is None:
            raise BinariesError(f"no {module} requirement in {_GIE_MOD}")
        versions.append(m.group(1))
    return f"gateway-crds-{versions[0]}-{versions[1]}"


def _complete(d: Path) -> bool:
    return (
        all((d / b).is_file() and os.access(d / b, os.X_OK) for b in BINARIES)
        and (d / "kwok-stages").is_dir()
        and (d / _gateway_crds_dir()).is_dir()
    )


def default_bin_dir() -> Path:
    """Where build.sh puts the binaries: HEADWAY_BIN_DIR, else the cache keyed by the pinned k8s version."""
    if os.environ.get("HEADWAY_BIN_DIR"):
        return Path(os.environ["HEADWAY_BIN_DIR"])
    m = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", (TOOLS_DIR / "go.mod").read_text(), re.MULTILINE)
    if m is None:
        raise BinariesError(f"no k8s.io/kubernetes requirement in {TOOLS_DIR / 'go.mod'}")
    return cache_dir() / "bin" / m.group(1)


def ensure_binaries(*, build: bool = True) -> Binaries:
    """Return the binary directory, building what is missing (minutes on a cold machine, instant after)."""
    d = default_bin_dir()
    if _complete(d):
        return Binaries(d)
    if not build:
        raise BinariesError(f"cluster binaries are not built in {d}; run `make cluster-binaries`")
    proc = subprocess.run(["bash", str(TOOLS_DIR / "build.sh")], stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise BinariesError(f"building the cluster binaries failed (exit {proc.returncode}); see output above")
    if not _complete(d):
        raise BinariesError(f"build finished but {d} lacks some of {', '.join(BINARIES)}")
    return Binaries(d)
