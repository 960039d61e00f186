"""GreenServ's contextual bandit: LinUCB over one-hot query features, reward trading accuracy for cost.

Source: Ziller et al., "GreenServ: Energy-Efficient Context-Aware Dynamic Routing for Multi-Model LLM
Inference", arXiv 2601.17551, and its code (TZData1/llm-inference-router: `config/feature_extraction.yaml`,
`src/feature_extractor/*`, `src/bandit/linucb.py`, `experiments/config/experiments.yaml`,
`experiments/shared/analysis_utils.py::calculate_reward`), as summarised in headway's reference notes:
- context, one-hot: task type (a classifier over the query), semantic cluster (3 online centroids,
  assigned by cosine, μ += (e − μ)/n, seeded with the first queries), complexity (100 − Flesch reading
  ease, clamped to [0, 100], binned at 33 and 67);
- LinUCB, disjoint arms, α = 0.1, A initialised to 0.05·I;
- reward r = (1 − λ)·accuracy + λ·(1 − normalised cost), λ swept over [0, 1] for the trade-off curve.
Its embeddings (all-MiniLM-L6-v2) cannot be downloaded here: the task classifier is headway's n-gram
classifier and the clusters are over the same n-gram vectors. It learns online, from its own choices
only (bandit feedback), on the training split and then on through the test split.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np

from headway.gateway.modelrouting.bandit import LinUCB
from headway.gateway.modelrouting.classifier import NgramClassifier, features

ALPHA = 0.1
REGULARISATION = 0.05
CLUSTERS = 3
_VOWELS = re.compile(r"[aeiouy]+")
_SENTENCE = re.compile(r"[.!?]+")
_WORD = re.compile(r"[A-Za-z]+")


def flesch_reading_ease(text: str) -> float:
    """206.835 − 1.015·words/sentences − 84.6·syllables/words, syllables counted as vowel groups."""
    words = _WORD.findall(text)
    if not words:
        return 100.0
    sentences = max(1, len(_SENTENCE.findall(text)))
    syllables = sum(max(1, len(_VOWELS.findall(w.lower()))) for w in words)
    return 206.835 - 1.015 * len(words) / sentences - 84.6 * syllables / len(words)


HASHED = 4096
"""Dimensions the n-gram vectors are hashed into for clustering."""


def hashed(prompt: str) -> np.ndarray:
    v = np.zeros(HASHED)
    for f, n in features(prompt).items():
        v[zlib.crc32(f.encode()) % HASHED] += n
    norm = np.linalg.norm(v)
    return v / norm if norm else v


class _Clusters:
    def __init__(self, k: int) -> None:
        self.k = k
        self.centroids: list[np.ndarray] = []
        self.counts: list[int] = []

    def assign(self, v: np.ndarray) -> int:
        if len(self.centroids) < self.k:
            self.centroids.append(v.copy())
            self.counts.append(1)
            return len(self.centroids) - 1
        i = int(np.argmax([float(c @ v) / (np.linalg.norm(c) or 1.0) for c in self.centroids]))
        self.counts[i] += 1
        self.centroids[i] += (v - self.centroids[i]) / self.counts[i]
        return i


class GreenServ:
    name = "greenserv-linucb"

    def __init__(self, examples: Sequence[tuple[str, str]], models: Sequence[str], lam: float) -> None:
        self.classifier = NgramClassifier(examples)
        self.tasks = self.classifier.labels
        self.models, self.lam = list(models), lam
        self.clusters = _Clusters(CLUSTERS)
        d = len(self.tasks) + CLUSTERS + 3
        self.arms = {m: LinUCB(np.zeros(d), prior_weight=REGULARISATION, alpha=ALPHA) for m in self.models}

    def context(self, prompt: str) -> np.ndarray:
        x = np.zeros(len(self.tasks) + CLUSTERS + 3)
        x[self.tasks.index(self.classifier.classify(prompt).best)] = 1.0
        x[len(self.tasks) + self.clusters.assign(hashed(prompt))] = 1.0
        complexity = min(100.0, max(0.0, 100.0 - flesch_reading_ease(prompt)))
        x[len(self.tasks) + CLUSTERS + (0 if complexity < 33 else 1 if complexity < 67 else 2)] = 1.0
        return x

    def step(self, prompt: str, correct: dict[str, bool], cost: dict[str, float]) -> str:
        """Choose for one prompt, then learn from the chosen model's reward (bandit feedback)."""
        x = self.context(prompt)
        chosen = max(self.models, key=lambda m: self.arms[m].estimate(x) + self.arms[m].bound(x))
        reward = (1 - self.lam) * float(correct[chosen]) + self.lam * (1 - cost[chosen])
        self.arms[chosen].update(x, reward)
        return chosen
