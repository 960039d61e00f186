"""The fake node fleet: one YAML file, GPU labels/capacity/taints, loopback pod CIDRs."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from headway.api import GPU_PRODUCT_LABEL, GPU_RESOURCE
from headway.devenv.nodes import NodeFleet, load_fleet


def test_default_fleet_has_three_gpu_types_and_cpu_nodes() -> None:
    nodes = load_fleet().manifests()
    products = {n["metadata"]["labels"].get(GPU_PRODUCT_LABEL) for n in nodes} - {None}
    assert len(products) >= 3
    assert any(GPU_RESOURCE not in n["status"]["capacity"] for n in nodes), "control plane needs CPU-only nodes"


def test_every_node_gets_a_distinct_loopback_pod_cidr() -> None:
    nodes = load_fleet().manifests()
    cidrs = [ipaddress.ip_network(n["spec"]["podCIDR"]) for n in nodes]
    assert len(set(cidrs)) == len(cidrs)
    assert all(c.subnet_of(ipaddress.ip_network("127.0.0.0/8")) for c in cidrs)
    assert not any(a.overlaps(b) for i, a in enumerate(cidrs) for b in cidrs[i + 1 :])


def test_gpu_nodes_carry_capacity_label_and_taint() -> None:
    fleet = NodeFleet.model_validate({"groups": [{"name": "l4", "count": 2, "gpus": 4, "product": "NVIDIA-L4"}]})
    node = fleet.manifests()[1]
    assert node["metadata"]["name"] == "l4-1"
    assert node["status"]["capacity"][GPU_RESOURCE] == "4" == node["status"]["allocatable"][GPU_RESOURCE]
    assert node["metadata"]["labels"][GPU_PRODUCT_LABEL] == "NVIDIA-L4"
    assert node["spec"]["taints"] == [{"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}]


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        pytest.param([{"name": "g", "count": 1, "gpus": 8}], "needs a product", id="gpus-without-product"),
        pytest.param([{"name": "g", "count": 1}, {"name": "g", "count": 1}], "repeat", id="duplicate-group"),
        pytest.param(
            [{"name": "g", "count": 64}] * 0 + [{"name": f"g{i}", "count": 64} for i in range(4)],
            "do not fit",
            id="too-many-nodes",
        ),
        pytest.param([], "at least 1", id="empty"),
        pytest.param([{"name": "Bad_Name", "count": 1}], "pattern", id="bad-name"),
    ],
)
def test_bad_fleet_files_are_rejected_with_the_reason(groups: list[dict], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        NodeFleet.model_validate({"groups": groups})
