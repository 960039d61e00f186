"""The fake node fleet: loaded from one YAML file, turned into Node manifests kwok manages."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, model_validator

from headway.api import GPU_PRODUCT_LABEL, GPU_RESOURCE

DEFAULT_NODES_FILE = Path(__file__).with_name("nodes.yaml")
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_ANNOTATION_SELECTOR = f"{KWOK_ANNOTATION}=fake"
NODE_GROUP_LABEL = "headway.dev/node-group"
POD_CIDR_OCTET_ENV = "HEADWAY_POD_CIDR_OCTET"


class NodeGroup(BaseModel, frozen=True, extra="forbid"):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description="Node name prefix.")
    count: int = Field(ge=1, le=64)
    gpus: int = Field(0, ge=0, description="nvidia.com/gpu capacity of each node.")
    product: str | None = Field(None, description="nvidia.com/gpu.product label value.")
    gpu_memory_mib: int | None = Field(None, ge=1)
    cpu: str = "32"
    memory: str = "128Gi"
    pods: int = Field(110, ge=1)
    instance_type: str | None = None

    @model_validator(mode="after")
    def _gpu_fields_agree(self) -> NodeGroup:
        if self.gpus and not self.product:
            raise ValueError(f"node group {self.name}: gpus > 0 needs a product")
        return self


class NodeFleet(BaseModel, frozen=True, extra="forbid"):
    pod_cidr_octet: int = Field(1, ge=1, le=254)
    groups: list[NodeGroup] = Field(min_length=1)

    @model_validator(mode="after")
    def _fits_in_cidr(self) -> NodeFleet:
        total = sum(g.count for g in self.groups)
        if total > 254:
            raise ValueError(f"{total} nodes do not fit in 127.{self.pod_cidr_octet}.1-254.0/24")
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError(f"node group names repeat: {names}")
        return self

    def manifests(self) -> list[dict[str, Any]]:
        out, index = [], 0
        for group in self.groups:
            for i in range(group.count):
                index += 1
                out.append(build_node(group, f"{group.name}-{i}", f"127.{self.pod_cidr_octet}.{index}.0/24"))
        return out


def load_fleet(path: Path | None = None) -> NodeFleet:
    """Read a node fleet; HEADWAY_POD_CIDR_OCTET moves its pod IPs so two local clusters can run side by side."""
    path = path or DEFAULT_NODES_FILE
    data = yaml.safe_load(path.read_text())
    if octet := os.environ.get(POD_CIDR_OCTET_ENV):
        data["pod_cidr_octet"] = int(octet)
    return NodeFleet.model_validate(data)


def build_node(group: NodeGroup, name: str, pod_cidr: str) -> dict[str, Any]:
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        NODE_GROUP_LABEL: group.name,
    }
    if group.instance_type:
        labels["node.kubernetes.io/instance-type"] = group.instance_type
    capacity: dict[str, str] = {"cpu": group.cpu, "memory": group.memory, "pods": str(group.pods)}
    taints: list[dict[str, str]] = []
    if group.gpus:
        labels[GPU_PRODUCT_LABEL] = group.product or ""
        labels["nvidia.com/gpu.count"] = str(group.gpus)
        labels["nvidia.com/gpu.present"] = "true"
        if group.gpu_memory_mib:
            labels["nvidia.com/gpu.memory"] = str(group.gpu_memory_mib)
        capacity[GPU_RESOURCE] = str(group.gpus)
        taints.append({"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {KWOK_ANNOTATION: "fake"}},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr], "taints": taints},
        "status": {"capacity": capacity, "allocatable": capacity},
    }
