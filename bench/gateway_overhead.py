"""Latency the gateway adds, the request rate it sustains, and the CPU it spends per request, against a
zero-latency backend, side by side with vllm-router (PyPI, Rust) in the same run.

    headway bench gateway-overhead [--seconds 6] [--vllm-router PATH] [--headway-workers N] [--no-envoy]

Two kinds of response, each measured on every target:
- non-streaming: a 1-token completion, so the fixed per-request cost (parse, route, connect, relay) shows;
- streamed: `"stream": true`, answered with 256 SSE completion events and `data: [DONE]`, each its own write,
  so the relay's per-chunk cost shows.

The backend (bench/_zero_backend.py) answers at once, from several processes sharing one port. wrk drives
each target: 1 connection for latency (p50/p99 of the whole response), `--connections` connections for the
highest request rate. "added" is the target's percentile minus the backend's own, measured in the same run.
CPU per 1,000 requests is the user+system time of the target's process group (its workers included) over the
throughput point, from /proc, divided by the requests wrk completed. wrk, the backend and the router under
test share the machine's cores, so the figures compare targets within one run, not across machines.

Behind a Gateway (unless --no-envoy): Envoy alone, and Envoy asking headway's Endpoint Picker over ext_proc
(gateway/epp.py), with response bodies kept in Envoy or sent through the EPP; their cost is Envoy's and
the EPP's process groups together.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._machine import write_result
from headway.devenv import procs
from headway.devenv.engines import gateway_argv
from headway.devenv.envoy import EnvoyProcess, bootstrap

_PROMPT = "The gateway routes each request to the engine that holds its prefix, bounded by load."
_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{{"model":"tiny","prompt":"{prompt}","max_tokens":{max_tokens}{stream}}}'
"""
_BACKEND = Path(__file__).with_name("_zero_backend.py")
_CLK_TCK_HZ = os.sysconf("SC_CLK_TCK")
_BACKEND_NAME = "backend (direct)"
_RATIO_NUMERATOR, _RATIO_DENOMINATOR = "headway kv-aware", "vllm-router round_robin"
_RATIO_GOAL = 0.5
_EPP_NUMERATOR = "envoy + headway EPP kv-aware"


@dataclass(frozen=True)
class Kind:
    """A response kind: the request wrk sends and the JSON key its results go under (None: the target's top
    level, where the non-streaming fields have always been)."""

    name: str
    key: str | None
    stream: bool


KINDS = (Kind("non-streaming", None, stream=False), Kind("streamed", "streamed", stream=True))


@dataclass(frozen=True)
class Target:
    """Something wrk can load: its base URL and the process groups whose CPU time is its cost (Envoy and
    the Endpoint Picker together, for the Gateway setup)."""

    name: str
    url: str
    pgids: tuple[int, ...]

    def cpu_s(self) -> float:
        return sum(group_cpu_s(g) for g in self.pgids)


@dataclass(frozen=True)
class WrkPoint:
    """One wrk run, as wrk reports it, plus the CPU wrk itself spent (to tell a load-generator bound point)."""

    p50_ms: float
    p99_ms: float
    req_s: float
    requests: int
    non_2xx: int
    socket_errors: int
    wrk_cpu_s: float


def lua_script(kind: Kind, stream_chunks: int) -> str:
    """The wrk script for one kind; a streamed request asks for as many tokens as the backend sends events."""
    return _LUA.format(
        prompt=_PROMPT,
        max_tokens=stream_chunks if kind.stream else 1,
        stream=',"stream":true' if kind.stream else "",
    )


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def _wait(url: str, pid: int, log: Path, ready_line: str | None = None) -> None:
    """Until `url` answers 200 (and, when given, `ready_line` is in the log: a multi-process server is only
    ready when every process listens, which one health answer cannot show)."""
    deadline = time.monotonic() + 60
    while not _up(url) or (ready_line is not None and ready_line not in log.read_text(errors="replace")):
        if time.monotonic() > deadline or not procs.alive(pid):
            raise SystemExit(f"{url} did not come up: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)


def _unit_s(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        raise ValueError(value)
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(2)]


def wrk(url: str, connections: int, seconds: int, script: Path) -> WrkPoint:
    """Run wrk for `seconds`; wrk counts a request when its whole response (every chunk) has arrived."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(script),
            f"{url}/v1/completions",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if run.returncode != 0:
        raise SystemExit(f"wrk against {url} failed ({run.returncode}): {run.stdout[-1000:]}{run.stderr[-1000:]}")
    out = run.stdout
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkPoint(
        p50_ms=_unit_s(lat["50"]) * 1000 if "50" in lat else float("nan"),
        p99_ms=_unit_s(lat["99"]) * 1000 if "99" in lat else float("nan"),
        req_s=rps,
        requests=done,
        non_2xx=int(errors.group(1)) if errors else 0,
        socket_errors=sum(int(g) for g in sock.groups()) if sock else 0,
        wrk_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
    )


def group_cpu_s(pgid: int) -> float:
    """User+system CPU seconds of a process group: every live member, plus the children its leader has
    already reaped (a worker that exited still cost what it cost)."""
    total_ticks = 0
    for pid in procs.group_members(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command name: state is field 3, utime/stime are 14/15, cutime/cstime 16/17 (1-based).
        total_ticks += int(fields[11]) + int(fields[12])
        if pid == pgid:
            total_ticks += int(fields[13]) + int(fields[14])
    return total_ticks / _CLK_TCK_HZ


def machine_busy_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat, to tell a saturated machine apart."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values[:8]) - idle, sum(values[:8])


def check_answers(url: str, stream_chunks: int) -> str | None:
    """One request of each kind through `url`; None when both answers are what the backend sent, else what
    was wrong. A router that dropped, merged or truncated events would otherwise only look fast."""
    body = f'{{"model":"tiny","prompt":"{_PROMPT}","max_tokens":{stream_chunks},"stream":true}}'.encode()
    req = urllib.request.Request(
        f"{url}/v1/completions", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
        events = [e for e in raw.split(b"\n\n") if e.strip()]
        if len(events) != stream_chunks + 1 or events[-1].strip() != b"data: [DONE]":
            return f"streamed: {len(events)} events (want {stream_chunks} + [DONE]), ends {raw[-40:]!r}"
        plain = urllib.request.Request(
            f"{url}/v1/completions",
            data=f'{{"model":"tiny","prompt":"{_PROMPT}","max_tokens":1}}'.encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(plain, timeout=10) as r:
            if b'"text_completion"' not in r.read():
                return "non-streaming: not a completion"
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    return None


def settle(url: str, stream_chunks: int, *, timeout_s: float = 15.0) -> float:
    """Seconds until `url` answers both kinds correctly again (at most about `timeout_s`, after which the
    point goes ahead and the wait says so). wrk ends every run by closing its connections mid-response; how a
    target takes that (setting its engine aside for a while, say) is worth recording, but must not be charged
    to the next point."""
    t0 = time.monotonic()
    while (problem := check_answers(url, stream_chunks)) is not None:
        if time.monotonic() - t0 > timeout_s:
            print(f"{url}: still answering wrongly {timeout_s:.0f}s after a wrk run: {problem}", file=sys.stderr)
            break
        time.sleep(0.1)
    return time.monotonic() - t0


def measure(
    target: Target, backend: Target, script: Path, *, seconds: int, connections: int, stream_chunks: int
) -> dict[str, Any]:
    """A latency point (1 connection) and a throughput point (`connections`), after a 1 s warm-up whose
    numbers are dropped. CPU is read around the throughput point only; `cores_used` says who had the cores
    then, which tells a saturated target from a saturated backend or load generator."""
    wrk(target.url, connections, 1, script)
    settled_s = [settle(target.url, stream_chunks)]
    one = wrk(target.url, 1, seconds, script)
    settled_s.append(settle(target.url, stream_chunks))
    cpu0, bcpu0, (busy0, all0) = target.cpu_s(), backend.cpu_s(), machine_busy_ticks()
    t0 = time.monotonic()
    many = wrk(target.url, connections, seconds, script)
    wall_s = time.monotonic() - t0
    cpu1, bcpu1, (busy1, all1) = target.cpu_s(), backend.cpu_s(), machine_busy_ticks()
    settled_s.append(settle(target.url, stream_chunks))
    per_1000 = 1000 / max(many.requests, 1)
    return {
        "p50_ms": round(one.p50_ms, 3),
        "p99_ms": round(one.p99_ms, 3),
        "max_req_s": round(many.req_s),
        "non_2xx": one.non_2xx + many.non_2xx,
        "socket_errors": one.socket_errors + many.socket_errors,
        "throughput_requests": many.requests,
        "cpu_s_per_1000_req": round((cpu1 - cpu0) * per_1000, 4),
        "backend_cpu_s_per_1000_req": round((bcpu1 - bcpu0) * per_1000, 4),
        "cores_used": {
            "target": round((cpu1 - cpu0) / wall_s, 2),
            "backend": round((bcpu1 - bcpu0) / wall_s, 2),
            "wrk": round(many.wrk_cpu_s / wall_s, 2),
            "machine": round((busy1 - busy0) / max(all1 - all0, 1) * (os.cpu_count() or 1), 2),
        },
        "first_answer_after_wrk_s": round(max(settled_s), 3),
    }


def _gateway_targets(work: Path, backend: Target, spawn: Callable[..., Target], started: list[int]) -> list[Target]:
    """Envoy alone (its own balancing over the backend), and Envoy asking headway's Endpoint Picker
    (kv-aware) for every request over ext_proc, as a Gateway API Inference Extension Gateway does:
    response bodies not sent to the EPP (the GIE reference's ORIGINAL_DST setup), and sent to it (the
    EPP relays them and counts generated tokens). The Envoy + EPP targets cost both process groups."""
    backend_ep = backend.url.removeprefix("http://")
    port, metrics_port = procs.free_port(), procs.free_port()
    argv = [
        *_headway_gateway_argv(backend.url, "kv-aware", "uvloop", port),
        "--mode",
        "epp",
        "--metrics-port",
        str(metrics_port),
    ]
    epp = spawn("headway EPP", argv, f"http://127.0.0.1:{metrics_port}/healthz")
    out = []
    for name, kw in (
        ("envoy (no EPP)", {"epp_port": None, "upstream": "override_host", "endpoints": [backend_ep]}),
        ("envoy + headway EPP kv-aware", {"epp_port": port}),
        ("envoy + headway EPP kv-aware, bodies via EPP", {"epp_port": port, "response_body": True}),
    ):
        cfg = bootstrap(listen_port=procs.free_port(), admin_port=procs.free_port(), **kw)  # type: ignore[arg-type]
        env = EnvoyProcess(work, cfg, name=name.replace(" ", "-").replace(",", "")).start()
        started.append(env.pid)
        out.append(Target(name, env.url, (env.pid, epp.pgids[0]) if kw["epp_port"] else (env.pid,)))
    return out


def _headway_gateway_argv(backend_url: str, strategy: str, loop: str, port: int) -> list[str]:
    return gateway_argv(port, [backend_url], "--strategy", strategy, "--event-loop", loop)


def _version(argv: list[str]) -> str | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def print_table(results: dict[str, dict[str, Any]], ratios: dict[str, float | None]) -> None:
    print(f"\n{'target':46} {'kind':14} {'add p50':>8} {'add p99':>8} {'max req/s':>10} {'CPU-s/1k':>9} {'non2xx':>6}")
    for name, r in results.items():
        for kind in KINDS:
            k = r if kind.key is None else r[kind.key]
            print(
                f"{name:46} {kind.name:14} {k['added_p50_ms']:8.3f} {k['added_p99_ms']:8.3f} "
                f"{k['max_req_s']:10} {k['cpu_s_per_1000_req']:9.3f} {k['non_2xx']:6}"
            )
    for kind_name, ratio in ratios.items():
        print(f"{_RATIO_NUMERATOR} / {_RATIO_DENOMINATOR} max req/s, {kind_name}: {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=6, help="Length of each latency and throughput point.")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections for the throughput point.")
    parser.add_argument("--vllm-router", default=shutil.which("vllm-router"))
    parser.add_argument("--backend-processes", type=int, default=2, help="Backend processes sharing its port.")
    parser.add_argument("--stream-chunks", type=int, default=256, help="SSE events per streamed response.")
    parser.add_argument(
        "--headway-workers", type=int, default=None, help="Passed to `headway gateway --workers` (only when given)."
    )
    parser.add_argument(
        "--no-envoy", action="store_true", help="Skip Envoy alone and Envoy + headway's Endpoint Picker."
    )
    parser.add_argument(
        "--asyncio-loop", action="store_true", help="Also measure headway kv-aware on the asyncio event loop."
    )
    args = parser.parse_args()
    if args.vllm_router:
        args.vllm_router = str(Path(args.vllm_router).resolve())
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk; `make bench` does it)")
    work = Path(tempfile.mkdtemp(prefix="headway-gw-overhead-"))
    scripts = {}
    for kind in KINDS:
        scripts[kind.name] = work / f"{kind.name}.lua"
        scripts[kind.name].write_text(lua_script(kind, args.stream_chunks))
    started: list[int] = []

    def spawn(name: str, argv: list[str], health: str, ready_line: str | None = None) -> Target:
        log = work / f"{name}.log"
        pid = procs.spawn(argv, log, cwd=work).pid
        started.append(pid)
        _wait(health, pid, log, ready_line)
        return Target(name, health.rsplit("/", 1)[0], (pid,))

    try:
        bport = procs.free_port()
        backend = spawn(
            _BACKEND_NAME,
            [
                sys.executable,
                str(_BACKEND),
                str(bport),
                "--processes",
                str(args.backend_processes),
                "--stream-chunks",
                str(args.stream_chunks),
            ],
            f"http://127.0.0.1:{bport}/health",
            ready_line=f"ready {args.backend_processes}",
        )
        targets = [backend]
        headway_runs = [("kv-aware", "uvloop"), ("round-robin", "uvloop")]
        if args.asyncio_loop:
            headway_runs.append(("kv-aware", "asyncio"))
        for strategy, loop in headway_runs:
            port = procs.free_port()
            name = f"headway {strategy}" + (" (asyncio loop)" if loop == "asyncio" else "")
            argv = _headway_gateway_argv(backend.url, strategy, loop, port)
            if args.headway_workers is not None:
                argv += ["--workers", str(args.headway_workers)]
            targets.append(spawn(name, argv, f"http://127.0.0.1:{port}/healthz"))
        if args.vllm_router:
            for policy in ("round_robin", "cache_aware"):
                port = procs.free_port()
                argv = [
                    args.vllm_router,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--worker-urls",
                    backend.url,
                    "--policy",
                    policy,
                    "--prometheus-port",
                    str(procs.free_port()),
                ]
                targets.append(spawn(f"vllm-router {policy}", argv, f"http://127.0.0.1:{port}/health"))
        if not args.no_envoy:
            targets += _gateway_targets(work, backend, spawn, started)
        time.sleep(1.0)
        problems = {t.name: p for t in targets if (p := check_answers(t.url, args.stream_chunks))}
        results: dict[str, dict[str, Any]] = {}
        for target in targets:
            results[target.name] = {}
            for kind in KINDS:
                point = measure(
                    target,
                    backend,
                    scripts[kind.name],
                    seconds=args.seconds,
                    connections=args.connections,
                    stream_chunks=args.stream_chunks,
                )
                if kind.key is None:
                    results[target.name].update(point)
                else:
                    results[target.name][kind.key] = point
                print(target.name, kind.name, point, flush=True)
        base = results[_BACKEND_NAME]
        for r in results.values():
            for kind in KINDS:
                k, b = (r, base) if kind.key is None else (r[kind.key], base[kind.key])
                k["added_p50_ms"] = round(k["p50_ms"] - b["p50_ms"], 3)
                k["added_p99_ms"] = round(k["p99_ms"] - b["p99_ms"], 3)
        ratios: dict[str, float | None] = {}
        for kind in KINDS:
            if _RATIO_NUMERATOR in results and _RATIO_DENOMINATOR in results:
                num, den = results[_RATIO_NUMERATOR], results[_RATIO_DENOMINATOR]
                if kind.key is not None:
                    num, den = num[kind.key], den[kind.key]
                ratios[kind.name] = round(num["max_req_s"] / max(den["max_req_s"], 1), 3)
            else:
                ratios[kind.name] = None
        epp_ratios: dict[str, float | None] = {}
        for kind in KINDS:
            num_t, den_t = results.get(_EPP_NUMERATOR), results.get(_RATIO_DENOMINATOR)
            if num_t is None or den_t is None:
                epp_ratios[kind.name] = None
                continue
            if kind.key is not None:
                num_t, den_t = num_t[kind.key], den_t[kind.key]
            epp_ratios[kind.name] = round(num_t["max_req_s"] / max(den_t["max_req_s"], 1), 3)
        vllm_router_python = Path(args.vllm_router).parent / "python" if args.vllm_router else None
        payload = {
            "invocation": {"cwd": os.getcwd(), "argv": shlex.join(sys.orig_argv)},
            "seconds_per_point": args.seconds,
            "load_generator": f"wrk -t1 (-c1 latency, -c{args.connections} throughput, 1 s warm-up dropped)",
            "shared_cores": (
                f"wrk, the {args.backend_processes} backend processes and the target share this machine's "
                f"{os.cpu_count()} cores; compare targets within this run only"
            ),
            "backend": {
                "implementation": "bench/_zero_backend.py: asyncio protocol on uvloop, SO_REUSEPORT",
                "processes": args.backend_processes,
                "stream_events": args.stream_chunks,
            },
            "kinds": {
                "non-streaming": "1-token completion; fields at each target's top level",
                "streamed": f"stream=true, {args.stream_chunks} SSE completion events + [DONE], one write each; "
                "under the target's `streamed`",
            },
            "definitions": {
                "added_p50_ms/added_p99_ms": "target's percentile minus the backend's own, 1 connection",
                "max_req_s": f"wrk completed responses per second, {args.connections} connections",
                "cpu_s_per_1000_req": "user+system CPU seconds of the target's process group (workers included) "
                "during the throughput point, per 1,000 requests completed",
                "cores_used": "CPU seconds per wall second during the throughput point: the target's process "
                "group, the backend's, wrk's, and the whole machine's",
                "first_answer_after_wrk_s": "longest wait, after any wrk run of the point ended (closing its "
                "connections mid-response), until the target answered both kinds correctly again; excluded "
                "from the points",
            },
            "headway_workers": args.headway_workers,
            "versions": {
                "headway": _version(["git", "-C", str(_BACKEND.parent), "describe", "--always", "--dirty"]),
                "vllm-router": _version(
                    [
                        str(vllm_router_python),
                        "-c",
                        "import importlib.metadata as m; print(m.version('vllm-router'))",
                    ]
                )
                if vllm_router_python
                else None,
            },
            "answer_problems": problems,
            "ratios": {
                "definition": f"{_RATIO_NUMERATOR} max_req_s / {_RATIO_DENOMINATOR} max_req_s",
                "goal_at_least": _RATIO_GOAL,
                **ratios,
            },
            "epp_ratios": {
                "definition": f"{_EPP_NUMERATOR} max_req_s / {_RATIO_DENOMINATOR} max_req_s",
                "goal_at_least_streamed": 1.0,
                **epp_ratios,
            },
            "targets": results,
        }
        print_table(results, ratios)
        if problems:
            print("answers not as sent:", problems, file=sys.stderr)
        print(write_result("gateway-overhead", payload))
    finally:
        for pid in reversed(started):
            procs.stop(pid)


if __name__ == "__main__":
    main()
