"""The engine model every autoscaling policy of the benchmark is replayed through, the same for all.

A GPU type's replicas behave as its capacity profile says (swept from the simulator's engine): per token
bucket, SLO attainment and throughput as a function of the request rate per replica. Load is spread over
ready replicas in proportion to their SLO capacity; what exceeds the fleet's throughput queues (and misses
the SLO); a replica asked for serves only after the start-up time.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field

from headway.autoscaler.capacity import Bucket, BucketCapacity, GpuCapacity, mixture_quantile

HOLD_S = 60.0
"""The gateway holds a request this long for want of capacity, then answers 503 (a miss either way)."""
MAX_NUM_SEQS = 256


@dataclass
class Gpu:
    """One GPU type as the trace's engines behave: the profile, slowed by `slowdown`."""

    name: str
    cost: float
    cap: GpuCapacity
    slowdown: float = 1.0
    kv_tokens: int = 0
    _buckets: dict[Bucket, BucketCapacity] = field(default_factory=dict, repr=False)

    def bucket(self, b: Bucket) -> BucketCapacity:
        if b not in self._buckets:
            self._buckets[b] = self.cap.bucket(b)
        return self._buckets[b]

    def serves(self, b: Bucket) -> bool:
        """Whether one replica meets the SLO for this bucket at any rate (an L4 cannot prefill 4096 tokens
        within a 1 s TTFT)."""
        return self.slo_rps(b) > 0

    def slo_rps(self, b: Bucket) -> float:
        """Requests/s one replica serves within the SLO, on the trace's (possibly slower) engines."""
        return self.bucket(b).max_rps / self.slowdown

    def at(self, b: Bucket, rps: float) -> tuple[float, float, float, float]:
        """(attainment, throughput limit, ttft, itl) of one replica receiving `rps` of bucket b."""
        c = self.bucket(b)
        pts = c.points
        x = rps * self.slowdown
        rates = [p.rps for p in pts]
        i = min(max(bisect.bisect_left(rates, x), 1), len(pts) - 1) if len(pts) > 1 else 0
        a, z = pts[i - 1] if i else pts[0], pts[i]
        w = 0.0 if z.rps == a.rps else min(1.0, max(0.0, (x - a.rps) / (z.rps - a.rps)))
        att = (a.attainment or 0) + w * ((z.attainment or 0) - (a.attainment or 0))
        if x > pts[-1].rps:
            att = 0.0
        if c.max_rps <= 0:
            att = 0.0
        # the engine sustains at least the rate that met the SLO (a short trial's completion rate underestimates it)
        sat = max(c.max_rps, *((p.throughput_rps or 0) for p in pts)) / self.slowdown
        return (
            att,
            sat,
            (a.ttft_s + w * (z.ttft_s - a.ttft_s)) * self.slowdown,
            (a.itl_s + w * (z.itl_s - a.itl_s)) * self.slowdown,
        )


@dataclass
class FleetState:
    replicas: dict[str, int]
    """Asked for (billed)."""
    starting: dict[str, list[float]] = field(default_factory=dict)
    """Per GPU, the times at which replicas asked for become ready."""
    queue: float = 0.0

    def ready(self, g: str, now: float) -> int:
        return self.replicas[g] - sum(1 for t in self.starting.get(g, []) if t > now)

    def pending(self, g: str, now: float) -> int:
        return self.replicas[g] - self.ready(g, now)

    def apply(self, want: Mapping[str, int], now: float, startup_s: float) -> bool:
        """Ask for `want` replicas per GPU; whether that changed anything (a scale event)."""
        changed = False
        for g, n in want.items():
            if n != self.replicas[g]:
                self.set(g, n, now, startup_s)
                changed = True
        return changed

    def set(self, g: str, n: int, now: float, startup_s: float) -> None:
        cur = self.replicas[g]
        starts = sorted(t for t in self.starting.get(g, []) if t > now)
        if n > cur:
            starts += [now + startup_s] * (n - cur)
        elif n < cur:
            drop = cur - n  # starting replicas go first
            starts = starts[: max(0, len(starts) - drop)]
        self.starting[g] = starts
        self.replicas[g] = n


@dataclass
class TickResult:
    met: float
    total: float
    per_replica: dict[str, tuple[float, float, float, float]]
    """Per GPU: (kv usage, waiting, ttft, itl) of one ready replica."""
    active: float


def serve(
    gpus: Mapping[str, Gpu],
    fleet: FleetState,
    rps: float,
    mix: Mapping[Bucket, float],
    now: float,
    dt: float,
    quantile: float = 0.9,
) -> TickResult:
    """One tick of the trace through the fleet: who serves what, what meets the SLO, what queues.

    Requests of a bucket go to the ready replicas that can serve it, in proportion to their SLO capacity
    (what a queue-depth-aware gateway converges to). A variant serves at most its saturated throughput
    (the profile's highest measured completion rate); the rest joins one FIFO queue, which drains into
    spare throughput later. A replica's latency for each bucket is read at its utilisation of SLO
    capacity over the whole mix it serves. Queued requests miss the SLO, and so does every new request while a queue
    remains; the queue holds at most `HOLD_S` of arrivals (the gateway's hold, then 503s).
    """
    ready = {g: fleet.ready(g, now) for g in fleet.replicas}
    loads: dict[str, dict[Bucket, float]] = {g: {} for g in ready}
    for b, share in mix.items():
        weights = {g: ready[g] * gpus[g].slo_rps(b) for g in ready if ready[g] > 0}
        if not any(weights.values()):
            weights = {g: float(ready[g]) for g in ready if ready[g] > 0}
        tot = sum(weights.values())
        for g, w in weights.items():
            loads[g][b] = rps * share * w / tot
    met_fresh = served_fresh = spare = 0.0
    per: dict[str, tuple[float, float, float, float]] = {}
    for g, r in ready.items():
        lam_g = sum(loads[g].values())
        if r == 0 or lam_g <= 0:
            if r:
                per[g] = (0.0, 0.0, 0.0, 0.0)
                spare += r * max((p.throughput_rps or 0) for p in gpus[g].cap.buckets[0].points) * dt
            continue
        gpu = gpus[g]
        met_g = inv_sat = conc = kv = 0.0
        latencies: list[tuple[float, float, float]] = []
        # every request on a replica sees the same busy engine: its utilisation of SLO capacity over the
        # whole mix, at which each bucket's latency is read (a bucket alone at its own small rate would
        # look idle however loaded the replica is)
        util = sum(lam / r / gpu.slo_rps(b) for b, lam in loads[g].items() if gpu.slo_rps(b) > 0)
        for b, lam in loads[g].items():
            att, sat, tt, il = gpu.at(b, util * gpu.slo_rps(b) if gpu.slo_rps(b) > 0 else lam / r)
            met_g += lam * att
            inv_sat += (lam / lam_g) / sat if sat > 0 else 0.0  # a prompt beyond the KV cache: refused at once
            latencies.append((lam, tt, il))
            c = lam / r * (tt + b[1] * il)
            conc += c
            kv += c * (b[0] + b[1] / 2)
        # what the engines' histograms show at the SLO's percentile: the mixture's, not the slowest bucket's
        ttft = mixture_quantile(((lam, tt) for lam, tt, _ in latencies), quantile)
        itl = mixture_quantile(((lam, il) for lam, _, il in latencies), quantile)
        throughput = r / inv_sat if inv_sat > 0 else 0.0
        fits = min(1.0, throughput / lam_g)
        met_fresh += met_g * fits * dt
        served_fresh += lam_g * fits * dt
        spare += max(0.0, throughput - lam_g) * dt
        running_cap = min(MAX_NUM_SEQS, gpu.kv_tokens / 600)
        waiting = max(0.0, conc - running_cap) + (1 - fits) * lam_g * dt / r
        per[g] = (min(1.0, kv / gpu.kv_tokens), waiting, ttft, itl)
    arrivals = rps * dt
    queue = max(0.0, fleet.queue + arrivals - served_fresh - spare)
    fleet.queue = min(queue, rps * HOLD_S)
    if fleet.queue >= 1:
        met_fresh = 0.0
    total_ready = max(1, sum(ready.values()))
    for g, (kv_use, waiting, ttft, itl) in per.items():
        per[g] = (1.0 if fleet.queue >= 1 else kv_use, waiting + fleet.queue / total_ready, ttft, itl)
    active = sum(c for c in (rps * (v[2] + 128 * v[3]) for v in per.values())) / max(1, len(per)) + fleet.queue
    return TickResult(met=met_fresh, total=arrivals, per_replica=per, active=active)
