"""How many concurrent streams and streamed tokens per second one simulator process serves on one core.

    headway bench sim-capacity [--concurrency 256] [--requests 1024] [--max-tokens 128]

The simulator is pinned to core 0 and the load generator (aiohttp, streaming completions) to core 1,
so the result is the simulator's own ceiling. `--time-scale` is set high enough that the latency model
is never what limits: what is measured is the process's HTTP/SSE/engine-loop overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

from bench._machine import write_result
from headway.devenv import procs
from headway.devenv.engines import sim_argv


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _one(session: aiohttp.ClientSession, url: str, prompt: str, max_tokens: int, ttfts: list[float]) -> int:
    body = {"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "stream": True, "ignore_eos": True}
    t0, chunks = time.perf_counter(), 0
    async with session.post(f"{url}/v1/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.content:
            if line.startswith(b"data: {"):
                if chunks == 0:
                    ttfts.append(time.perf_counter() - t0)
                chunks += 1
    return chunks


async def _load(url: str, concurrency: int, requests: int, max_tokens: int) -> dict[str, float]:
    sem = asyncio.Semaphore(concurrency)
    ttfts: list[float] = []
    peak = 0
    active = 0

    async def run(i: int, session: aiohttp.ClientSession) -> int:
        nonlocal peak, active
        async with sem:
            active += 1
            peak = max(peak, active)
            try:
                return await _one(
                    session, url, f"Request {i} about the prefix cache of engine {i % 7}.", max_tokens, ttfts
                )
            finally:
                active -= 1

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=600)) as session:
        t0 = time.perf_counter()
        counts = await asyncio.gather(*(run(i, session) for i in range(requests)))
        wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "tokens": float(sum(counts)),
        "peak_concurrency": float(peak),
        "ttft_p50_s": statistics.median(ttfts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--requests", type=int, default=1024)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--time-scale", type=float, default=1000.0)
    args = parser.parse_args()
    port = procs.free_port()
    log = Path(tempfile.gettempdir()) / f"headway-sim-capacity-{port}.log"
    argv = [
        "taskset",
        "-c",
        "0",
        *sim_argv(
            port,
            "--time-scale",
            str(args.time_scale),
            "--max-num-seqs",
            str(max(256, args.concurrency)),
            "--max-model-len",
            "4096",
            "--log-level",
            "warning",
        ),
    ]
    proc = procs.spawn(argv, log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"simulator did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        os.sched_setaffinity(0, {1 % (os.cpu_count() or 1)})
        cpu0 = _cpu_seconds(proc.pid)
        r = asyncio.run(_load(url, args.concurrency, args.requests, args.max_tokens))
        cpu = _cpu_seconds(proc.pid) - cpu0
    finally:
        procs.stop(proc.pid)
    tok_s = r["tokens"] / r["wall_s"]
    payload = {
        "simulator_core": 0,
        "concurrency": args.concurrency,
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "time_scale": args.time_scale,
        "peak_concurrent_streams": int(r["peak_concurrency"]),
        "streamed_tokens": int(r["tokens"]),
        "wall_s": round(r["wall_s"], 2),
        "streamed_tokens_per_s": round(tok_s, 1),
        "simulator_cpu_s": round(cpu, 2),
        "simulator_cpu_utilisation": round(cpu / r["wall_s"], 3),
        "simulator_cpu_us_per_token": round(cpu / r["tokens"] * 1e6, 1),
        "ttft_p50_s": round(r["ttft_p50_s"], 4),
        "targets": {"concurrent_streams": 256, "streamed_tokens_per_s": 5000},
        "meets_targets": r["peak_concurrency"] >= 256 and tok_s >= 5000,
    }
    print({k: v for k, v in payload.items() if k != "targets"})
    print(write_result("sim-capacity", payload))


if __name__ == "__main__":
    main()
