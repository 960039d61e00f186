"""headway's model routing on labelled prompts: quality against cost on held-out subjects, beside other
routers' decisions, and the time one decision takes.

    headway bench model-routing [--dataset PATH] [--weak COLUMN] [--strong COLUMN]
        [--test random-half:SEED | SUBJECT,...] [--train rest | SUBJECT,...]
        [--examples-per-class 40] [--prices WEAK,STRONG] [--online-seconds 60] [--smoke] [--out DIR]

The data: CSVs of prompts with one True/False correctness column per model (default: RouteLLM's MMLU
responses in ../shared/datasets/routellm-mmlu, Mixtral-8x7B-Instruct and GPT-4-1106, Apache-2.0); a
file's name is its prompts' subject. The split is by subject: the test subjects are never seen in
training, so a router is judged on topics it does not know.

Routers, each fitted on the training subjects and scored on the test ones:
- headway: a ModelRoute over two pools (the weak and the strong model) with the training accuracies as
  quality priors and learning on; the training prompts are replayed into its bandit as feedback (both
  pools' rewards: the labels say what each would have answered). Its context is the prompt's length
  (`headway`) or the length and the class its n-gram classifier, trained on up to
  `--examples-per-class` prompts of each training subject, gives the prompt (`headway-classifier`, with
  per-class quality priors). Every test prompt goes through the route's own `decide`; the objective's
  cost weight w sends a prompt to the strong pool when its quality gain exceeds w × (1 − weak cost /
  strong cost), so sweeping w is ranking the prompts by the gain the route reports in its scores.
- anchors (bench/model_routing_anchors/): vLLM Semantic Router's domain decisions with static model
  scores; GreenServ's LinUCB with its reward swept over λ; random mixing (the straight line between the
  two models, APGR 0.5); each model alone; the oracle (strong only where it alone is right).

Online (`--online-seconds`, 0 skips it): bench/_model_routing_online.py — a load ramp to twice the
strong pool's capacity through headway's gateway to two simulated pools, quality per request from the
labels of the model that answered, TTFT from the engines; headway's SLO-aware route against static splits.

Reported per router: its curve of (share of strong calls, accuracy), APGR (RouteLLM's average
performance gap recovered over 10 shares, random 0.5), AIQ (RouterBench's area under the non-decreasing
hull), the strong-call share needed to recover 50% and 80% of the gap, and cost per 1k prompts at the
`--prices` (per million tokens); headway's decision time p50/p99 (signals, classifier, rules,
objective; the prompt's tokens counted beforehand, as the gateway counts them for prefix routing
anyway) and the tokenizer's. Writes bench/results/model-routing-<date>.json, .md and .png.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench._machine import RESULTS, write_result
from bench._model_routing_online import STATIC_SHARES, run_online
from bench._routing_quality import LabelledPrompt, accuracy, aiq, apgr, load_labels, oracle_curve, pgr
from bench.model_routing_anchors.greenserv import GreenServ
from bench.model_routing_anchors.semantic_router import SemanticRouterStatic
from headway.api.modelroute import ClassifierSignal, ModelRouteSpec
from headway.devenv.paths import REPO_ROOT
from headway.devenv.tinymodel import tiny_model_dir
from headway.gateway.modelrouting.router import CompiledRoute
from headway.kvcache.tokenizer import ModelTokenizer

DATASET = REPO_ROOT.parent / "shared" / "datasets" / "routellm-mmlu"
PRICES = (0.24, 24.7)
"""$ per million tokens of Mixtral-8x7B and GPT-4-1106 in RouteLLM's paper (§5.4)."""
SHARES = [k / 10 for k in range(11)]
FINE = [k / 100 for k in range(101)]
LAMBDAS = [k / 10 for k in range(11)]
MAX_CLASSES = next(m.max_length for m in ClassifierSignal.model_fields["examples"].metadata if hasattr(m, "max_length"))
"""Classes a ModelRoute's classifier holds (its schema's limit)."""


def pct(xs: Sequence[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


# ----- the split


def split(
    rows: list[LabelledPrompt], test: str, train: str
) -> tuple[list[LabelledPrompt], list[LabelledPrompt], list[str], list[str]]:
    subjects = sorted({r.subject for r in rows})
    if test.startswith("random-half:"):
        try:
            seed = int(test.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"--test {test}: random-half needs an integer seed") from None
        test_subjects = sorted(random.Random(seed).sample(subjects, len(subjects) // 2))
    else:
        test_subjects = _subjects(test, subjects, "--test")
    train_subjects = (
        [s for s in subjects if s not in test_subjects] if train == "rest" else _subjects(train, subjects, "--train")
    )
    if overlap := sorted(set(train_subjects) & set(test_subjects)):
        raise ValueError(f"--train and --test share subjects: {', '.join(overlap)}")
    tr = [r for r in rows if r.subject in train_subjects]
    te = [r for r in rows if r.subject in test_subjects]
    if not tr or not te:
        raise ValueError("the split leaves no training or no test prompts")
    return tr, te, train_subjects, test_subjects


def _subjects(listed: str, known: list[str], flag: str) -> list[str]:
    names = [s.strip() for s in listed.split(",") if s.strip()]
    if unknown := [s for s in names if s not in known]:
        raise ValueError(f"{flag}: unknown subjects {', '.join(unknown)}; known: {', '.join(known)}")
    return names


# ----- curves and their measures


def ranked_curve(pref: np.ndarray, rows: list[LabelledPrompt], weak: str, strong: str, shares: list[float]) -> list:
    """Accuracy when the `share` of prompts the router prefers most for the strong model go to it."""
    order = np.argsort(-pref, kind="stable")
    wk = np.array([r.correct[weak] for r in rows])
    st = np.array([r.correct[strong] for r in rows])
    out = []
    for share in shares:
        use = np.zeros(len(rows), bool)
        use[order[: round(share * len(rows))]] = True
        out.append((share, float(np.where(use, st, wk).mean())))
    return out


def calls_to_recover(curve: list[tuple[float, float]], fraction: float, weak: float, strong: float) -> float | None:
    """The least share of strong calls at which the curve recovers `fraction` of the gap (interpolated)."""
    target = weak + fraction * (strong - weak)
    pts = sorted(curve)
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        if y0 >= target:
            return x0
        if y1 >= target:
            return x0 + (x1 - x0) * (target - y0) / (y1 - y0)
    return None


def measures(
    points: list[tuple[float, float]], fine: list[tuple[float, float]], weak: float, strong: float
) -> dict[str, Any]:
    return {
        "apgr": round(apgr(points, weak, strong), 4),
        "aiq": round(aiq(fine, (0.0, 1.0)), 4),
        "calls_for_50pct_gap": _r(calls_to_recover(fine, 0.5, weak, strong)),
        "calls_for_80pct_gap": _r(calls_to_recover(fine, 0.8, weak, strong)),
        "curve": [[round(x, 3), round(y, 4)] for x, y in sorted(set(points))],
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


# ----- headway


def headway_route(
    train: list[LabelledPrompt],
    weak: str,
    strong: str,
    prices: tuple[float, float],
    examples: list[tuple[str, str]] | None,
) -> CompiledRoute:
    """The ModelRoute an operator would write from the training data: priors from its accuracies,
    per-class priors when it has a classifier, learning on (exploitation only: α = 0)."""
    candidates: list[dict[str, Any]] = [
        {"pool": "weak", "quality": accuracy(train, weak), "costPer1kTokens": prices[0] / 1000},
        {"pool": "strong", "quality": accuracy(train, strong), "costPer1kTokens": prices[1] / 1000},
    ]
    spec: dict[str, Any] = {
        "model": "auto",
        "candidates": candidates,
        "learning": {"enabled": True, "alpha": 0.0, "priorWeight": 1.0},
    }
    if examples:
        by: dict[str, list[str]] = {}
        for label, text in examples:
            by.setdefault(label, []).append(text)
        spec["signals"] = {"classifier": {"examples": [{"label": k, "prompts": v} for k, v in sorted(by.items())]}}
        subjects = {r.subject for r in train}
        for c, model in zip(candidates, (weak, strong), strict=True):
            c["qualityByClass"] = {
                label_of(s): accuracy([r for r in train if r.subject == s], model) for s in sorted(subjects)
            }
    return CompiledRoute(ModelRouteSpec.model_validate(spec))


def label_of(subject: str) -> str:
    """A subject as a classifier label (lower case, dashes)."""
    return re.sub(r"[^a-z0-9]+", "-", subject.removeprefix("mmlu_").lower()).strip("-")[:63] or "x"


def replay(route: CompiledRoute, rows: list[LabelledPrompt], tokens: dict[int, int], weak: str, strong: str) -> None:
    """Feed the labelled prompts to the route's bandit as rewards of both pools."""
    for r in rows:
        x = route.context(route.signals(r.prompt, tokens[id(r)]))
        route.feedback("weak", x, float(r.correct[weak]))
        route.feedback("strong", x, float(r.correct[strong]))


def headway_preference(
    route: CompiledRoute, rows: list[LabelledPrompt], tokens: dict[int, int]
) -> tuple[np.ndarray, list[float]]:
    """Each prompt's quality gain from the strong pool as the route's `decide` scores it, and the time
    each decision took."""
    pref, took = [], []
    for r in rows:
        t0 = time.perf_counter()
        choice = route.decide(r.prompt, tokens[id(r)], {})
        took.append(time.perf_counter() - t0)
        pref.append(choice.scores["strong"] - choice.scores["weak"])
    return np.array(pref), took


def examples_of(rows: list[LabelledPrompt], per_class: int, seed: int) -> list[tuple[str, str]]:
    by: dict[str, list[LabelledPrompt]] = {}
    for r in rows:
        by.setdefault(r.subject, []).append(r)
    out = []
    for subject, rs in sorted(by.items()):
        picked = random.Random(seed).sample(rs, min(per_class, len(rs)))
        out += [(label_of(subject), r.prompt[:4000]) for r in picked]
    return out


# ----- the run


def run(args: argparse.Namespace, progress: Callable[[str], None]) -> dict[str, Any]:
    models, rows = load_labels(args.dataset)
    weak = args.weak or min(models, key=lambda m: accuracy(rows, m))
    strong = args.strong or max(models, key=lambda m: accuracy(rows, m))
    for flag, m in (("--weak", weak), ("--strong", strong)):
        if m not in models:
            raise ValueError(f"{flag} {m}: not a model of the dataset; its models: {', '.join(models)}")
    if weak == strong:
        raise ValueError("--weak and --strong must differ")
    train, test, train_subjects, test_subjects = split(rows, args.test, args.train)
    if args.smoke:
        train = random.Random(0).sample(train, min(len(train), 300))
        test = random.Random(1).sample(test, min(len(test), 300))
    w_acc, s_acc = accuracy(test, weak), accuracy(test, strong)
    if s_acc <= w_acc:
        raise ValueError(f"on the test subjects {strong} ({s_acc:.3f}) is not better than {weak} ({w_acc:.3f})")
    progress(f"{len(train)} training prompts ({len(train_subjects)} subjects), {len(test)} test prompts")

    tok = ModelTokenizer(tiny_model_dir())
    tokens, tok_s = {}, []
    for r in train + test:
        t0 = time.perf_counter()
        tokens[id(r)] = len(tok.encode(r.prompt))
        tok_s.append(time.perf_counter() - t0)

    routers: dict[str, dict[str, Any]] = {}
    timing: dict[str, Any] = {
        "tokenize_ms": {"p50": round(pct(tok_s, 0.5) * 1e3, 3), "p99": round(pct(tok_s, 0.99) * 1e3, 3)}
    }
    examples = examples_of(train, args.examples_per_class, seed=0)
    variants: list[tuple[str, list[tuple[str, str]] | None]] = [("headway", None)]
    if len(train_subjects) <= MAX_CLASSES:
        variants.append(("headway-classifier", examples))
    else:
        progress(f"headway-classifier skipped: {len(train_subjects)} training subjects, a route holds {MAX_CLASSES}")
    for name, ex in variants:
        t0 = time.perf_counter()
        route = headway_route(train, weak, strong, args.prices, ex)
        replay(route, train, tokens, weak, strong)
        fit_s = time.perf_counter() - t0
        pref, took = headway_preference(route, test, tokens)
        routers[name] = measures(
            ranked_curve(pref, test, weak, strong, SHARES), ranked_curve(pref, test, weak, strong, FINE), w_acc, s_acc
        )
        timing[name] = {
            "decision_ms": {"p50": round(pct(took, 0.5) * 1e3, 3), "p99": round(pct(took, 0.99) * 1e3, 3)},
            "fit_s": round(fit_s, 2),
        }
        if route.classifier is not None:
            timing[name]["classifier_labels"] = len(route.labels)
            timing[name]["classifier_examples"] = len(route.examples)
        progress(f"{name}: APGR {routers[name]['apgr']:.3f}, decision p99 {timing[name]['decision_ms']['p99']} ms")

    scores = {
        label_of(s): {m: accuracy([r for r in train if r.subject == s], m) for m in (weak, strong)}
        for s in train_subjects
        if any(r.subject == s for r in train)
    }
    sr = SemanticRouterStatic(examples, scores)
    pref = sr.preference([r.prompt for r in test], weak, strong)
    routers[sr.name] = measures(
        ranked_curve(pref, test, weak, strong, SHARES), ranked_curve(pref, test, weak, strong, FINE), w_acc, s_acc
    )
    progress(f"{sr.name}: APGR {routers[sr.name]['apgr']:.3f}")

    cost = {weak: args.prices[0] / max(args.prices), strong: args.prices[1] / max(args.prices)}
    points = [(0.0, w_acc), (1.0, s_acc)]
    lambdas = [0.0, 0.5, 1.0] if args.smoke else LAMBDAS
    for lam in lambdas:
        gs = GreenServ(examples, [weak, strong], lam)
        for r in train:
            gs.step(r.prompt, r.correct, cost)
        chosen = [gs.step(r.prompt, r.correct, cost) for r in test]
        share = sum(c == strong for c in chosen) / len(test)
        acc = sum(r.correct[c] for r, c in zip(test, chosen, strict=True)) / len(test)
        points.append((share, acc))
    routers[GreenServ.name] = {
        **measures(points, points, w_acc, s_acc),
        "lambdas": lambdas,
    }
    progress(f"{GreenServ.name}: APGR {routers[GreenServ.name]['apgr']:.3f}")

    line = [(x, w_acc + x * (s_acc - w_acc)) for x in SHARES]
    routers["random-mix"] = measures(line, line, w_acc, s_acc)
    oracle = oracle_curve(test, weak, strong, steps=10)
    routers["oracle"] = measures(oracle, oracle_curve(test, weak, strong, steps=100), w_acc, s_acc)
    for r in routers.values():
        r["cost_per_1k_prompts_usd_at_50pct_gap"] = _cost_at(r["calls_for_50pct_gap"], test, tokens, args.prices)
    return {
        "dataset": str(args.dataset),
        "weak": {"model": weak, "test_accuracy": round(w_acc, 4), "price_per_mtok_usd": args.prices[0]},
        "strong": {"model": strong, "test_accuracy": round(s_acc, 4), "price_per_mtok_usd": args.prices[1]},
        "split": {
            "train_subjects": train_subjects,
            "test_subjects": test_subjects,
            "train_prompts": len(train),
            "test_prompts": len(test),
            "smoke": args.smoke,
        },
        "examples_per_class": args.examples_per_class,
        "routers": routers,
        "timing": timing,
        "pgr_at_half_strong_calls": {
            name: round(pgr(next(y for x, y in r["curve"] if x == 0.5), w_acc, s_acc), 4)
            for name, r in routers.items()
            if any(x == 0.5 for x, _ in r["curve"])
        },
        "online": run_online(
            Path(tempfile.mkdtemp(prefix="model-routing-online-")),
            train,
            test,
            weak,
            strong,
            args.prices,
            seconds=args.online_seconds,
            shares=(0.5,) if args.smoke else STATIC_SHARES,
            progress=progress,
        )
        if args.online_seconds > 0
        else None,
        "targets": {
            "apgr_held_out": {"target": 0.6, "headway": routers["headway"]["apgr"]},
            "decision_p99_ms": {
                "target": 2.0,
                **{name: timing[name]["decision_ms"]["p99"] for name, _ in variants},
            },
        },
    }


def _cost_at(
    share: float | None, rows: list[LabelledPrompt], tokens: dict[int, int], prices: tuple[float, float]
) -> float | None:
    """$ per 1k prompts (prompt tokens only) when `share` of them go to the strong model."""
    if share is None:
        return None
    mean_tokens = sum(tokens[id(r)] for r in rows) / len(rows)
    per_prompt = mean_tokens / 1e6 * ((1 - share) * prices[0] + share * prices[1])
    return round(per_prompt * 1000, 4)


def summary(doc: dict[str, Any]) -> str:
    lines = [
        f"# model routing — {doc['weak']['model']} vs {doc['strong']['model']}",
        "",
        f"Held-out subjects: {len(doc['split']['test_subjects'])} ({doc['split']['test_prompts']} prompts); "
        f"weak {doc['weak']['test_accuracy']}, strong {doc['strong']['test_accuracy']}.",
        "",
        "| router | APGR | AIQ | strong calls for 50% / 80% of the gap |",
        "|---|---|---|---|",
    ]
    for name, r in doc["routers"].items():
        lines.append(f"| {name} | {r['apgr']} | {r['aiq']} | {r['calls_for_50pct_gap']} / {r['calls_for_80pct_gap']} |")
    t = doc["timing"]
    took = ", ".join(
        f"{name} {v['decision_ms']['p50']}/{v['decision_ms']['p99']} ms" for name, v in t.items() if "decision_ms" in v
    )
    lines += [
        "",
        f"Decision time p50/p99: {took}; tokenizing {t['tokenize_ms']['p50']}/{t['tokenize_ms']['p99']} ms.",
    ]
    if online := doc.get("online"):
        lines += [
            "",
            f"Online: ramp {online['ramp_rps'][0]} → {online['ramp_rps'][1]} req/s over {online['ramp_seconds']:g} s "
            f"(the strong pool serves {online['strong_capacity_rps']} req/s), TTFT SLO {online['slo_ttft_s']} s.",
            "",
            "| run | SLO attainment | quality | strong share | TTFT p99 s | $ / 1k requests |",
            "|---|---|---|---|---|---|",
            *(
                f"| {k} | {v['slo_attainment']} | {v['quality']} | {v['strong_share']} | {v['ttft_p99_s']} | "
                f"{v['cost_per_1k_requests_usd']} |"
                for k, v in online["results"].items()
            ),
            "",
            f"Best static split meeting {online['attainment_target']}: {online['best_static_meeting_slo']}; "
            f"targets met: {online['targets']['met']}.",
        ]
    lines += [
        "",
        f"Command: `{doc['command']}`",
    ]
    return "\n".join(lines) + "\n"


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, r in doc["routers"].items():
        xs, ys = zip(*sorted(r["curve"]), strict=True)
        style = "--" if name in ("random-mix", "oracle") else "-"
        ax.plot(xs, ys, style, marker="o" if name == GreenServ.name else None, label=f"{name} (APGR {r['apgr']})")
    ax.set_xlabel("share of calls to the strong model")
    ax.set_ylabel("accuracy on held-out subjects")
    ax.set_title(f"{doc['weak']['model']} vs {doc['strong']['model']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--weak", default=None, help="Column of the cheap model (default: the less accurate).")
    parser.add_argument("--strong", default=None, help="Column of the expensive model (default: the more accurate).")
    parser.add_argument("--test", default="random-half:0", help="random-half:SEED or a comma list of subjects.")
    parser.add_argument("--train", default="rest", help="rest or a comma list of subjects.")
    parser.add_argument("--examples-per-class", type=int, default=40)
    parser.add_argument("--prices", default=",".join(str(p) for p in PRICES), help="WEAK,STRONG $ per million tokens.")
    parser.add_argument(
        "--smoke", action="store_true", help="300 prompts each side, 3 GreenServ settings, one static split online."
    )
    parser.add_argument(
        "--online-seconds", type=float, default=None, help="Length of the online ramp (default 60, smoke 12; 0: skip)."
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    try:
        prices = tuple(float(p) for p in args.prices.split(","))
        if len(prices) != 2 or min(prices) < 0 or prices[0] >= prices[1]:
            raise ValueError
    except ValueError:
        sys.exit(f"error: --prices {args.prices}: two prices WEAK,STRONG with 0 <= WEAK < STRONG")
    args.prices = prices
    if args.online_seconds is None:
        args.online_seconds = 12.0 if args.smoke else 60.0
    if args.online_seconds < 0:
        sys.exit("error: --online-seconds must be 0 (skip) or more")
    if args.examples_per_class < 1:
        sys.exit("error: --examples-per-class must be at least 1")
    try:
        doc = run(args, lambda line: print(line, file=sys.stderr, flush=True))
    except (ValueError, OSError) as e:
        sys.exit(f"error: {e}")
    name = "model-routing-smoke" if args.smoke else "model-routing"
    path = write_result(name, doc, benchmark="model-routing", directory=args.out)
    path.with_suffix(".md").write_text(summary(json.loads(path.read_text())))
    plot(doc, path.with_suffix(".png"))
    print(path)


if __name__ == "__main__":
    main()
