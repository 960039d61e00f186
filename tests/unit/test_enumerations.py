"""Every enumeration that a user can type is defined once; the chart's values schema, the CRD and the
components' settings are checked against that one definition, so none can drift."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

from headway.api.crd import build_crd
from headway.autoscaler.config import AutoscalerConfig
from headway.autoscaler.forecast import FORECASTERS
from headway.gateway.routing.profiles import PRESETS

CHART_SCHEMA = Path(__file__).parents[2] / "charts" / "headway" / "values.schema.json"


def test_the_chart_offers_exactly_the_routing_presets_and_forecasters() -> None:
    props = json.loads(CHART_SCHEMA.read_text())["properties"]
    assert props["gateway"]["properties"]["strategy"]["enum"] == list(PRESETS)
    assert props["epp"]["properties"]["strategy"]["enum"] == list(PRESETS)
    assert props["autoscaler"]["properties"]["forecaster"]["enum"] == list(FORECASTERS)


def test_the_crd_and_the_autoscaler_settings_use_the_same_names() -> None:
    version = build_crd()["spec"]["versions"][0]
    routing = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["routing"]
    assert routing["properties"]["strategy"]["enum"] == list(PRESETS)
    assert list(get_args(AutoscalerConfig.model_fields["forecaster"].annotation)) == list(FORECASTERS)
