"""One engine per target for the module: the simulator and real vLLM on CPU, same flags."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from headway.devenv.tinymodel import tiny_model_dir
from tests.conformance.engines import EngineUnderTest, start_engine, stop_engine


@pytest.fixture(scope="module", params=["sim", "vllm"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineUnderTest]:
    e = start_engine(request.param, tiny_model_dir(), tmp_path_factory.mktemp(request.param))
    yield e
    stop_engine(e)
    assert not e.events.errors, f"undecodable KV-event payloads: {e.events.errors[:3]}"
