"""headway's SLO autoscaler against other autoscalers' formulas: cost–attainment frontiers on real and synthetic traces.

    headway bench autoscaler [--trace synthetic|azure-conv] [--prices aws|runpod] [--gpus H100,A100,L40S,A10G,L4]
                             [--startup-s 90] [--workers 2]

The traces (`bench/_autoscaling_traces.py`): a synthetic 24-hour day, and the Azure LLM inference trace
2023 (conversation) replayed with its own arrivals and token counts, rate-scaled by a documented factor.
The prices (`headway.sim.prices`): AWS on-demand list prices (default) or a neo-cloud's; the GPU types are
those the price set lists.

The engine (`bench/_autoscaling_fleet.py`): every policy's replicas serve the same trace through the same
capacity profile, swept from the simulator's engine calibrated to published measurements (`headway profile`,
`bench/profiles/`); a replica serves only after `--startup-s`. To keep headway honest about its own model,
the A100s of the trace are `--a100-slowdown` slower than the profile says (headway's online correction must
find that out).

Policies: headway (the autoscaler's own `decide`, over every GPU type), AIBrix KPA and APA, KubeAI and an
HPA on waiting requests (each on one GPU type, every type tried), AIBrix's GPU optimizer (Mélange's ILP over
all types, from the same offline profile, actuated through KPA), and static fleets sized for the trace's
peak. Every policy starts from the min-cost fleet for the trace's first minute on its GPU types.

Not one setting each but a frontier: each policy's knob is swept (anchors' targets toward more replicas,
headway's and the GPU optimizer's headroom up) and every setting's (SLO attainment, cost) is kept; a
policy's frontier is its settings no other of its settings beats on both. headway is compared with each
anchor at every attainment level the anchor reaches, and with the clairvoyant bound (each minute's peak
known in advance, no start-up) and a perfect-information reactive reference. Where the cost goes is
reported per policy: the min-cost mix for each minute's demand, replicas starting up, and ready capacity
beyond that mix. Writes bench/results/autoscaler-<trace>-<prices>-<date>.json and a PNG of the frontiers.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from bench._autoscaling_fleet import FleetState, Gpu, serve
from bench._autoscaling_traces import Trace, azure_conv, make_trace
from bench._machine import write_result
from bench.autoscaling_anchors import PodMetrics
from bench.autoscaling_anchors.apa import Apa
from bench.autoscaling_anchors.hpa import Hpa
from bench.autoscaling_anchors.kpa import Kpa
from bench.autoscaling_anchors.kubeai import KubeAi
from bench.autoscaling_anchors.melange import Melange
from headway.api.modelpool import Autoscaling
from headway.autoscaler.capacity import Bucket, CapacityProfile, load_profile
from headway.autoscaler.forecast import make_forecaster
from headway.autoscaler.policy import WHOLE_MIX, Observation, PolicyState, VariantState, decide, spread
from headway.autoscaler.solver import Mix, VariantOption, solve
from headway.sim.prices import DEFAULT_PRICE_SET, PRICE_SETS, PriceSet
from headway.sim.profiles import PRESETS

DEFAULT_PROFILE = Path(__file__).parent / "profiles" / "llama-3-8b-sim.json"
GPUS = ("H100", "A100", "L40S", "A10G", "L4")
"""The GPU types tried, where the price set prices them (A100 is the 80 GB one)."""
MAX_REPLICAS = 200
"""Per Deployment (variant), for every policy alike."""
ANCHORS = (Kpa, Apa, KubeAi, Hpa)
ANCHOR_TARGET_FACTORS = tuple(round(0.8**k, 4) for k in range(20))
"""Anchor targets swept for the frontier: the default × 1, 0.8, 0.64, … 0.014 (more replicas)."""
HEADROOMS = (1.0, 1.1, 1.2, 1.35, 1.5, 1.75, 2.0, 2.5, 3.0)
"""Headroom swept for headway, the GPU optimizer and the perfect-reactive reference."""
LEVELS = (0.9, 0.95, 0.99, 0.995, 0.999)
"""Attainment levels at which the cheapest setting of every policy is reported."""
SPEC = Autoscaling(enabled=True, scale_down_window_seconds=300, panic_window_seconds=30, max_scale_up_step=8)


# ----- policies
class Policy(Protocol):
    name: str

    def __init__(self, min_replicas: int, max_replicas: int) -> None: ...

    def desired(self, now: float, current: int, m: PodMetrics) -> int: ...


@dataclass
class Run:
    name: str
    kind: str
    gpus: list[str]
    knob: float | None = None
    met: float = 0.0
    total: float = 0.0
    gpu_seconds: float = 0.0
    cost: float = 0.0
    starting_cost: float = 0.0
    """Spent on replicas asked for and not yet serving."""
    scale_events: int = 0
    series_t: list[float] = field(default_factory=list)
    series_replicas: dict[str, list[int]] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)

    def record(
        self, now: float, fleet: FleetState, met: float, total: float, gpus: Mapping[str, Gpu], dt: float
    ) -> None:
        self.met += met
        self.total += total
        for g, n in fleet.replicas.items():
            self.gpu_seconds += n * dt
            self.cost += n * gpus[g].cost * dt / 3600
            self.starting_cost += fleet.pending(g, now) * gpus[g].cost * dt / 3600
        if int(now) % 300 == 0:
            self.series_t.append(now / 3600)
            for g, n in fleet.replicas.items():
                self.series_replicas.setdefault(g, []).append(n)

    @property
    def attainment(self) -> float:
        return self.met / self.total if self.total else 1.0

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "gpus": self.gpus,
            **({"knob": self.knob} if self.knob is not None else {}),
            "slo_attainment": round(self.attainment, 5),
            "gpu_hours": round(self.gpu_seconds / 3600, 2),
            "cost": round(self.cost, 2),
            "scale_events": self.scale_events,
            **({"decisions_by_reason": self.reasons} if self.reasons else {}),
        }


def min_cost_mix(
    gpus: Mapping[str, Gpu], names: Iterable[str], rps: float, mix: Mapping[Bucket, float], headroom: float = 1.0
) -> Mix:
    """The min-cost fleet of `names` for `rps` of `mix` at the trace's true GPU speeds (not the profile's),
    every replica serving the whole mix as the trace's load-spreading gateway has it (`policy.spread`);
    requests no GPU of `names` serves are left out. For the references and every policy's first fleet."""
    options = [VariantOption(g, gpus[g].cost, 1, 0, MAX_REPLICAS, {b: gpus[g].slo_rps(b) for b in mix}) for g in names]
    spread_options, servable = spread(options, mix)
    return solve(spread_options, {WHOLE_MIX: rps * servable} if servable > 0 else {}, headroom=headroom)


def initial_fleet(trace: Trace, gpus: Mapping[str, Gpu], names: Sequence[str]) -> FleetState:
    """The min-cost mix of `names` for the trace's first minute, ready at the start (at least one replica)."""
    per = max(1, int(60 / trace.tick_s))
    peak = float(trace.rps[:per].max())
    want = min_cost_mix(gpus, names, peak, trace.mix[0]).replicas
    if not any(want.values()):
        want[names[0]] = 1
    return FleetState(dict(want))


def step(run: Run, trace: Trace, gpus: Mapping[str, Gpu], fleet: FleetState, i: int) -> tuple[float, Any]:
    now = i * trace.tick_s
    tick = serve(gpus, fleet, float(trace.rps[i]), trace.mix[i], now, trace.tick_s)
    run.record(now, fleet, tick.met, tick.total, gpus, trace.tick_s)
    return now, tick


def run_anchor(
    make: Callable[..., Policy],
    g: str,
    trace: Trace,
    gpus: Mapping[str, Gpu],
    startup_s: float,
    interval_s: float,
    knob: float | None = None,
) -> Run:
    policy = make(min_replicas=1, max_replicas=MAX_REPLICAS)
    interval = getattr(policy, "interval_s", interval_s)
    fleet = initial_fleet(trace, gpus, [g])
    run = Run(f"{policy.name}-{g}", "anchor", [g], knob)
    next_sync = 0.0
    for i in range(len(trace.rps)):
        now, tick = step(run, trace, gpus, fleet, i)
        if now >= next_sync:
            next_sync = now + interval
            kv, waiting, _, _ = tick.per_replica.get(g, (1.0 if fleet.queue else 0.0, fleet.queue, 0, 0))
            m = PodMetrics(fleet.ready(g, now), kv, waiting, tick.active)
            want = policy.desired(now, fleet.replicas[g], m)
            if want != fleet.replicas[g]:
                fleet.set(g, want, now, startup_s)
                run.scale_events += 1
    return run


def run_melange(trace: Trace, gpus: Mapping[str, Gpu], startup_s: float, headroom: float = 1.0) -> Run:
    """AIBrix's GPU optimizer over all GPU types at once, from the same offline profile as headway
    (its throughputs divided by `headroom` for the frontier)."""
    names = list(gpus)
    tput = {g: {b: gpus[g].bucket(b).max_rps / headroom for b in trace.buckets()} for g in names}
    policy = Melange({g: gpus[g].cost for g in names}, tput, MAX_REPLICAS)
    fleet = initial_fleet(trace, gpus, names)
    run = Run(policy.name, "anchor", names, headroom)
    next_sync, window = 0.0, []
    for i in range(len(trace.rps)):
        now, _ = step(run, trace, gpus, fleet, i)
        window.append(float(trace.rps[i]))
        if now < next_sync:
            continue
        next_sync = now + policy.interval_s
        observed, window = sum(window) / len(window), []
        want = policy.desired(now, fleet.replicas, {g: fleet.ready(g, now) for g in names}, observed, trace.mix[i])
        run.scale_events += fleet.apply(want, now, startup_s)
    return run


def run_static(g: str, trace: Trace, gpus: Mapping[str, Gpu], startup_s: float) -> Run:
    """Provisioned for the trace's peak: the most replicas any tick needs at the SLO capacity, for the
    requests this GPU type can serve at all (the rest miss whatever the fleet)."""
    need = 1
    for rps, mix in zip(trace.rps, trace.mix, strict=True):
        load = sum(s / gpus[g].slo_rps(b) for b, s in mix.items() if gpus[g].serves(b))
        need = max(need, math.ceil(float(rps) * load))
    fleet = FleetState({g: need})
    run = Run(f"static-{g}", "static", [g])
    for i in range(len(trace.rps)):
        step(run, trace, gpus, fleet, i)
    return run


def run_headway(
    trace: Trace,
    gpus: Mapping[str, Gpu],
    profile: CapacityProfile,
    startup_s: float,
    interval_s: float,
    spec: Autoscaling,
    headroom: float,
    forecaster: str = "constant",
) -> tuple[Run, list[dict[str, int]]]:
    names = list(gpus)
    fleet = initial_fleet(trace, gpus, names)
    run = Run("headway", "headway", names, headroom)
    state = PolicyState()
    decisions: list[dict[str, int]] = []
    predictor = make_forecaster(forecaster)
    next_sync = 0.0
    window: list[float] = []
    for i in range(len(trace.rps)):
        now, tick = step(run, trace, gpus, fleet, i)
        window.append(float(trace.rps[i]))
        if now < next_sync:
            continue
        next_sync = now + interval_s
        observed = sum(window) / len(window)
        window = []
        variants = []
        for g in names:
            _, _, ttft, itl = tick.per_replica.get(g, (0, 0, None, None))
            variants.append(
                VariantState(
                    name=g,
                    replicas=fleet.replicas[g],
                    ready=fleet.ready(g, now),
                    pending=fleet.pending(g, now),
                    cost_per_gpu_hour_usd=gpus[g].cost,
                    min_replicas=0,
                    max_replicas=MAX_REPLICAS,
                    capacity=profile.for_variant(g, 1),
                    observed_ttft_s=ttft,
                    observed_itl_s=itl,
                    provisioning_s=startup_s,
                )
            )
        waiting = fleet.queue + sum(fleet.ready(g, now) * w for g, (_, w, _, _) in tick.per_replica.items())
        obs = Observation(time=now, fresh=True, rps=observed, mix=trace.mix[i], in_flight=tick.active, waiting=waiting)
        d, state = decide(spec, variants, obs, state, headroom=headroom, forecaster=predictor)
        run.reasons[d.reason] = run.reasons.get(d.reason, 0) + 1
        decisions.append(d.desired)
        run.scale_events += fleet.apply(d.desired, now, startup_s)
    return run, decisions


def run_perfect_reactive(
    trace: Trace, gpus: Mapping[str, Gpu], startup_s: float, headroom: float, window_s: float = 300.0
) -> Run:
    """A reference no real autoscaler reaches: it reads every tick's true rate with no delay, knows each
    GPU's true speed, decides every tick, asks for the min-cost mix of the peak rate of the last
    `window_s` (the scale-down stabilisation every policy here has) times `headroom`, removes nothing
    while replicas start, and pays only the start-up time. What it costs at the SLO is the price of
    reacting to bursts instead of foreseeing them."""
    names = list(gpus)
    fleet = initial_fleet(trace, gpus, names)
    run = Run("perfect-reactive", "reference", names, headroom)
    back = max(1, int(window_s / trace.tick_s))
    for i in range(len(trace.rps)):
        now, _ = step(run, trace, gpus, fleet, i)
        mix = trace.mix[i]
        peak = float(trace.rps[max(0, i - back) : i + 1].max())
        want = min_cost_mix(gpus, names, peak, mix, headroom).replicas
        if any(fleet.pending(g, now) for g in names):  # make before break: nothing goes while a re-mix starts
            want = {g: max(n, fleet.replicas[g]) for g, n in want.items()}
        run.scale_events += fleet.apply(want, now, startup_s)
    return run


def clairvoyant_cost(trace: Trace, gpus: Mapping[str, Gpu], names: Iterable[str], minute_s: float = 60.0) -> float:
    """A bound no reactive policy reaches: each minute served by the min-cost mix of `names` for that minute's
    peak rate, known in advance, with no start-up time (requests no GPU of `names` serves are left out)."""
    names = list(names)
    per = max(1, int(minute_s / trace.tick_s))
    cost = 0.0
    for i in range(0, len(trace.rps), per):
        mix, peak = trace.mix[i], float(trace.rps[i : i + per].max())
        cost += min_cost_mix(gpus, names, peak, mix).cost_per_hour_usd * per * trace.tick_s / 3600
    return round(cost, 2)


def unservable_share(trace: Trace, gpus: Mapping[str, Gpu], names: Iterable[str]) -> float:
    """Share of the trace's requests in buckets no GPU of `names` serves within the SLO at any rate."""
    names = list(names)
    lost = sum(
        float(r) * sum(s for b, s in mix.items() if not any(gpus[g].serves(b) for g in names))
        for r, mix in zip(trace.rps, trace.mix, strict=True)
    )
    return lost / max(1e-9, float(trace.rps.sum()))


# ----- frontiers
def frontier(runs: Iterable[Run]) -> list[Run]:
    """The settings no other setting beats on both cost and attainment, by growing cost."""
    out: list[Run] = []
    for r in sorted(runs, key=lambda r: (r.cost, -r.attainment)):
        if not out or r.attainment > out[-1].attainment:
            out.append(r)
    return out


def cheapest_reaching(runs: Iterable[Run], level: float) -> Run | None:
    reaching = [r for r in runs if r.attainment >= level]
    return min(reaching, key=lambda r: r.cost) if reaching else None


def _point(r: Run) -> dict[str, Any]:
    return {
        "knob": r.knob,
        "gpus": r.gpus if len(r.gpus) == 1 else "all",
        "slo_attainment": round(r.attainment, 5),
        "cost": round(r.cost, 2),
        "scale_events": r.scale_events,
    }


def compare(families: Mapping[str, list[Run]], clairvoyant: float) -> dict[str, Any]:
    """headway against each anchor family at every attainment level that family's frontier reaches."""
    head = families["headway"]
    anchors = {k: v for k, v in families.items() if k not in ("headway", "perfect-reactive")}
    per_anchor: dict[str, Any] = {}
    for name, runs in anchors.items():
        points = []
        for a in frontier(runs):
            h = cheapest_reaching(head, a.attainment)
            points.append(
                {
                    "anchor_attainment": round(a.attainment, 5),
                    "anchor_cost": round(a.cost, 2),
                    "anchor_scale_events": a.scale_events,
                    "headway_cost": round(h.cost, 2) if h else None,
                    "headway_scale_events": h.scale_events if h else None,
                    "cost_ratio": round(h.cost / a.cost, 4) if h and a.cost else None,
                }
            )
        ratios = [p["cost_ratio"] for p in points if p["cost_ratio"] is not None]
        per_anchor[name] = {
            "points": points,
            "worst_cost_ratio": max(ratios) if ratios else None,
            "levels_headway_does_not_reach": [p["anchor_attainment"] for p in points if p["headway_cost"] is None],
            "headway_reaches_every_level": all(p["headway_cost"] is not None for p in points),
            "fewer_scale_events_at_every_level": all(
                p["headway_scale_events"] is not None and p["headway_scale_events"] < p["anchor_scale_events"]
                for p in points
            ),
        }
    levels: dict[str, Any] = {}
    for level in LEVELS:
        row = {name: cheapest_reaching(runs, level) for name, runs in families.items()}
        levels[str(level)] = {name: (round(r.cost, 2) if r else None) for name, r in row.items()}
    at99 = {name: cheapest_reaching(runs, 0.99) for name, runs in anchors.items()}
    cheapest_anchor99 = min((r.cost for r in at99.values() if r), default=None)
    h99 = cheapest_reaching(head, 0.99)
    any99 = cheapest_anchor99 is not None or h99 is not None
    worst = [v["worst_cost_ratio"] for v in per_anchor.values()]
    return {
        "rule": "for each anchor's frontier point (its attainment a, its cost c): headway's cheapest setting with "
        "attainment >= a, and that cost over c",
        "per_anchor": per_anchor,
        "cheapest_cost_reaching_level": levels,
        "goal_every_level_at_most_0.75x": all(
            v["headway_reaches_every_level"] and (v["worst_cost_ratio"] or 0) <= 0.75 for v in per_anchor.values()
        ),
        "worst_ratio_over_anchors": max((w for w in worst if w is not None), default=None),
        "at_99": {
            "any_policy_reaches": any99,
            "headway_cost": round(h99.cost, 2) if h99 else None,
            "cheapest_anchor_cost": cheapest_anchor99,
            "vs_cheapest_anchor": round(h99.cost / cheapest_anchor99, 4) if h99 and cheapest_anchor99 else None,
            "vs_clairvoyant": round(h99.cost / clairvoyant, 4) if h99 and clairvoyant else None,
        },
        "fewer_scale_events_than_kpa_at_every_level": all(
            v["fewer_scale_events_at_every_level"] for k, v in per_anchor.items() if k.startswith("aibrix-kpa")
        ),
    }


def cost_breakdown(run: Run, min_mix_cost: float) -> dict[str, float]:
    """Where a run's money went: the min-cost mix for each minute's demand (the clairvoyant bound over its
    GPU types), replicas starting up, and ready capacity beyond that mix (headroom, burst and re-mix slack)."""
    return {
        "min_cost_mix": round(min_mix_cost, 2),
        "starting_up": round(run.starting_cost, 2),
        "ready_beyond_min_cost_mix": round(run.cost - run.starting_cost - min_mix_cost, 2),
    }


def plot(path: Path, families: Mapping[str, list[Run]], clairvoyant: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 6))
    for name, runs in families.items():
        pts = [r for r in frontier(runs) if r.attainment < 1]
        if not pts:
            continue
        style = {"lw": 2.2, "color": "black"} if name == "headway" else {"lw": 1}
        if name == "perfect-reactive":
            style = {"lw": 1, "ls": "--", "color": "grey"}
        ax.plot([1 - r.attainment for r in pts], [r.cost for r in pts], marker="o", ms=3, label=name, **style)
    ax.axhline(clairvoyant, color="grey", ls=":", label="clairvoyant bound")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("share of requests missing the SLO (log; right is better)")
    ax.set_ylabel("cost (USD)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


# ----- the run
def make_gpus(profile: CapacityProfile, prices: PriceSet, names: Iterable[str], a100_slowdown: float) -> dict[str, Gpu]:
    out = {}
    for g in names:
        cap = profile.for_variant(g, 1)
        if cap is None or cap.gpu != g:
            raise SystemExit(f"error: the profile has no {g} entry with tensor parallel 1")
        out[g] = Gpu(g, prices.price(g), cap, a100_slowdown if g == "A100" else 1.0, PRESETS[g].kv_cache_tokens)
    return out


def _call(job: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]) -> Any:
    fn, args, kwargs = job
    return fn(*args, **kwargs)


def _headway_run(*args: Any, **kwargs: Any) -> Run:
    """`run_headway` without its decisions: what a frontier keeps of a setting."""
    return run_headway(*args, **kwargs)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", choices=("synthetic", "azure-conv"), default="synthetic")
    parser.add_argument("--prices", choices=sorted(PRICE_SETS), default=DEFAULT_PRICE_SET)
    parser.add_argument("--gpus", default=",".join(GPUS), help="GPU types to use, where the price set has them.")
    parser.add_argument("--hours", type=float, default=24.0, help="synthetic: length of the (compressed) day.")
    parser.add_argument("--rate-scale", type=float, default=None, help="azure-conv: rate multiplier (default 8).")
    parser.add_argument("--time-scale", type=float, default=None, help="azure-conv: time stretch (default 1).")
    parser.add_argument("--tick-s", type=float, default=5.0)
    parser.add_argument("--profile", type=Path, default=DEFAULT_PROFILE)
    parser.add_argument("--startup-s", type=float, default=90.0, help="Time from scale-up to a serving replica.")
    parser.add_argument("--interval-s", type=float, default=15.0, help="Decision interval of headway, KPA and APA.")
    parser.add_argument("--a100-slowdown", type=float, default=1.15)
    parser.add_argument("--forecaster", choices=("constant", "trend"), default="constant")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Processes replaying settings.")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args()
    prices = PRICE_SETS[args.prices]
    names = [g for g in args.gpus.split(",") if g in prices]
    if not names:
        raise SystemExit(f"error: --prices {args.prices} prices none of --gpus {args.gpus}")
    profile = load_profile(args.profile)
    gpus = make_gpus(profile, prices, names, args.a100_slowdown)
    grid = sorted({(b.input_tokens, b.output_tokens) for g in profile.gpus for b in g.buckets})
    if args.trace == "synthetic":
        trace = make_trace(args.hours, args.tick_s)
    else:
        scale = {k: v for k, v in (("rate_scale", args.rate_scale), ("time_scale", args.time_scale)) if v is not None}
        trace = azure_conv(args.tick_s, grid, **scale)
    print(trace.describe(), flush=True)

    jobs: list[tuple[str, tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]] = []
    for make in ANCHORS:
        default = make().target
        for g in names:
            for f in ANCHOR_TARGET_FACTORS:
                policy = partial(make, target=default * f)
                fn_args = (policy, g, trace, {g: gpus[g]}, args.startup_s, args.interval_s)
                jobs.append((make.name, (run_anchor, fn_args, {"knob": round(default * f, 6)})))
    for h in HEADROOMS:
        jobs.append(("aibrix-gpu-optimizer", (run_melange, (trace, gpus, args.startup_s, h), {})))
        fn_args = (trace, gpus, profile, args.startup_s, args.interval_s, SPEC, h, args.forecaster)
        jobs.append(("headway", (_headway_run, fn_args, {})))
        jobs.append(("perfect-reactive", (run_perfect_reactive, (trace, gpus, args.startup_s, h), {})))
    for g in names:
        jobs.append(("static", (run_static, (g, trace, {g: gpus[g]}, args.startup_s), {})))
    families: dict[str, list[Run]] = {}
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        for done, ((family, _), run) in enumerate(zip(jobs, pool.map(_call, [j for _, j in jobs]), strict=True), 1):
            families.setdefault(family, []).append(run)
            if done % 25 == 0 or done == len(jobs):
                print(f"{done}/{len(jobs)} settings replayed", flush=True)
    statics = families.pop("static")
    clair = {"all": clairvoyant_cost(trace, gpus, names), **{g: clairvoyant_cost(trace, gpus, [g]) for g in names}}
    breakdown = {
        name: cost_breakdown(r, clair["all" if len(r.gpus) > 1 else r.gpus[0]])
        for name, runs in families.items()
        if (r := cheapest_reaching(runs, 0.99) or max(runs, key=lambda r: r.attainment))
    }
    comparison = compare(families, clair["all"])
    head_default = next(r for r in families["headway"] if r.knob == 1.0)
    replay = _headway_run(trace, gpus, profile, args.startup_s, args.interval_s, SPEC, 1.0, args.forecaster)
    payload = {
        "trace": trace.describe(),
        "prices": {"set": prices.name, "source": prices.source, "usd_per_gpu_hour": {g: gpus[g].cost for g in names}},
        "engine_model": f"capacity profile {args.profile.name} (sweeps of headway's simulator engine, calibrated: "
        f"bench/results/sim-calibration-*.json); startup {args.startup_s:g} s for every policy; A100 "
        f"{args.a100_slowdown:g}x slower than profiled",
        "slo": profile.slo.model_dump(),
        "unservable_share": {g: round(unservable_share(trace, gpus, [g]), 4) for g in names},
        "frontiers": {name: [_point(r) for r in frontier(runs)] for name, runs in families.items()},
        "static": {r.name: r.summary() for r in statics},
        "clairvoyant_cost": {
            "rule": "each minute's peak rate known in advance, served at once by the min-cost mix",
            **clair,
        },
        "cost_breakdown": {
            "rule": "each policy's cheapest setting reaching 99% attainment (else its highest attainment)",
            **breakdown,
        },
        "comparison": comparison,
        "headway_default": head_default.summary(),
        "deterministic_replay": replay.summary() == head_default.summary(),
    }
    for name, runs in families.items():
        best = cheapest_reaching(runs, 0.99)
        top = max(runs, key=lambda r: r.attainment)
        said = (
            f"99% at ${best.cost:.2f} (knob {best.knob})" if best else f"best {top.attainment:.4f} at ${top.cost:.2f}"
        )
        print(f"{name:24s} {said}")
    print({k: comparison[k] for k in ("goal_every_level_at_most_0.75x", "worst_ratio_over_anchors", "at_99")})
    out = write_result(f"autoscaler-{trace.name}-{prices.name}", payload, benchmark="autoscaler")
    if not args.no_plot:
        plot(out.with_suffix(".png"), families, clair["all"], f"{trace.name}, {prices.name} prices: cost vs SLO misses")
    print(out)


if __name__ == "__main__":
    # run as the importable module, so that worker processes can find the functions they are sent
    from bench import autoscaler

    autoscaler.main()
