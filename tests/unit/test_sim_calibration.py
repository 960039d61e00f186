"""The simulator's GPU presets against published measurements, and the committed capacity profiles against
the presets and physics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from headway.autoscaler.capacity import CapacityProfile
from headway.sim.calibration import POINTS, TOLERANCE, MeasuredPoint, replay
from headway.sim.prices import DEFAULT_PRICE_SET, PRICE_SETS
from headway.sim.profiles import PRESETS

PROFILES = sorted((Path(__file__).parents[2] / "bench" / "profiles").glob("*.json"))


@pytest.mark.parametrize("point", POINTS, ids=lambda p: p.name)
def test_the_simulator_replays_each_published_measurement_within_the_tolerance(point: MeasuredPoint) -> None:
    r = replay(point)
    assert abs(r.ratio - 1) <= TOLERANCE, f"{point.name}: simulated {r.simulated:.4g}, measured {point.measured:.4g}"


def _profiles() -> list[CapacityProfile]:
    assert PROFILES, "bench/profiles holds no profile"
    return [CapacityProfile.model_validate(json.loads(p.read_text())) for p in PROFILES]


def test_a_longer_prompt_never_raises_a_committed_profiles_capacity() -> None:
    """Only the prompt: a longer answer can raise req/s under a per-request ITL percentile, since a short
    answer's few gaps are more often all stalled behind other requests' prefill chunks (an L4's 256-token
    prefill step alone is over the 0.1 s ITL target)."""
    for profile in _profiles():
        for gpu in profile.gpus:
            cap = {(b.input_tokens, b.output_tokens): b.max_rps for b in gpu.buckets}
            for (i, o), rps in cap.items():
                for i2 in (i2 for (i2, o2) in cap if o2 == o and i2 > i):
                    assert cap[i2, o] <= rps, f"{gpu.gpu}: {i2}x{o} serves {cap[i2, o]} req/s, more than {i}x{o}: {rps}"


def test_the_committed_profiles_were_swept_from_the_current_presets_and_prices() -> None:
    for profile in _profiles():
        for gpu in profile.gpus:
            assert gpu.simulator is not None, f"{gpu.gpu}: the profile does not say which preset it swept"
            preset = PRESETS[gpu.gpu].scaled(gpu.tensor_parallel) if gpu.tensor_parallel > 1 else PRESETS[gpu.gpu]
            assert gpu.simulator == preset.model_dump(), f"{gpu.gpu}: preset changed; re-run `headway profile`"
            assert gpu.cost_per_hour_usd == PRICE_SETS[DEFAULT_PRICE_SET].price(gpu.gpu)


def test_a_price_set_names_the_gpu_it_does_not_price() -> None:
    with pytest.raises(ValueError, match="A10G"):
        PRICE_SETS["runpod"].price("A10G")
