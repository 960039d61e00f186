"""Local cluster start-up time with cached binaries, and optionally a cold build of the binaries.

    headway bench cluster-startup [--runs 5] [--cold-build]

`--cold-build` builds every binary into an empty directory with an empty Go build cache (the module
download cache is kept), which is what a fresh machine pays once.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench._machine import write_result
from headway.devenv.binaries import TOOLS_DIR, ensure_binaries
from headway.devenv.cluster import LocalCluster
from headway.devenv.nodes import load_fleet


def cold_build_s() -> float:
    with tempfile.TemporaryDirectory() as bin_dir, tempfile.TemporaryDirectory() as go_cache:
        env = {**os.environ, "HEADWAY_BIN_DIR": bin_dir, "GOCACHE": go_cache}
        t0 = time.monotonic()
        subprocess.run(["bash", str(TOOLS_DIR / "build.sh")], env=env, check=True, stdout=subprocess.DEVNULL)
        return round(time.monotonic() - t0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cold-build", action="store_true")
    args = parser.parse_args()
    bins = ensure_binaries()
    ups, downs = [], []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as d:
            cluster = LocalCluster(Path(d) / "c")
            t0 = time.monotonic()
            cluster.up(binaries=bins)
            ups.append(round(time.monotonic() - t0, 2))
            t1 = time.monotonic()
            cluster.down()
            downs.append(round(time.monotonic() - t1, 2))
        print(f"run {i + 1}: up {ups[-1]}s, down {downs[-1]}s")
    payload = {
        "binaries": str(bins.dir),
        "nodes": sum(g.count for g in load_fleet().groups),
        "cluster_up_s": {"runs": ups, "median": statistics.median(ups), "max": max(ups)},
        "cluster_down_s": {"runs": downs, "median": statistics.median(downs)},
    }
    if args.cold_build:
        payload["cold_build_s"] = cold_build_s()
        print(f"cold build: {payload['cold_build_s']}s")
    print(write_result("cluster-startup", payload))


if __name__ == "__main__":
    main()
