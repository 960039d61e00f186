"""The machine and command a benchmark ran on, recorded beside every result."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def describe_machine() -> dict[str, Any]:
    cpu, mem_kib = "", 0
    with contextlib.suppress(OSError):
        cpu = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            "",
        )
    with contextlib.suppress(OSError, IndexError, ValueError):
        mem_kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "os": platform.platform(),
        "python": sys.version.split()[0],
    }


def write_result(
    name: str, payload: dict[str, Any], *, benchmark: str | None = None, directory: Path = RESULTS
) -> Path:
    """Write `bench/results/<name>-<date>.json` with command and machine filled in (`benchmark`: the
    `headway bench` name when one benchmark writes several files)."""
    directory.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": benchmark or name,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(shlex.quote(a) for a in ["headway", "bench", benchmark or name, *sys.argv[1:]]),
        "machine": describe_machine(),
        **payload,
    }
    path = directory / f"{name}-{dt.date.today().isoformat()}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
