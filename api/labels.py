"""Label, annotation and resource names: the one place these strings are spelled."""

GROUP = "inference.headway.dev"

POOL_LABEL = f"{GROUP}/pool"
"""On every child of a ModelPool: the pool's name."""

VARIANT_LABEL = f"{GROUP}/variant"
"""On every per-variant child: the variant's name."""

ENGINE_LABEL = f"{GROUP}/engine"
"""On engine pods; value is the engine kind (`vllm`). The dev runner starts processes for these pods."""

ENGINE_RUNTIME_ANNOTATION = f"{GROUP}/engine-runtime"
"""Optional per-pod choice, for the dev runner only, of what serves a `vllm` engine pod: `sim` or `vllm`."""

CONTROL_PLANE_LABEL = "app.kubernetes.io/part-of"
CONTROL_PLANE_VALUE = "headway"
"""Pods of headway's own control plane carry CONTROL_PLANE_LABEL=CONTROL_PLANE_VALUE."""

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
"""The NVIDIA GPU feature discovery label that names a node's GPU model."""
