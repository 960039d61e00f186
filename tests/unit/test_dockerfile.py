"""The control-plane image cannot be built here (no container engine), so what can drift is checked
statically: it copies every package the distribution maps, and runs as the uid the chart expects."""

from __future__ import annotations

import re
import tomllib

import yaml

from headway.devenv.paths import REPO_ROOT

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()


def test_image_copies_every_package_folder() -> None:
    mapped = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    copied = set(re.findall(r"^COPY (\w+)/ \1/$", DOCKERFILE, re.MULTILINE))
    assert copied == set(mapped.values())


def test_image_user_is_the_chart_pods_non_root_uid() -> None:
    values = yaml.safe_load((REPO_ROOT / "charts" / "headway" / "values.yaml").read_text())
    uid = values["podSecurityContext"]["runAsUser"]
    assert uid != 0
    assert f"USER {uid}:{values['podSecurityContext']['runAsGroup']}" in DOCKERFILE
    assert f"--uid {uid}" in DOCKERFILE
