"""LinUCB (Li, Chu, Langford, Schapire 2010, Alg. 1, disjoint arms): per candidate pool a ridge
regression of the reward on the request's context, plus an exploration bonus where the candidate has
been tried little in contexts like this one.

The route's quality priors are its starting point: each arm starts as if it had seen `prior_weight`
rewards equal to its prior (A = wI, b = w·θ₀), so with no feedback it scores exactly its prior, and
feedback moves it in proportion to how much there is. GreenServ (arXiv 2601.17551) found LinUCB the best
of the bandits it tried for model routing (α = 0.1, regularisation 0.05).
"""

from __future__ import annotations

import math

import numpy as np


class LinUCB:
    def __init__(self, prior: np.ndarray, *, prior_weight: float, alpha: float) -> None:
        """`prior`: θ₀, the reward expected for each context feature before any feedback."""
        d = len(prior)
        self.alpha = alpha
        self.a_inv = np.eye(d) / prior_weight
        self.b = prior_weight * np.asarray(prior, dtype=float)
        self.theta = self.a_inv @ self.b
        self.updates = 0
        self.reward_sum = 0.0

    def estimate(self, x: np.ndarray) -> float:
        return float(self.theta @ x)

    def bound(self, x: np.ndarray) -> float:
        """The exploration bonus α·√(xᵀA⁻¹x)."""
        return self.alpha * math.sqrt(max(0.0, float(x @ self.a_inv @ x)))

    def update(self, x: np.ndarray, reward: float) -> None:
        """A ← A + xxᵀ (its inverse by Sherman–Morrison), b ← b + r·x."""
        ax = self.a_inv @ x
        self.a_inv -= np.outer(ax, ax) / (1.0 + float(x @ ax))
        self.b += reward * x
        self.theta = self.a_inv @ self.b
        self.updates += 1
        self.reward_sum += reward
