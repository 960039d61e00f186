"""The model-routing benchmark's smoke run on the real MMLU labels, its split and bad options, and that
sweeping the route's cost weight is ranking by the quality gain the route reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import model_routing as mr
from bench._routing_quality import load_labels
from headway.api.modelroute import ModelRouteSpec
from headway.devenv.paths import REPO_ROOT
from headway.devenv.tinymodel import tiny_model_dir
from headway.gateway.modelrouting.router import CompiledRoute
from headway.kvcache.tokenizer import ModelTokenizer

MMLU = REPO_ROOT.parent / "shared" / "datasets" / "routellm-mmlu"


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headway", "bench", "model-routing", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )


def test_the_smoke_run_scores_every_router_on_held_out_subjects(tmp_path: Path) -> None:
    done = bench("--smoke", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    doc = json.loads(next(tmp_path.glob("model-routing-smoke-*.json")).read_text())
    assert not set(doc["split"]["train_subjects"]) & set(doc["split"]["test_subjects"])
    routers = doc["routers"]
    assert set(routers) >= {"headway", "headway-classifier", "semantic-router-static", "greenserv-linucb", "oracle"}
    assert routers["random-mix"]["apgr"] == pytest.approx(0.5)
    assert routers["oracle"]["apgr"] > 1.0
    weak, strong = doc["weak"]["test_accuracy"], doc["strong"]["test_accuracy"]
    for name in ("headway", "headway-classifier", "semantic-router-static"):
        curve = routers[name]["curve"]
        assert curve[0] == [0.0, pytest.approx(weak, abs=1e-4)] and curve[-1] == [1.0, pytest.approx(strong, abs=1e-4)]
    assert doc["timing"]["headway"]["decision_ms"]["p99"] > 0
    assert (tmp_path / next(tmp_path.glob("*.json")).with_suffix(".png").name).is_file()
    assert "| headway |" in next(tmp_path.glob("*.md")).read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--test", "mmlu_astrology"], "--test: unknown subjects mmlu_astrology"),
        (["--test", "random-half:x"], "random-half needs an integer seed"),
        (["--test", "mmlu_anatomy", "--train", "mmlu_anatomy"], "share subjects"),
        (["--prices", "5,1"], "--prices 5,1"),
        (["--weak", "nobody"], "--weak nobody: not a model"),
        (["--dataset", "/nonexistent"], "error:"),
    ],
)
def test_bad_options_fail_in_one_line(args: list[str], message: str) -> None:
    done = bench("--smoke", "--out", "/tmp/unused-model-routing", *args)
    assert done.returncode != 0
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_sweeping_the_cost_weight_is_thresholding_the_reported_gain() -> None:
    models, rows = load_labels(MMLU / "mmlu_anatomy.csv")
    weak, strong = models
    rows = rows[:60]
    tok = ModelTokenizer(tiny_model_dir())
    tokens = {id(r): len(tok.encode(r.prompt)) for r in rows}
    route = mr.headway_route(rows, weak, strong, mr.PRICES, None)
    mr.replay(route, rows, tokens, weak, strong)
    gains, _ = mr.headway_preference(route, rows, tokens)
    for w in (0.0, 0.05, 0.2):
        spec = route.spec.model_dump(by_alias=True)
        spec["objective"]["costWeight"] = w
        priced = CompiledRoute(ModelRouteSpec.model_validate(spec))
        priced.arms = route.arms  # the same learned qualities
        knob = w * (1 - mr.PRICES[0] / mr.PRICES[1])
        for r, gain in zip(rows, gains, strict=True):
            chosen = priced.decide(r.prompt, tokens[id(r)], {}).pool
            assert chosen == ("strong" if gain > knob else "weak") or abs(gain - knob) < 1e-9
