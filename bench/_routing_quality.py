"""Model-routing quality on labelled prompts: the data and the cost–quality measures routers are judged by.

- Data: CSV files (one file, or a folder of them) with a `prompt` column and, per model, a column of
  True/False saying whether that model answered the prompt correctly; other columns are ignored. A file's
  name (its stem) is its prompts' subject, so train/test splits can hold whole subjects out. The shape is
  RouteLLM's MMLU responses (`../shared/datasets/routellm-mmlu/`, Apache-2.0): 57 `mmlu_<subject>.csv`
  files, 14,042 prompts, Mixtral-8x7B-Instruct and GPT-4-1106 correctness.
- PGR / APGR (RouteLLM, Ong et al. 2024, §3.2; `routellm/evals/evaluate.py`): a router's accuracy as a
  share of the gap between the weak and the strong model, and its area over the router's curve of
  (share of calls to the strong model, accuracy), normalised the same way. A random mix scores 0.5; a
  router that knows which prompts only the strong model answers scores above 1.
- AIQ (RouterBench, Hu et al. 2024; `evaluation/AIQ.py`): the area under the non-decreasing hull of a
  router's (cost, quality) points, over the cost range (any point between two operating points is
  reachable by mixing them at random, and a dearer point that is worse is never chosen).
"""

from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass
from pathlib import Path

_BOOL = {"true": True, "false": False}


@dataclass(frozen=True)
class LabelledPrompt:
    subject: str
    prompt: str
    correct: dict[str, bool]
    """Per model: did it answer this prompt correctly."""


def _read(path: Path) -> tuple[list[str], list[LabelledPrompt]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header or header[0].strip() != "prompt":
            raise ValueError(f"{path}: the first column must be `prompt` (got {header[:1] if header else 'nothing'})")
        rows = [(reader.line_num, row) for row in reader if row]
    if not rows:
        raise ValueError(f"{path}: no rows")
    # a model's column: every value True/False (any case); other columns are ignored
    models = [i for i in range(1, len(header)) if all(i < len(r) and r[i].strip().lower() in _BOOL for _, r in rows)]
    if not models:
        raise ValueError(f"{path}: no column of True/False correctness labels after `prompt`")
    subject = path.stem
    out = [
        LabelledPrompt(subject, row[0], {header[i]: _BOOL[row[i].strip().lower()] for i in models}) for _, row in rows
    ]
    return [header[i] for i in models], out


def load_labels(path: Path) -> tuple[list[str], list[LabelledPrompt]]:
    """The models and the labelled prompts of a CSV file or of every CSV in a folder (sorted by name); every
    file must label the same models."""
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"{path}: no CSV files")
    models: list[str] | None = None
    rows: list[LabelledPrompt] = []
    for f in files:
        these, labelled = _read(f)
        if models is not None and these != models:
            raise ValueError(f"{f}: labels models {these}, the files before it {models}")
        models = these
        rows += labelled
    assert models is not None
    return models, rows


def accuracy(rows: list[LabelledPrompt], model: str) -> float:
    return sum(r.correct[model] for r in rows) / len(rows)


def pgr(router: float, weak: float, strong: float) -> float:
    """Performance gap recovered: the router's accuracy as a share of the way from the weak to the strong
    model's."""
    return (router - weak) / (strong - weak)


def _trapz(points: list[tuple[float, float]]) -> float:
    return sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in itertools.pairwise(points))


def apgr(curve: list[tuple[float, float]], weak: float, strong: float) -> float:
    """Average PGR over a router's curve of (share of calls to the strong model, accuracy) points, as
    RouteLLM's evaluation computes it: the curve's trapezoid area less the weak model's over the same
    shares, over the strong model's less the weak's."""
    points = sorted(curve)
    if len(points) < 2 or points[-1][0] <= points[0][0]:
        raise ValueError("apgr needs points at two different strong-call shares at least")
    span = points[-1][0] - points[0][0]
    return (_trapz(points) - weak * span) / ((strong - weak) * span)


def oracle_curve(rows: list[LabelledPrompt], weak: str, strong: str, steps: int = 10) -> list[tuple[float, float]]:
    """The best any router can do at each share of strong calls: spend them first on prompts only the
    strong model answers."""
    n = len(rows)
    base = sum(r.correct[weak] for r in rows)
    gain = sum(1 for r in rows if r.correct[strong] and not r.correct[weak])
    return [(k / steps, (base + min(k / steps * n, gain)) / n) for k in range(steps + 1)]


def nondecreasing_hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The upper concave hull of (cost, quality) points with every dearer-but-worse point dropped: what
    randomly mixing operating points can reach."""
    hull: list[tuple[float, float]] = []
    for p in sorted(points, key=lambda p: (p[0], -p[1])):
        if hull and p[1] <= hull[-1][1]:
            continue  # dearer (or as dear) and no better
        # pop points that lie on or below the chord from the one before them to p
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], p) >= 0:
            hull.pop()
        hull.append(p)
    return hull


def _cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def aiq(points: list[tuple[float, float]], cost_range: tuple[float, float]) -> float:
    """RouterBench's average improvement in quality: the mean over `cost_range` of the best quality the
    router's hull reaches at each cost (flat beyond its dearest point; nothing below its cheapest)."""
    lo, hi = cost_range
    if hi <= lo:
        raise ValueError("aiq needs a cost range of positive width")
    hull = [p for p in nondecreasing_hull(points) if p[0] <= hi]
    if not hull:
        return 0.0
    clipped = [(max(lo, x), y) for x, y in hull]
    return _trapz([*clipped, (hi, clipped[-1][1])]) / (hi - lo)
