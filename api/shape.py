"""Request shapes: the joint (input tokens, output tokens) buckets the gateway counts and the autoscaler reads.

Engines export the two lengths as separate histograms, so a pool of half short-prompt/long-answer chat
and half long-document/short-answer requests looks, to them, like one medium request that neither
profile bucket describes. The gateway sees each request whole, so it counts the pair; the autoscaler
turns those counts into its token mix. Both sides use these edges, so they live here.

Buckets are powers of two: a label is the bucket's upper edge ("256" holds 129-256 tokens), "+Inf" the
rest, so a label set stays small (at most 13 × 12 series per model).
"""

from __future__ import annotations

import math

INPUT_EDGES: tuple[int, ...] = tuple(2**k for k in range(6, 18))  # 64 … 131072
OUTPUT_EDGES: tuple[int, ...] = tuple(2**k for k in range(4, 15))  # 16 … 16384
INF = "+Inf"


def le_label(tokens: int, edges: tuple[int, ...]) -> str:
    """The label of the bucket `tokens` falls in."""
    for edge in edges:
        if tokens <= edge:
            return str(edge)
    return INF


def representative(label: str, edges: tuple[int, ...]) -> float:
    """A token count standing for a whole bucket: the geometric middle of its range (twice the last edge
    for "+Inf"), so matching it to profile buckets on a log scale favours neither neighbour."""
    if label == INF:
        return 2.0 * edges[-1]
    upper = float(label)
    lower = upper / 2 if upper > edges[0] else upper / 4
    return math.sqrt(lower * upper)
