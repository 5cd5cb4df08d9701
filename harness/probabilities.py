"""Probabilities stage: ranker scores → chosen/rejected pair and SPPO win probabilities.

With the K scores s of one prompt, P_ij = σ(s_i − s_j) (the Bradley–Terry reading of the
ranker; official ``compute_prob.py``). ``chosen``/``rejected`` are the responses with the
highest/lowest score (the first highest and the last lowest on ties,
so they differ even when all scores tie); ``chosen_probs`` = P_wl, ``chosen_probs_win`` =
mean_k P_wk and ``chosen_probs_lose`` = mean_k P_lk, the k = w (resp. l) term, ½, included.
"""

from __future__ import annotations

import math
from typing import Any

from harness.errors import DataError


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def probability_matrix(scores: list[float]) -> list[list[float]]:
    return [[sigmoid(si - sj) for sj in scores] for si in scores]


def preference_row(prompt_id: str, prompt: str, responses: list[str], scores: list[float]) -> dict[str, Any]:
    """One row of ``preferences.jsonl`` (the official SPPO columns plus the full matrix)."""
    if len(responses) != len(scores):
        raise DataError(f"prompt {prompt_id}: {len(responses)} responses but {len(scores)} scores")
    if len(scores) < 2:
        raise DataError(f"prompt {prompt_id}: need at least 2 scored responses, got {len(scores)}")
    for i, s in enumerate(scores):
        if not isinstance(s, (int, float)) or not math.isfinite(s):
            raise DataError(f"prompt {prompt_id}: score {i} is {s!r}, expected a finite number")
    k = len(scores)
    w = max(range(k), key=lambda i: (scores[i], -i))
    lo = min(range(k), key=lambda i: (scores[i], -i))
    p = probability_matrix(scores)
    return {
        "prompt_id": prompt_id,
        "prompt": prompt,
        "chosen": responses[w],
        "rejected": responses[lo],
        "chosen_index": w,
        "rejected_index": lo,
        "chosen_probs": p[w][lo],
        "chosen_probs_win": sum(p[w]) / k,
        "chosen_probs_lose": sum(p[lo]) / k,
        "probability": p,
    }
