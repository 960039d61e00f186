"""Latency the gateway adds, and the request rate it sustains, against a zero-latency backend, side by side
with vllm-router (PyPI, Rust) in the same run.

    headway bench gateway-overhead [--seconds 10] [--vllm-router PATH]

The backend answers every completion at once with a fixed body. wrk drives each target: 1 connection for
latency (p50/p99), 16 connections for the highest request rate. "added" is the target's p50 minus the
backend's own p50 measured in the same run. Non-streaming completions, a 40-token prompt.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench._machine import write_result
from headway.devenv import procs
from headway.devenv.tinymodel import tiny_model_dir

BACKEND = r"""
import sys
from aiohttp import web
BODY = b'{"id":"cmpl-0","object":"text_completion","created":0,"model":"tiny","choices":[{"index":0,"text":"ok","finish_reason":"length"}],"usage":{"prompt_tokens":40,"completion_tokens":1,"total_tokens":41}}'
METRICS = b'vllm:num_requests_waiting{engine="0",model_name="tiny"} 0.0\nvllm:num_requests_running{engine="0",model_name="tiny"} 0.0\nvllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.0\n'
async def completion(_): return web.Response(body=BODY, content_type="application/json")
async def metrics(_): return web.Response(body=METRICS, content_type="text/plain")
async def ok(_): return web.Response(text="ok")
async def models(_): return web.json_response({"object": "list", "data": [{"id": "tiny", "object": "model"}]})
app = web.Application()
app.router.add_post("/v1/completions", completion)
app.router.add_get("/metrics", metrics)
app.router.add_get("/health", ok)
app.router.add_get("/v1/models", models)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"tiny","prompt":"The gateway routes each request to the engine that holds its prefix, bounded by load.","max_tokens":1}'
"""


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def _wait(url: str, pid: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while not _up(url):
        if time.monotonic() > deadline or not procs.alive(pid):
            raise SystemExit(f"{url} did not come up: {log.read_text()[-2000:]}")
        time.sleep(0.2)


def _unit_s(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        raise ValueError(value)
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(2)]


def wrk(url: str, connections: int, seconds: int, script: Path) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), f"{url}/v1/completions"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "p50_ms": _unit_s(lat["50"]) * 1000,
        "p99_ms": _unit_s(lat["99"]) * 1000,
        "req_s": rps,
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--vllm-router", default=shutil.which("vllm-router"))
    args = parser.parse_args()
    if args.vllm_router:
        args.vllm_router = str(Path(args.vllm_router).resolve())
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk; `make bench` does it)")
    work = Path(tempfile.mkdtemp(prefix="headway-gw-overhead-"))
    script = work / "post.lua"
    script.write_text(LUA)
    started: list[int] = []

    def spawn(name: str, argv: list[str], health: str) -> str:
        log = work / f"{name}.log"
        pid = procs.spawn(argv, log, cwd=work).pid
        started.append(pid)
        _wait(health, pid, log)
        return health.rsplit("/", 1)[0]

    try:
        bport = procs.free_port()
        backend = spawn("backend", [sys.executable, "-c", BACKEND, str(bport)], f"http://127.0.0.1:{bport}/health")
        targets = {"backend (direct)": backend}
        for strategy, loop in (("round-robin", "uvloop"), ("kv-aware", "uvloop"), ("kv-aware", "asyncio")):
            port = procs.free_port()
            name = f"headway {strategy}" + (" (asyncio loop)" if loop == "asyncio" else "")
            argv = [
                sys.executable,
                "-m",
                "headway",
                "gateway",
                "--model",
                "tiny",
                "--tokenizer",
                str(tiny_model_dir()),
                "-e",
                backend,
                "--strategy",
                strategy,
                "--event-loop",
                loop,
                "--port",
                str(port),
            ]
            targets[name] = spawn(f"headway-{strategy}-{loop}", argv, f"http://127.0.0.1:{port}/healthz")
        if args.vllm_router:
            for policy in ("round_robin", "cache_aware"):
                port = procs.free_port()
                targets[f"vllm-router {policy}"] = spawn(
                    f"vllm-router-{policy}",
                    [
                        args.vllm_router,
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--worker-urls",
                        backend,
                        "--policy",
                        policy,
                        "--prometheus-port",
                        str(procs.free_port()),
                    ],
                    f"http://127.0.0.1:{port}/health",
                )
        time.sleep(1.0)
        results = {}
        for name, url in targets.items():
            one = wrk(url, 1, args.seconds, script)
            many = wrk(url, 16, args.seconds, script)
            results[name] = {
                "p50_ms": round(one["p50_ms"], 3),
                "p99_ms": round(one["p99_ms"], 3),
                "max_req_s": round(many["req_s"]),
                "non_2xx": int(one["non_2xx"] + many["non_2xx"]),
            }
            print(name, results[name])
        base = results["backend (direct)"]["p50_ms"]
        for r in results.values():
            r["added_p50_ms"] = round(r["p50_ms"] - base, 3)
        payload = {
            "seconds_per_point": args.seconds,
            "load_generator": "wrk -t1 (-c1 latency, -c16 throughput)",
            "versions": {"vllm-router": "0.1.17" if args.vllm_router else None},
            "targets": results,
        }
        print(write_result("gateway-overhead", payload))
    finally:
        for pid in reversed(started):
            procs.stop(pid)


if __name__ == "__main__":
    main()
