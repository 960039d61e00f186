"""The autoscaler's settings, validated once at start."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


class AutoscalerConfig(BaseModel, frozen=True, extra="forbid"):
    namespaces: tuple[str, ...] = Field((), description="Pools in these namespaces only (empty: all).")
    prometheus_url: str | None = Field(None, description="Read metrics from Prometheus instead of scraping.")
    gateway_urls: tuple[str, ...] = Field((), description="Gateways to scrape for held requests (direct mode).")
    interval_s: float = Field(15.0, gt=0, le=3600, description="Seconds between decisions.")
    profiles: Path = Field(description="Capacity profile JSON (from `headway profile`).")
    host: str = Field("127.0.0.1", description="Address of /metrics and /healthz.")
    metrics_port: int = Field(9465, ge=0, le=65535, description="Port of /metrics and /healthz (0: off).")
    leader_election_namespace: str = Field("headway-system", description="Namespace of the leader-election Lease.")
    lease_duration_s: float = Field(15.0, gt=0, description="Seconds a leader's Lease lasts without renewal.")
    identity: str = Field("", description="Name in the Lease (default: host name + process).")
    gpu_budget: int | None = Field(None, ge=1, description="Most GPUs one pool may use (default: no limit).")
    forecaster: Literal["constant", "trend", "arima"] = Field(
        "constant", description="Demand forecast one provisioning time ahead (headway.autoscaler.forecast)."
    )
    headroom: float = Field(
        1.0,
        ge=1.0,
        le=4.0,
        description="SLO capacity kept over demand (profiles already hold the SLO at its attainment).",
    )
