"""Capacity profiles swept from the simulator's latency model, and how the autoscaler reads them."""

from __future__ import annotations

import pytest

from headway.autoscaler.capacity import BucketCapacity, CapacityProfile, GpuCapacity, Slo, correction, load_profile
from headway.autoscaler.errors import ConfigError
from headway.profile import sweep_bucket
from headway.sim.profiles import PRESETS

SLO = Slo(ttft_s=0.5, ttft_percentile=90, itl_s=0.1, itl_percentile=90)


def test_a_bucket_no_rate_can_serve_within_the_slo_has_capacity_zero() -> None:
    # an L4 needs ~1.1 s to prefill 4096 tokens: over the 0.5 s TTFT target at any rate
    assert sweep_bucket(PRESETS["L4"], 4096, 16, SLO).max_rps == 0


def test_a_faster_gpu_serves_more_requests_within_the_same_slo() -> None:
    l4 = sweep_bucket(PRESETS["L4"], 256, 16, SLO)
    a100 = sweep_bucket(PRESETS["A100"], 256, 16, SLO)
    assert 0 < l4.max_rps < a100.max_rps
    below = [p for p in a100.points if p.rps <= a100.max_rps]
    assert all(p.ttft_s <= SLO.ttft_s and p.itl_s <= SLO.itl_s for p in below)


def test_a_mix_is_served_at_the_harmonic_mean_of_its_buckets() -> None:
    g = GpuCapacity(
        gpu="A100",
        buckets=[
            BucketCapacity(input_tokens=256, output_tokens=64, max_rps=30),
            BucketCapacity(input_tokens=4096, output_tokens=64, max_rps=2),
        ],
    )
    assert g.replica_rps({(256, 64): 0.5, (4096, 64): 0.5}) == pytest.approx(1 / (0.5 / 30 + 0.5 / 2))
    assert g.bucket((300, 70)).input_tokens == 256


def test_the_profile_matches_a_variant_by_gpu_product_and_tensor_parallel_size(tmp_path) -> None:
    g1 = GpuCapacity(gpu="H100", buckets=[BucketCapacity(input_tokens=1, output_tokens=1, max_rps=1)])
    g2 = g1.model_copy(update={"tensor_parallel": 2})
    p = CapacityProfile(model="m", source="test", slo=SLO, gpus=[g1, g2])
    path = tmp_path / "p.json"
    p.dump(path)
    loaded = load_profile(path)
    assert loaded.for_variant("NVIDIA-H100-80GB-HBM3", 2) == g2
    assert loaded.for_variant("NVIDIA-L4", 1) is None


def test_a_broken_profile_file_is_one_line_naming_the_file(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": 1}')
    with pytest.raises(ConfigError, match=r"--profiles .*bad.json") as e:
        load_profile(bad)
    assert "\n" not in str(e.value)


def test_correction_only_shrinks_capacity_and_at_most_halves_it() -> None:
    assert correction(0.075, 0.05) == pytest.approx(1.5)
    assert correction(0.15, 0.05) == 2.0
    assert correction(0.01, 0.05) == 1.0
    assert correction(None, 0.05) == 1.0
