"""Capacity profiles: the request rate one replica of a GPU type serves within the SLO, per token-length bucket.

A profile file (JSON, written by `headway profile`) holds, for each GPU type and tensor-parallel size, a
grid of (input tokens, output tokens) buckets; for each bucket the highest request rate that met the SLO
and the latency measured at the rates swept on the way. The autoscaler reads capacity from it and
corrects it online: when a variant is observed slower than the profile predicts at its current load, its
capacity shrinks by that ratio, at most halved so one noisy window cannot collapse it. An engine observed
faster than profiled earns no extra capacity: below saturation latency says little about the rate at
which the SLO would break, and over-trusting it is the costly mistake.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from headway.autoscaler.errors import ConfigError

CORRECTION_MIN = 1.0
CORRECTION_MAX = 2.0

Bucket = tuple[int, int]
"""(input tokens, output tokens) of a representative request."""

Mix = Mapping[Bucket, float]
"""Share of requests per bucket; shares sum to 1."""


class LatencyPoint(BaseModel, frozen=True, extra="forbid"):
    rps: float = Field(ge=0)
    ttft_s: float = Field(ge=0, description="TTFT at the SLO's percentile.")
    itl_s: float = Field(ge=0, description="ITL at the SLO's percentile.")
    attainment: float | None = Field(None, ge=0, le=1, description="Share of requests that met the SLO.")
    throughput_rps: float | None = Field(None, ge=0, description="Completed requests per second.")


class BucketCapacity(BaseModel, frozen=True, extra="forbid"):
    input_tokens: int = Field(ge=1)
    output_tokens: int = Field(ge=1)
    max_rps: float = Field(ge=0, description="Highest rate per replica that met the SLO; 0 when none did.")
    points: list[LatencyPoint] = Field(default_factory=list, description="Swept rates, ascending.")

    def predicted(self, rps: float) -> LatencyPoint | None:
        """Latency the profile expects at `rps`, interpolated between swept rates (None: nothing swept)."""
        if not self.points:
            return None
        rates = [p.rps for p in self.points]
        i = bisect.bisect_left(rates, rps)
        if i == 0:
            return self.points[0]
        if i >= len(rates):
            return self.points[-1]
        a, b = self.points[i - 1], self.points[i]
        w = (rps - a.rps) / (b.rps - a.rps) if b.rps > a.rps else 0.0
        return LatencyPoint(
            rps=rps, ttft_s=a.ttft_s + w * (b.ttft_s - a.ttft_s), itl_s=a.itl_s + w * (b.itl_s - a.itl_s)
        )


class GpuCapacity(BaseModel, frozen=True, extra="forbid"):
    gpu: str = Field(min_length=1, description="GPU type; matches a variant whose gpuProduct contains it.")
    tensor_parallel: int = Field(1, ge=1)
    cost_per_hour_usd: float = Field(0.0, ge=0, description="Price of one GPU (the variant's own price wins).")
    buckets: list[BucketCapacity] = Field(min_length=1)
    simulator: dict[str, str | float | int] | None = Field(
        None, description="The simulator's GPU profile that was swept (absent when an engine was)."
    )

    def bucket(self, b: Bucket) -> BucketCapacity:
        """The profiled bucket nearest to `b` in log-token space (lengths matter by ratio, not difference)."""
        return min(
            self.buckets,
            key=lambda c: abs(math.log(c.input_tokens / b[0])) + abs(math.log(c.output_tokens / b[1])),
        )

    def replica_rps(self, mix: Mix) -> float:
        """Rate one replica sustains for this mix: each request uses 1/max_rps of a replica-second, so the
        mix's rate is the harmonic mean. An infeasible bucket (max_rps 0) with any share makes it 0."""
        load = 0.0
        for b, share in mix.items():
            if share <= 0:
                continue
            cap = self.bucket(b).max_rps
            if cap <= 0:
                return 0.0
            load += share / cap
        return 1.0 / load if load > 0 else 0.0


class Slo(BaseModel, frozen=True, extra="forbid"):
    ttft_s: float
    ttft_percentile: float
    itl_s: float
    itl_percentile: float
    attainment: float = Field(0.99, gt=0, le=1, description="Share of requests that must meet both targets.")


class CapacityProfile(BaseModel, frozen=True, extra="forbid"):
    model: str
    source: str = Field(description="What was swept: the simulator's latency model, or an engine URL.")
    slo: Slo
    gpus: list[GpuCapacity] = Field(min_length=1)

    def for_variant(self, gpu_product: str, gpus_per_replica: int) -> GpuCapacity | None:
        """The entry whose GPU name appears in the variant's gpuProduct (case-insensitive), same TP size."""
        product = gpu_product.upper()
        matches = [g for g in self.gpus if g.gpu.upper() in product and g.tensor_parallel == gpus_per_replica]
        return max(matches, key=lambda g: len(g.gpu)) if matches else None

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(self.model_dump(), indent=1) + "\n")


def load_profile(path: Path) -> CapacityProfile:
    """Read a profile file; any problem is one line naming the file."""
    try:
        return CapacityProfile.model_validate(json.loads(path.read_text()))
    except OSError as e:
        raise ConfigError(f"--profiles {path}: {e.strerror}") from None
    except (ValueError, ValidationError) as e:
        raise ConfigError(f"--profiles {path}: {str(e).splitlines()[0]}") from None


def mixture_quantile(latencies: Iterable[tuple[float, float]], q: float) -> float:
    """The q-quantile of a pool's latency from (share of requests, latency at q) per bucket: the latency of
    the bucket at which the buckets' shares, slowest first, pass 1 − q. A bucket smaller than that tail
    cannot set the pool's percentile on its own; a bigger one does."""
    items = sorted(((lat, share) for share, lat in latencies if share > 0), reverse=True)
    total = sum(share for _, share in items)
    if not items or total <= 0:
        return 0.0
    tail = 0.0
    for lat, share in items:
        tail += share / total
        if tail > 1 - q + 1e-12:
            return lat
    return items[-1][0]


def correction(observed_s: float | None, predicted_s: float | None) -> float:
    """Observed/predicted latency, clamped to [1, 2]; 1 when either side is unknown."""
    if not observed_s or not predicted_s:
        return 1.0
    return min(CORRECTION_MAX, max(CORRECTION_MIN, observed_s / predicted_s))
