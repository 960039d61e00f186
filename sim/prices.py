"""GPU prices per GPU-hour, each set from one provider with its source, so a cost claim names its prices.

`aws` (the default) is on-demand list price in us-east-1: the instance price over its GPU count, from
skypilot-org/skypilot-catalog `catalogs/v6/aws/vms.csv` (H100: p5.48xlarge $98.32 / 8; A100-80: p4de.24xlarge
$40.966 / 8; A100-40: p4d.24xlarge $32.773 / 8; L40S: g6e.2xlarge; A10G: g5.xlarge; L4: g6.xlarge). AWS
announced cuts of up to 45% on P4/P5 in mid-2025, so its H100 list price is the dearest quoted anywhere.
`runpod` is a neo-cloud's on-demand price (RunPod's public price list as gathered in 2026-12: H100 $1.99,
A100-80 $1.99, L4 $0.44); GPU types it does not list are absent, not guessed. At such prices an H100 is
often the cheapest GPU per token, the opposite of AWS's list prices, which is why results come per set.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PriceSet:
    name: str
    source: str
    usd_per_gpu_hour: dict[str, float] = field(default_factory=dict)

    def price(self, gpu: str) -> float:
        if gpu not in self.usd_per_gpu_hour:
            raise ValueError(f"price set {self.name!r} has no price for {gpu} (it lists {', '.join(self)})")
        return self.usd_per_gpu_hour[gpu]

    def __iter__(self) -> Iterator[str]:
        return iter(self.usd_per_gpu_hour)


PRICE_SETS: dict[str, PriceSet] = {
    "aws": PriceSet(
        "aws",
        "AWS on-demand us-east-1 list price per GPU (skypilot-org/skypilot-catalog catalogs/v6/aws/vms.csv)",
        {"H100": 12.29, "A100": 5.12, "A100-40": 4.10, "L40S": 2.242, "A10G": 1.006, "L4": 0.8048},
    ),
    "runpod": PriceSet(
        "runpod",
        "RunPod on-demand price list (gathered 2026-12; GPU types it does not list are left out)",
        {"H100": 1.99, "A100": 1.99, "L4": 0.44},
    ),
}
DEFAULT_PRICE_SET = "aws"
