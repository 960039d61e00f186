"""`headway profile --engine-url` sweeps a running engine (the simulator here) over HTTP into a profile."""

from __future__ import annotations

from pathlib import Path

from headway.autoscaler.capacity import load_profile
from headway.devenv import procs
from headway.devenv.engines import sim_argv
from headway.sim.profiles import PRESETS
from tests.conftest import run_cli
from tests.e2e.fleet import wait_http


def test_profile_of_a_running_engine_has_a_capacity_within_the_slo(tmp_path: Path) -> None:
    port = procs.free_port()
    argv = sim_argv(port, "--gpu-profile", "L4", "--time-scale", "4", "--log-level", "warning")
    pid = procs.spawn(argv, tmp_path / "engine.log", cwd=tmp_path).pid
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        out = tmp_path / "profile.json"
        # L4 steps take ≥ 65 ms / 4 ≈ 16 ms, so an ITL target of 5 ms can never be met: capacity 0
        for itl_s, want_capacity in (("0.2", True), ("0.005", False)):
            r = run_cli(
                "profile", "-o", str(out), "--engine-url", f"http://127.0.0.1:{port}", "--model", "tiny",
                "--gpus", "L4", "--inputs", "16", "--outputs", "8", "--requests-per-trial", "10",
                "--min-rps", "2", "--ttft-s", "1", "--itl-s", itl_s,
            )  # fmt: skip
            assert r.returncode == 0, r.stderr[-2000:]
            (gpu,) = load_profile(out).gpus
            (bucket,) = gpu.buckets
            assert gpu.gpu == "L4" and gpu.cost_per_hour_usd == PRESETS["L4"].cost_per_hour_usd
            assert (bucket.max_rps >= 2) is want_capacity, bucket
            assert all(p.itl_s > 0.005 for p in bucket.points)
    finally:
        procs.stop(pid)


def test_a_bad_engine_url_is_a_one_line_error(tmp_path: Path) -> None:
    r = run_cli("profile", "-o", str(tmp_path / "p.json"), "--engine-url", "localhost:1", "--gpus", "L4")
    assert r.returncode != 0 and "--engine-url" in r.stderr
