"""The autoscaler's settings, validated once at start."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


class AutoscalerConfig(BaseModel, frozen=True, extra="forbid"):
    namespaces: tuple[str, ...] = Field((), description="Pools in these namespaces only (empty: all).")
    prometheus_url: str | None = Field(None, description="Read metrics from Prometheus instead of scraping.")
    gateway_urls: tuple[str, ...] = Field((), description="Gateways to scrape for held requests (direct mode).")
    interval_s: float = Field(15.0, gt=0, le=3600)
    profiles: Path
    host: str = "127.0.0.1"
    metrics_port: int = Field(9465, ge=0, le=65535)
    leader_election_namespace: str = "headway-system"
    lease_duration_s: float = Field(15.0, gt=0)
    identity: str = ""
    gpu_budget: int | None = Field(None, ge=1)
    forecaster: Literal["constant", "trend", "arima"] = Field(
        "constant", description="Demand forecast one provisioning time ahead (headway.autoscaler.forecast)."
    )
    headroom: float = Field(
        1.0,
        ge=1.0,
        le=4.0,
        description="SLO capacity kept over demand (profiles already hold the SLO at its attainment).",
    )
