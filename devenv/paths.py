"""Where the development environment keeps things outside the repository."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The source checkout (devenv is only used from an editable install)."""


def cache_dir() -> Path:
    """Per-machine cache (built binaries), shared by every clone on this machine."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "headway"


def state_dir() -> Path:
    """Per-machine state of long-running dev processes (clusters, services)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "headway"
