"""How close the simulator's GPU presets come to published serving numbers, and to the derived capacity table.

    headway bench sim-calibration [--gpus H100,A100,L40S,A10G,L4]

Two comparisons. (1) Every measured point of `headway.sim.calibration` replayed as its benchmark ran it
(closed-loop clients); the tolerance is ±25%. (2) The SLO capacity (req/s per replica with TTFT p90 ≤ 1 s
and ITL p90 ≤ 0.1 s over all gaps, vLLM's default prefill chunk) swept from each preset, against the table
"Derived capacity" of ../shared/reference/gpu-serving.md (its second figures: vLLM's default chunk). That
table is itself a model (Vidur's measured operator times in a step-level scheduler), not a measurement, so
its differences are reported, not held to the tolerance. Writes bench/results/sim-calibration-<date>.json.
"""

from __future__ import annotations

import argparse
import dataclasses

from bench._machine import write_result
from headway.autoscaler.capacity import Slo
from headway.profile import Measure, simulator, sweep_bucket
from headway.sim.calibration import POINTS, TOLERANCE, replay
from headway.sim.profiles import PRESETS
from headway.sim.sweep import SweepPoint

DERIVED_DEFAULT_CHUNK: dict[str, dict[tuple[int, int], float]] = {
    "H100": {(256, 64): 121, (256, 256): 67, (1024, 64): 31, (1024, 256): 20, (4096, 64): 5.1, (4096, 256): 4.2},
    "A100": {(256, 64): 37, (256, 256): 21, (1024, 64): 8.7, (1024, 256): 7.2, (4096, 64): 1.3, (4096, 256): 1.4},
    "L40S": {(256, 64): 35, (256, 256): 16, (1024, 64): 8.0, (1024, 256): 4.7, (4096, 64): 1.0, (4096, 256): 1.0},
    "A10G": {(256, 64): 6.9, (256, 256): 3.2, (1024, 64): 1.4, (1024, 256): 0.9, (4096, 64): 0, (4096, 256): 0},
    "L4": {(256, 64): 5.0, (256, 256): 1.7, (1024, 64): 1.1, (1024, 256): 0.65, (4096, 64): 0, (4096, 256): 0},
}
"""../shared/reference/gpu-serving.md, "Derived capacity", second figure of each cell (L4: the central row)."""
PERCENTILE_SLO = Slo(ttft_s=1.0, ttft_percentile=90, itl_s=0.1, itl_percentile=90, attainment=1.0)


def percentile_slo(measure: Measure) -> Measure:
    """The derived table's criterion: the p90 TTFT and p90 ITL over all gaps, not a share of requests."""

    def check(rps: float, i: int, o: int) -> SweepPoint:
        p = measure(rps, i, o)
        ok = p.ttft_s <= PERCENTILE_SLO.ttft_s and p.itl_s <= PERCENTILE_SLO.itl_s and p.throughput_rps > 0
        return dataclasses.replace(p, attainment=1.0 if ok else 0.0)

    return check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", default=",".join(DERIVED_DEFAULT_CHUNK))
    args = parser.parse_args()
    measured = []
    for point in POINTS:
        r = replay(point)
        measured.append(
            {
                **dataclasses.asdict(point),
                "simulated": round(r.simulated, 6),
                "ratio": round(r.ratio, 3),
                "within_tolerance": r.within,
            }
        )
        print(f"{point.name:18s} measured {point.measured:<8g} simulated {r.simulated:<10.4g} ratio {r.ratio:.2f}")
    derived = []
    for gpu in args.gpus.split(","):
        for (i, o), ref in DERIVED_DEFAULT_CHUNK[gpu].items():
            cap = sweep_bucket(percentile_slo(simulator(PRESETS[gpu], PERCENTILE_SLO)), i, o, PERCENTILE_SLO).max_rps
            ratio = round(cap / ref, 3) if ref else None
            derived.append(
                {"gpu": gpu, "input_tokens": i, "output_tokens": o, "derived": ref, "simulated": cap, "ratio": ratio}
            )
            print(f"{gpu:5s} {i:5d}/{o:<4d} derived {ref:<6g} simulated {cap:<8.4g} ratio {ratio}", flush=True)
    ratios = [d["ratio"] for d in derived if d["ratio"] is not None]
    payload = {
        "measured_points": measured,
        "tolerance": TOLERANCE,
        "all_measured_within_tolerance": all(m["within_tolerance"] for m in measured),
        "derived_capacity": derived,
        "derived_rule": "req/s per replica with TTFT p90 <= 1 s and ITL p90 <= 0.1 s (all gaps), vLLM's default "
        "chunk; the reference's second figures",
        "derived_ratio_range": [min(ratios), max(ratios)] if ratios else None,
        "derived_infeasible_agree": all((d["derived"] == 0) == (d["simulated"] == 0) for d in derived),
    }
    print(write_result("sim-calibration", payload))


if __name__ == "__main__":
    main()
