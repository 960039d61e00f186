"""vLLM Semantic Router's domain decisions with static model scores.

Source: vllm-project/semantic-router, the category format of `config/config.yaml` and
`website/docs/cookbook/categories-configuration.md` (`categories: [{name, model_scores: [{model, score}]}]`,
`default_model`), and the `static` selection method ("uses static scores from configuration",
`ModelSelectionConfig` in `src/semantic-router/pkg/config/config.go`), as summarised in headway's
reference notes (model-routing.md): a domain classifier names the prompt's category; the decision
takes the model with the highest score configured for that category.

Here: the categories are the training split's subjects and each model's score in a category is its
accuracy there (what an operator would configure from a benchmark). Its classifier is a fine-tuned
ModernBERT, which cannot run offline here; the same n-gram classifier headway uses stands in for it,
trained on the same examples. A static decision is one operating point; the cost knob RouterBench and
RouteLLM sweep is the margin by which the strong model's score must beat the weak one's, so prompts
are ranked by (strong score − weak score) of their category.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from headway.gateway.modelrouting.classifier import NgramClassifier


class SemanticRouterStatic:
    name = "semantic-router-static"

    def __init__(self, examples: Sequence[tuple[str, str]], scores: dict[str, dict[str, float]]) -> None:
        """`examples`: (category, prompt); `scores`: category → model → score."""
        self.classifier = NgramClassifier(examples)
        self.scores = scores

    def preference(self, prompts: Sequence[str], weak: str, strong: str) -> np.ndarray:
        out = []
        for p in prompts:
            category = self.classifier.classify(p).best
            s = self.scores[category]
            out.append(s[strong] - s[weak])
        return np.array(out)
