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


CHECKED_FIELDS = ("prompt", "chosen", "rejected", "chosen_probs", "chosen_probs_win", "chosen_probs_lose")


def check_preferences(rows: list[dict[str, Any]], generations: list[dict[str, Any]],
                      scores: dict[str, list[float]], where: str) -> None:
    """Refuse preference rows that do not follow from the generations and scores they were made
    from (an edited or corrupted file): ``where`` names the file in the error."""
    if [r.get("prompt_id") for r in rows] != [g["prompt_id"] for g in generations]:
        raise DataError(f"{where}: its prompts are not the {len(generations)} generated in this "
                        f"iteration (it has {len(rows)} rows)")
    for n, (row, g) in enumerate(zip(rows, generations, strict=True), 1):
        if g["prompt_id"] not in scores:
            raise DataError(f"{where}:{n}: prompt {g['prompt_id']} has no scores to follow from")
        want = preference_row(g["prompt_id"], g["prompt"], g["responses"], scores[g["prompt_id"]])
        for field in CHECKED_FIELDS:
            got = row.get(field)
            same = (isinstance(got, float) and math.isclose(got, want[field], rel_tol=1e-12)
                    if isinstance(want[field], float) else got == want[field])
            if not same:
                raise DataError(f"{where}:{n}: prompt {g['prompt_id']}: {field} is {got!r}, but its "
                                f"scores give {want[field]!r} (was the file edited?)")
