"""The model configuration every resource model shares (spec and status alike)."""

from __future__ import annotations

from pydantic import AliasGenerator, ConfigDict
from pydantic.alias_generators import to_camel

CAMEL_CASE = ConfigDict(
    frozen=True,
    extra="forbid",
    populate_by_name=True,
    alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
)
"""Immutable, closed to unknown fields, camelCase on the wire (Kubernetes style), snake_case in Python."""
