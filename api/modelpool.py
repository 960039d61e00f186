"""The ModelPool resource (inference.headway.dev/v1alpha1): the one definition of its schema and defaults.

The CRD's OpenAPI schema is generated from these models (`headway.api.crd`), and the same rules are
enforced twice: by the API server at admission (OpenAPI bounds plus the CEL rules attached here) and by
pydantic when a component reads a pool, so a pool that got in some other way is still refused with the
same message.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from headway.api.camel import CAMEL_CASE
from headway.api.labels import GROUP
from headway.api.status import ModelPoolStatus

VERSION = "v1alpha1"
KIND = "ModelPool"
PLURAL = "modelpools"
SHORT_NAMES = ("mp",)
API_VERSION = f"{GROUP}/{VERSION}"
MAX_NAME_LENGTH = 52
"""Pool name + '-' + variant name must leave room for the ReplicaSet and pod suffixes in 63 characters."""

RoutingStrategy = Literal["kv-aware", "approx-prefix", "least-request", "round-robin", "random"]
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def _cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


class _Spec(BaseModel):
    model_config = CAMEL_CASE


RESERVED_ENGINE_ARGS = (
    "--host",
    "--port",
    "--kv-events-config",
    "--served-model-name",
    "--tensor-parallel-size",
    "-tp",
    "--max-model-len",
    "--tokenizer",
)
"""Engine flags headway sets from the pool (its port, KV events, model name, GPUs, model fields): given again
in engineArgs they would win (vLLM reads the last one) and silently break routing, events or placement.
vLLM also reads them with underscores and as `--flag=value`, so both are compared."""
_RESERVED_MESSAGE = (
    f"engineArgs may not set {', '.join(RESERVED_ENGINE_ARGS)}: headway sets them from the pool "
    "(model.name, model.maxModelLen, model.tokenizer, variants[].gpusPerReplica and the operator's engine port)"
)


def _reserved_flag(arg: str) -> bool:
    return arg.replace("_", "-").split("=")[0] in RESERVED_ENGINE_ARGS


class ModelSpec(_Spec):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.engineArgs) || self.engineArgs.all(a, !(a.replace('_', '-').split('=')[0] in ["
                    + ", ".join(f"'{f}'" for f in RESERVED_ENGINE_ARGS)
                    + "]))",
                    _RESERVED_MESSAGE,
                    ".engineArgs",
                ),
            ]
        }
    )
    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:-]*$",
        description="Served model name clients send in the `model` field.",
    )
    source: str = Field(
        min_length=1,
        max_length=512,
        description="Weights: a Hugging Face id, an absolute path, or pvc://<claim>/<path>.",
    )
    tokenizer: str | None = Field(None, max_length=512, description="Tokenizer id or path (default: source).")
    max_model_len: int | None = Field(None, ge=16, le=1_048_576, description="Prompt + output limit in tokens.")
    engine_args: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list,
        max_length=64,
        description="Extra vLLM arguments, appended after the ones headway sets (which they may not repeat).",
    )
    image: str = Field("vllm/vllm-openai:v0.32.0", min_length=1, description="Engine container image.")
    env: list[dict[str, Any]] = Field(default_factory=list, description="Extra engine environment (EnvVar objects).")

    @model_validator(mode="after")
    def _no_reserved_engine_args(self) -> ModelSpec:
        if any(_reserved_flag(a) for a in self.engine_args):
            raise ValueError(f"spec.model.engineArgs: {_RESERVED_MESSAGE}")
        return self


class Variant(_Spec):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.minReplicas <= self.maxReplicas",
                    "minReplicas must be less than or equal to maxReplicas",
                    ".minReplicas",
                ),
                _cel(
                    "!has(self.replicas) || (self.replicas >= self.minReplicas && self.replicas <= self.maxReplicas)",
                    "replicas must be within [minReplicas, maxReplicas]",
                    ".replicas",
                ),
            ]
        }
    )
    name: str = Field(min_length=1, max_length=20, pattern=DNS_LABEL, description="Variant name (DNS label).")
    gpu_product: str = Field(min_length=1, max_length=63, description="nvidia.com/gpu.product node label value.")
    gpus_per_replica: int = Field(1, ge=1, le=8, description="GPUs per replica (vLLM tensor parallel size).")
    cost_per_gpu_hour_usd: float = Field(0.0, ge=0, description="Price of one GPU-hour, for cost-aware decisions.")
    replicas: int | None = Field(None, ge=0, le=1000, description="Replicas when autoscaling is off (default min).")
    min_replicas: int = Field(0, ge=0, le=1000)
    max_replicas: int = Field(4, ge=0, le=1000)
    node_selector: dict[str, str] = Field(default_factory=dict, description="Extra node labels to require.")
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="Extra tolerations.")
    resources: dict[str, Any] = Field(default_factory=dict, description="Extra CPU/memory requests and limits.")

    @model_validator(mode="after")
    def _bounds(self) -> Variant:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"variant {self.name}: minReplicas must be less than or equal to maxReplicas")
        if self.replicas is not None and not self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(f"variant {self.name}: replicas must be within [minReplicas, maxReplicas]")
        return self

    @property
    def configured_replicas(self) -> int:
        return self.replicas if self.replicas is not None else max(self.min_replicas, 1 if self.max_replicas else 0)


class Slo(_Spec):
    ttft_seconds: float = Field(0.5, gt=0, le=600, description="Time-to-first-token target.")
    ttft_percentile: float = Field(90, gt=0, lt=100, description="Percentile the TTFT target applies to.")
    itl_seconds: float = Field(0.05, gt=0, le=60, description="Inter-token latency target.")
    itl_percentile: float = Field(90, gt=0, lt=100)
    attainment: float = Field(0.99, gt=0, le=1, description="Fraction of requests that must meet both targets.")


class ScorerWeights(_Spec):
    """Weights of the presets' scorers (gateway/routing/profiles.py maps each to its plugin). 0 removes a
    scorer's vote."""

    prefix: float = Field(10.0, ge=0, le=100, description="Precise prefix-cache match from the KV index.")
    approx_prefix: float | None = Field(
        None, ge=0, le=100, description="approx-prefix: prefix match from routing history (default: the prefix weight)."
    )
    queue: float = Field(2.0, ge=0, le=100, description="Waiting-queue depth.")
    kv_utilization: float = Field(2.0, ge=0, le=100, description="Engine KV-cache usage.")
    in_flight: float = Field(1.0, ge=0, le=100, description="Requests in flight from this gateway.")
    prefill_backlog: float = Field(
        2.0,
        ge=0,
        le=100,
        description="Uncached prompt tokens queued ahead of the request on the endpoint plus its own (predicted TTFT).",
    )
    cost: float = Field(
        0.0, ge=0, le=100, description="Price of the endpoint's variant (costPerGpuHourUsd × gpusPerReplica)."
    )


class Routing(_Spec):
    strategy: RoutingStrategy = Field("kv-aware", description="Routing preset.")
    weights: ScorerWeights = Field(
        default_factory=ScorerWeights, description="Scorer weights of kv-aware and approx-prefix."
    )


class Autoscaling(_Spec):
    enabled: bool = Field(False, description="Let the autoscaler set replicas within each variant's bounds.")
    scale_to_zero: bool = Field(False, description="Allow 0 replicas in total after idleWindowSeconds.")
    scale_down_window_seconds: int = Field(300, ge=0, le=86400, description="Stabilisation before scale-down.")
    panic_window_seconds: int = Field(10, ge=1, le=3600, description="Short window that detects bursts.")
    idle_window_seconds: int = Field(600, ge=0, le=86400, description="Idle time before scaling to zero.")
    max_scale_up_step: int = Field(4, ge=1, le=100, description="Most replicas added per variant per decision.")


class EndpointPickerRef(_Spec):
    service: str = Field(
        "headway-epp",
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL,
        description="Service of headway's Endpoint Picker in the pool's namespace (the chart's epp.namespaces).",
    )
    port: int = Field(9002, ge=1, le=65535, description="Its ext_proc gRPC port.")
    failure_mode: Literal["FailOpen", "FailClose"] = Field(
        "FailClose",
        description="When the Endpoint Picker does not answer: FailClose, the Gateway refuses the request; "
        "FailOpen, the Gateway picks an endpoint itself.",
    )


class InferencePoolSpec(_Spec):
    enabled: bool = Field(
        True,
        description="Create an InferencePool (inference.networking.k8s.io/v1) for this pool when the cluster "
        "serves that API, so a Gateway with the Inference Extension routes to it through headway's picker.",
    )
    endpoint_picker: EndpointPickerRef = Field(default_factory=EndpointPickerRef)


class ModelPoolSpec(_Spec):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.autoscaling.enabled || self.variants.exists(v, !has(v.replicas) || v.replicas > 0) "
                    "|| self.variants.all(v, v.maxReplicas == 0)",
                    "with autoscaling off, at least one variant needs replicas > 0",
                    ".variants",
                ),
            ]
        }
    )
    model: ModelSpec
    variants: list[Variant] = Field(min_length=1, max_length=8, description="GPU variants (heterogeneous pool).")
    slo: Slo = Field(default_factory=Slo)
    routing: Routing = Field(default_factory=Routing)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    inference_pool: InferencePoolSpec = Field(default_factory=InferencePoolSpec)

    @model_validator(mode="after")
    def _unique_variants(self) -> ModelPoolSpec:
        names = [v.name for v in self.variants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"spec.variants: duplicate variant names {dupes}")
        return self


class ModelPool(BaseModel):
    """A pool as read from the API: name, namespace, generation, and the validated spec and status."""

    model_config = ConfigDict(frozen=True)
    name: str
    namespace: str
    uid: str = ""
    generation: int = 0
    spec: ModelPoolSpec
    status: ModelPoolStatus = Field(default_factory=ModelPoolStatus)

    @classmethod
    def from_body(cls, body: Any) -> ModelPool:
        """Validates spec and status in one go, so an error's location starts with `spec` or `status`."""
        meta = body["metadata"]
        return cls.model_validate(
            {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
                "generation": meta.get("generation", 0),
                "spec": dict(body["spec"]),
                "status": dict(body.get("status") or {}),
            }
        )
