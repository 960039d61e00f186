"""The ModelPool schema and the names every component agrees on (labels, annotations, metric names).

`headway.api` imports no other headway package, so any component may import it.
"""

from headway.api.errors import ApiError, HeadwayError
from headway.api.labels import (
    CONTROL_PLANE_LABEL,
    CONTROL_PLANE_VALUE,
    ENGINE_LABEL,
    ENGINE_RUNTIME_ANNOTATION,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    GROUP,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    POOL_LABEL,
    VARIANT_LABEL,
)

__all__ = [
    "CONTROL_PLANE_LABEL",
    "CONTROL_PLANE_VALUE",
    "ENGINE_LABEL",
    "ENGINE_RUNTIME_ANNOTATION",
    "GPU_PRODUCT_LABEL",
    "GPU_RESOURCE",
    "GROUP",
    "MANAGED_BY_LABEL",
    "MANAGED_BY_VALUE",
    "POOL_LABEL",
    "VARIANT_LABEL",
    "ApiError",
    "HeadwayError",
]
