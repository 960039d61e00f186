"""Generate headway's CustomResourceDefinitions (ModelPool, ModelRoute) from the pydantic models (the
single source).

`python -m headway.api.crd modelpools > deploy/crds/inference.headway.dev_modelpools.yaml` (and
`modelroutes`) writes one; a unit test fails when the committed files and the models drift. Pydantic's
JSON Schema of a spec (`headway.api.modelpool`, `headway.api.modelroute`) and of its status is turned into a Kubernetes
structural schema: references inlined, optional fields unwrapped, free-form maps marked
`x-kubernetes-preserve-unknown-fields`, numeric exclusive bounds turned into OpenAPI 3.0 booleans, and
the keyed lists (variants, conditions) made maps so the API server rejects duplicate keys itself.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel

from headway.api import modelroute
from headway.api.labels import GROUP
from headway.api.modelpool import KIND, MAX_NAME_LENGTH, PLURAL, SHORT_NAMES, VERSION, ModelPoolSpec
from headway.api.status import ModelPoolStatus

_KEEP = {
    "type",
    "description",
    "default",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "format",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "nullable",
}


class SchemaError(ValueError):
    """A pydantic construct that has no structural-schema equivalent."""


def structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return structural(merged, defs)
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s.get("type") != "null"]
        if len(options) != 1:
            raise SchemaError(f"unions are not structural: {schema['anyOf']}")
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        if rest.get("default", 0) is None:
            rest.pop("default")
        return structural({**options[0], **rest}, defs)
    # copies, so a definition used twice (a condition in two lists) is not one shared YAML anchor
    out = {k: copy.deepcopy(v) for k, v in schema.items() if k in _KEEP}
    if "description" in out:  # a model's docstring: one line in the YAML, as the field descriptions are
        out["description"] = " ".join(out["description"].split())
    if "const" in schema:
        out["enum"] = [schema["const"]]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in schema:
            out[plain] = schema[bound]
            out[bound] = True
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if props:
            out["properties"] = {name: structural(p, defs) for name, p in props.items()}
            required = [r for r in schema.get("required", []) if "default" not in props[r]]
            if required:
                out["required"] = required
            for name, prop in out["properties"].items():
                # An omitted sub-object defaults to {} so the API server fills in its fields' defaults
                # (and CEL rules can rely on them being there); one whose default is None (`X | None =
                # None`, as in the status) stays absent until a writer sets it.
                absent = props[name].get("default", {}) is None
                if name not in required and not absent and prop.get("type") == "object" and "properties" in prop:
                    prop.setdefault("default", {})
        elif isinstance(extra, dict) and extra:
            out["additionalProperties"] = structural(extra, defs)
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        out["items"] = structural(schema.get("items", {}), defs)
    elif kind is None and not out.get("enum"):
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(raw, raw.get("$defs", {}))


def spec_schema() -> dict[str, Any]:
    schema = _schema(ModelPoolSpec)
    variants = schema["properties"]["variants"]
    variants["x-kubernetes-list-type"] = "map"
    variants["x-kubernetes-list-map-keys"] = ["name"]
    return schema


def status_schema() -> dict[str, Any]:
    """Generated like the spec's; where the status is open-ended (a decision's inputs and terms, the
    autoscaler's memory) the models say `dict[str, Any]` and the schema preserves unknown fields."""
    return _schema(ModelPoolStatus)


@dataclass(frozen=True)
class CrdKind:
    """What differs between headway's resources' CRDs."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    description: str
    source: str
    """The module the schema comes from (named in the generated file's header)."""
    spec: Callable[[], dict[str, Any]]
    status: Callable[[], dict[str, Any]]
    columns: tuple[dict[str, str], ...]
    root_rules: tuple[dict[str, str], ...] = ()

    @property
    def file(self) -> str:
        return f"{GROUP}_{self.plural}.yaml"


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
MODELPOOL = CrdKind(
    KIND,
    PLURAL,
    SHORT_NAMES,
    "A model served by a pool of vLLM engines on one or more GPU variants.",
    "headway.api.modelpool",
    spec_schema,
    status_schema,
    (
        {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
        {"name": "Replicas", "type": "string", "jsonPath": ".status.replicas", "description": "ready/desired"},
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {"name": "SLO", "type": "string", "jsonPath": ".status.sloStatus"},
        _AGE,
    ),
    (
        {
            "rule": f"self.spec.variants.all(v, size(self.metadata.name) + size(v.name) <= {MAX_NAME_LENGTH})",
            "message": f"metadata.name plus a variant name must be at most {MAX_NAME_LENGTH} characters",
        },
    ),
)
MODELROUTE = CrdKind(
    modelroute.KIND,
    modelroute.PLURAL,
    modelroute.SHORT_NAMES,
    "A virtual model name whose requests go to one of several ModelPools, chosen per request by readable rules "
    "over signals, by cost and SLO, and by feedback.",
    "headway.api.modelroute",
    lambda: _schema(modelroute.ModelRouteSpec),
    lambda: _schema(modelroute.ModelRouteStatus),
    (
        {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
        {"name": "Mode", "type": "string", "jsonPath": ".spec.rollout.mode"},
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        _AGE,
    ),
)
KINDS = {k.plural: k for k in (MODELPOOL, MODELROUTE)}


def build_crd(kind: CrdKind = MODELPOOL) -> dict[str, Any]:
    root: dict[str, Any] = {
        "type": "object",
        "description": kind.description,
        "required": ["spec"],
    }
    if kind.root_rules:
        root["x-kubernetes-validations"] = [dict(r) for r in kind.root_rules]
    root["properties"] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": kind.spec(),
        "status": kind.status(),
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": list(kind.short_names),
                "categories": ["headway"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [dict(c) for c in kind.columns],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render(kind: CrdKind = MODELPOOL) -> str:
    return f"# Generated from {kind.source} by `python -m headway.api.crd {kind.plural}`; do not edit.\n" + (
        yaml.safe_dump(build_crd(kind), sort_keys=False, width=120)
    )


if __name__ == "__main__":
    wanted = sys.argv[1] if len(sys.argv) > 1 else PLURAL
    if wanted not in KINDS:
        sys.exit(f"error: unknown resource {wanted!r}; one of: {', '.join(KINDS)}")
    sys.stdout.write(render(KINDS[wanted]))
