"""The online half of `headway bench model-routing`: a load ramp through headway's gateway to two simulated
pools, a strong model on a slower GPU profile with few sequences at a time and a cheap one, each request's
quality read from the dataset's labels for the model that answered it.

headway's route sends every request to the strong pool while its predicted TTFT keeps the SLO and
overflows to the cheap pool when it would not (quality priors from the training split, SLO overflow on).
Static splits send a fixed share to the strong pool whatever the load (the client names the pool's model,
through the same gateway). The best static split is the one with the highest quality among those meeting
the SLO attainment target; headway should meet the target at a quality at least as high.

`python -m bench._model_routing_online serve CONFIG.json` runs the gateway the bench starts: static
discovery cannot describe two pools, so it builds the pools and the route from the config in-process.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench._routing_quality import LabelledPrompt, accuracy
from headway.api.modelpool import Routing
from headway.api.modelroute import ModelRoute
from headway.devenv import procs
from headway.devenv.engines import sim_argv
from headway.devenv.paths import REPO_ROOT
from headway.devenv.tinymodel import tiny_model_dir

SLO_TTFT_S = 0.5
ATTAINMENT_TARGET = 0.99
STRONG = {"gpu_profile": "L4", "max_num_seqs": 4, "price_per_hour": 4.0}
WEAK = {"gpu_profile": "H100", "max_num_seqs": 64, "price_per_hour": 1.0}
MAX_TOKENS = 16
STATIC_SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class Outcome:
    pool: str
    ttft_s: float | None
    status: int
    correct: bool


def route_spec(train: list[LabelledPrompt], weak: str, strong: str) -> dict[str, Any]:
    return {
        "model": "auto",
        "candidates": [
            {"pool": "weak", "quality": round(accuracy(train, weak), 4)},
            {"pool": "strong", "quality": round(accuracy(train, strong), 4)},
        ],
        "objective": {"qualityWeight": 1.0, "sloOverflow": True},
    }


# ----- the gateway process


def serve(config_path: Path) -> None:
    from aiohttp import web

    from headway.gateway.app import SERVE_OPTIONS, Gateway
    from headway.gateway.config import GatewayConfig
    from headway.gateway.pools import EndpointInfo, PoolInfo

    cfg_doc = json.loads(config_path.read_text())
    pools = cfg_doc["pools"]
    cfg = GatewayConfig(discovery="static", model=pools[0]["model"], endpoints=(pools[0]["url"],), port=cfg_doc["port"])
    gw = Gateway(cfg)
    for p in pools:
        gw.routes.apply(
            PoolInfo(
                ("", p["name"]),
                p["model"],
                Routing(strategy="least-request"),
                str(tiny_model_dir()),
                (EndpointInfo(p["url"], None, p["price_per_hour"]),),
                slo_ttft_s=p["slo_ttft_s"],
            )
        )
    gw.model_routes.apply(ModelRoute(name="auto", namespace="", spec=cfg_doc["route"]))
    web.run_app(gw.app(), host="127.0.0.1", port=cfg.port, print=None, **SERVE_OPTIONS)


# ----- the run


async def _one(
    session: aiohttp.ClientSession,
    url: str,
    model: str,
    row: LabelledPrompt,
    models: dict[str, str],
    labels: dict[str, str],
) -> Outcome:
    """One streamed request for `model`; `models`: pool → served model, `labels`: pool → the dataset's
    column for the model it stands for."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": row.prompt}],
        "max_tokens": MAX_TOKENS,
        "ignore_eos": True,
        "stream": True,
    }
    t0 = time.perf_counter()
    ttft = None
    async with session.post(f"{url}/v1/chat/completions", json=body) as r:
        pool = r.headers.get("x-headway-pool") or next(p for p, m in models.items() if m == model)
        async for _chunk in r.content.iter_any():
            if ttft is None:
                ttft = time.perf_counter() - t0
        status = r.status
    return Outcome(pool, ttft, status, row.correct[labels[pool]])


async def _ramp(
    url: str,
    rows: list[LabelledPrompt],
    choose: Any,
    labels: dict[str, str],
    rates: tuple[float, float],
    seconds: float,
    seed: int,
) -> list[Outcome]:
    """Poisson arrivals whose rate grows linearly from rates[0] to rates[1] over `seconds`."""
    rng = random.Random(seed)
    arrivals, t = [], 0.0
    while True:
        rate = rates[0] + (rates[1] - rates[0]) * min(1.0, t / seconds)
        t += rng.expovariate(rate)
        if t >= seconds:
            break
        arrivals.append(t)
    out: list[Outcome] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        start = time.perf_counter()
        tasks = []
        for i, at in enumerate(arrivals):
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            row = rows[i % len(rows)]
            model, models = choose(i)
            tasks.append(asyncio.create_task(_one(session, url, model, row, models, labels)))
        for task in tasks:
            out.append(await task)
    return out


def _summary(outcomes: list[Outcome], prices: dict[str, float]) -> dict[str, Any]:
    ok = [o for o in outcomes if o.status == 200 and o.ttft_s is not None]
    n = len(outcomes)
    met = sum(1 for o in ok if o.ttft_s <= SLO_TTFT_S)
    ttfts = sorted(o.ttft_s for o in ok)
    strong_share = sum(o.pool == "strong" for o in outcomes) / n
    return {
        "requests": n,
        "errors": n - len(ok),
        "slo_attainment": round(met / n, 4),
        "quality": round(sum(o.correct for o in ok) / n, 4),
        "strong_share": round(strong_share, 4),
        "ttft_p50_s": round(ttfts[len(ttfts) // 2], 4) if ttfts else None,
        "ttft_p99_s": round(ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))], 4) if ttfts else None,
        "cost_per_1k_requests_usd": round(1000 * sum(prices[o.pool] for o in outcomes) / n, 4),
    }


def run_online(
    work: Path,
    train: list[LabelledPrompt],
    test: list[LabelledPrompt],
    weak: str,
    strong: str,
    token_prices: tuple[float, float],
    *,
    seconds: float,
    shares: tuple[float, ...],
    progress: Any,
) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    ports = {"weak": procs.free_port(), "strong": procs.free_port()}
    served = {"weak": "weak-model", "strong": "strong-model"}
    labels = {"weak": weak, "strong": strong}
    pids = []
    try:
        for pool, shape in (("weak", WEAK), ("strong", STRONG)):
            argv = sim_argv(
                ports[pool],
                "--gpu-profile",
                shape["gpu_profile"],
                "--max-num-seqs",
                str(shape["max_num_seqs"]),
                "--log-level",
                "warning",
                served=served[pool],
            )
            pids.append(procs.spawn(argv, work / f"{pool}.log").pid)
        gw_port = procs.free_port()
        config = {
            "port": gw_port,
            "pools": [
                {
                    "name": pool,
                    "model": served[pool],
                    "url": f"http://127.0.0.1:{ports[pool]}",
                    "slo_ttft_s": SLO_TTFT_S,
                    "price_per_hour": shape["price_per_hour"],
                }
                for pool, shape in (("weak", WEAK), ("strong", STRONG))
            ],
            "route": route_spec(train, weak, strong),
        }
        (work / "gateway.json").write_text(json.dumps(config))
        # the checkout's bench package, appended (never prepended: its operator/ would shadow the stdlib's)
        code = f"import sys; sys.path.append({str(REPO_ROOT)!r}); import bench._model_routing_online as m; m.main()"
        argv = [sys.executable, "-c", code, "serve", str(work / "gateway.json")]
        pids.append(procs.spawn(argv, work / "gateway.log").pid)
        url = f"http://127.0.0.1:{gw_port}"
        asyncio.run(_wait(url))
        capacity = asyncio.run(_capacity(url, test, served, labels))
        rates = (0.2 * capacity, 2.0 * capacity)
        progress(f"online: strong pool capacity {capacity:.2f} req/s; ramp {rates[0]:.2f} → {rates[1]:.2f} req/s")
        # per-request token price of the model that answered (prompt + completion, mean prompt length)
        mean_tokens = sum(len(r.prompt) for r in test) / len(test) / 4 + MAX_TOKENS
        prices = {"weak": token_prices[0] * mean_tokens / 1e6, "strong": token_prices[1] * mean_tokens / 1e6}
        results: dict[str, Any] = {}
        results["headway"] = _summary(
            asyncio.run(_ramp(url, test, lambda _i: ("auto", served), labels, rates, seconds, seed=1)), prices
        )
        progress(f"online headway: {results['headway']}")
        for share in shares:
            rng = random.Random(7)
            picks = [rng.random() < share for _ in range(100_000)]

            def choose(i: int, picks: list[bool] = picks) -> tuple[str, dict[str, str]]:
                return (served["strong"] if picks[i] else served["weak"]), served

            name = f"static-{share:g}"
            results[name] = _summary(asyncio.run(_ramp(url, test, choose, labels, rates, seconds, seed=1)), prices)
            progress(f"online {name}: {results[name]}")
    finally:
        for pid in pids:
            procs.stop(pid)
    meeting = {k: v for k, v in results.items() if k.startswith("static") and v["slo_attainment"] >= ATTAINMENT_TARGET}
    best = max(meeting, key=lambda k: meeting[k]["quality"]) if meeting else None
    return {
        "slo_ttft_s": SLO_TTFT_S,
        "attainment_target": ATTAINMENT_TARGET,
        "strong_pool": STRONG,
        "weak_pool": WEAK,
        "max_tokens": MAX_TOKENS,
        "strong_capacity_rps": round(capacity, 3),
        "ramp_rps": [round(r, 3) for r in rates],
        "ramp_seconds": seconds,
        "results": results,
        "best_static_meeting_slo": best,
        "targets": {
            "headway_attainment": results["headway"]["slo_attainment"],
            "headway_quality": results["headway"]["quality"],
            "best_static_quality": meeting[best]["quality"] if best else None,
            "met": bool(
                results["headway"]["slo_attainment"] >= ATTAINMENT_TARGET
                and (best is None or results["headway"]["quality"] >= meeting[best]["quality"])
            ),
        },
    }


async def _wait(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
                async with s.post(f"{url}/v1/chat/completions", json=body) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.3)
    raise RuntimeError(f"the gateway at {url} did not answer within {timeout_s:.0f}s")


async def _capacity(url: str, rows: list[LabelledPrompt], served: dict[str, str], labels: dict[str, str]) -> float:
    """The strong pool's throughput in requests per second with every sequence slot busy."""
    conc = STRONG["max_num_seqs"] * 3
    n = conc * 4
    sem = asyncio.Semaphore(conc)
    async with aiohttp.ClientSession() as session:

        async def one(row: LabelledPrompt) -> None:
            async with sem:
                await _one(session, url, served["strong"], row, served, labels)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(r) for r in rows[:n]))
        return n / (time.perf_counter() - t0)


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] != "serve":
        sys.exit("usage: python -m bench._model_routing_online serve CONFIG.json")
    serve(Path(sys.argv[2]))


if __name__ == "__main__":
    main()
