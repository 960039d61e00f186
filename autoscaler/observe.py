"""What the autoscaler sees of one pool: its variants' replicas and pods from the API server, and the
observation the policy decides on, built from the metrics source's reading."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from kubernetes import client as k8s

from headway.api.labels import POOL_LABEL, VARIANT_LABEL
from headway.api.modelpool import ModelPool
from headway.autoscaler.capacity import Bucket, CapacityProfile
from headway.autoscaler.policy import Observation, VariantState
from headway.autoscaler.provisioning import Provisioning, variant_provisioning
from headway.autoscaler.slo import Attainment, attainment, quantile
from headway.autoscaler.sources import EnginePod, PoolMetrics, mix_of


def _plain(api: k8s.ApiClient, obj: Any) -> dict[str, Any]:
    return api.sanitize_for_serialization(obj)


def _pod_ready(p: Mapping[str, Any]) -> bool:
    if p["metadata"].get("deletionTimestamp"):
        return False
    conds = (p.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def _unschedulable(p: Mapping[str, Any]) -> bool:
    conds = (p.get("status") or {}).get("conditions") or []
    return any(
        c["type"] == "PodScheduled" and c["status"] == "False" and c.get("reason") == "Unschedulable" for c in conds
    )


def _engine_url(p: Mapping[str, Any]) -> str | None:
    ip = (p.get("status") or {}).get("podIP")
    for c in p["spec"]["containers"]:
        for port in c.get("ports") or []:
            if port.get("name") == "http":
                return f"http://{ip}:{port['containerPort']}" if ip else None
    return None


def variant_states(
    api: k8s.ApiClient, profile: CapacityProfile, pool: ModelPool, known: Mapping[str, Provisioning] | None = None
) -> tuple[list[VariantState], list[EnginePod], dict[str, Provisioning]]:
    """Replicas asked of each variant's Deployment, its ready/pending/unschedulable pods, how long
    its Ready pods took to provision (else what `known` remembers), and the URLs of the ready
    engines."""
    sel = f"{POOL_LABEL}={pool.name}"
    deps = [
        _plain(api, d) for d in k8s.AppsV1Api(api).list_namespaced_deployment(pool.namespace, label_selector=sel).items
    ]
    pods = [_plain(api, p) for p in k8s.CoreV1Api(api).list_namespaced_pod(pool.namespace, label_selector=sel).items]
    replicas = {d["metadata"]["labels"].get(VARIANT_LABEL): d["spec"].get("replicas") or 0 for d in deps}
    engines: list[EnginePod] = []
    out = []
    names = {v.name for v in pool.spec.variants}
    provisioning = {k: p for k, p in (known or {}).items() if k in names}
    for v in pool.spec.variants:
        mine = [p for p in pods if p["metadata"]["labels"].get(VARIANT_LABEL) == v.name]
        live = [p for p in mine if not p["metadata"].get("deletionTimestamp")]
        ready = [p for p in live if _pod_ready(p)]
        pending = [p for p in live if (p.get("status") or {}).get("phase") == "Pending"]
        for p in ready:
            url = _engine_url(p)
            if url:
                engines.append(EnginePod(p["metadata"]["name"], v.name, url))
        if (prov := variant_provisioning(ready)) is not None:
            provisioning[v.name] = prov
        seen = provisioning.get(v.name)
        out.append(
            VariantState(
                name=v.name,
                replicas=int(replicas.get(v.name, 0)),
                ready=len(ready),
                pending=len(pending),
                unschedulable=sum(1 for p in pending if _unschedulable(p)),
                gpus_per_replica=v.gpus_per_replica,
                cost_per_gpu_hour_usd=v.cost_per_gpu_hour_usd,
                min_replicas=v.min_replicas,
                max_replicas=v.max_replicas,
                capacity=profile.for_variant(v.gpu_product, v.gpus_per_replica),
                provisioning_s=seen.total_s if seen else None,
            )
        )
    return out, engines, provisioning


def observation(
    pool: ModelPool,
    variants: Sequence[VariantState],
    m: PoolMetrics | None,
    stale: str,
    now: float,
    buckets: Sequence[Bucket],
) -> tuple[list[VariantState], Observation, Attainment | None]:
    """The variants with their observed latency at the SLO's percentiles, the policy's observation, and
    the pool's SLO attainment; `m` is None (and `stale` says why) when the metrics could not be read."""
    slo = pool.spec.slo
    if m is not None:
        variants = [
            replace(
                v,
                observed_ttft_s=quantile(m.variant_ttft.get(v.name) or {}, slo.ttft_percentile / 100),
                observed_itl_s=quantile(m.variant_itl.get(v.name) or {}, slo.itl_percentile / 100),
            )
            for v in variants
        ]
    att = (
        attainment(m.ttft, m.itl, slo.ttft_seconds, slo.itl_seconds, slo.ttft_percentile, slo.itl_percentile)
        if m
        else None
    )
    obs = Observation(
        time=now,
        fresh=not stale,
        rps=m.rps if m else 0.0,
        mix=mix_of(m, buckets) if m else {},
        held_requests=m.held if m else 0.0,
        in_flight=(m.waiting + m.running + m.gateway_in_flight) if m else 0.0,
        attainment=att.value if att else None,
        stale_reason=stale,
        ttft_quantile=slo.ttft_percentile / 100,
        itl_quantile=slo.itl_percentile / 100,
    )
    return list(variants), obs, att
