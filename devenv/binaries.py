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
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok", "helm")


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


def _complete(d: Path) -> bool:
    return all((d / b).is_file() and os.access(d / b, os.X_OK) for b in BINARIES) and (d / "kwok-stages").is_dir()


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
