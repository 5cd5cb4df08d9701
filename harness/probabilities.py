"""Probabilities stage: ranker output → chosen/rejected pair and SPPO win probabilities.

Two estimators of P_ij = P(y_i ≻ y_j) for the K responses of one prompt (config
``preferences.probabilities``):

- ``scores`` (official ``compute_prob.py``): P_ij = σ(s_i − s_j) from the ranker's K scores s (the
  Bradley–Terry reading of the ranker); chosen/rejected follow the scores.
- ``pairwise`` (the paper's estimator): P_ij from the ranker's own comparison of i with j, both
  orders judged and symmetrised, P_ij = ½(σ(C_ij) + σ(−C_ji)) for the comparison log-odds C
  (:func:`pairwise_probabilities`); chosen/rejected follow the row means mean_j P_ij, the estimate
  of P(y_i ≻ π_t).

Ties (``preferences.ties``): ``first`` takes the first highest as chosen and the first lowest as
rejected (numpy's argmax/argmin, as upstream; all equal gives chosen = rejected = 0); ``distinct``
takes the last lowest, so they differ even when all tie. ``chosen_probs`` = P_wl,
``chosen_probs_win`` = mean_k P_wk and ``chosen_probs_lose`` = mean_k P_lk, the k = w (resp. l) term,
½, included: the same columns under either estimator, so every trainer reads both.
"""

from __future__ import annotations

import math
from typing import Any

from harness.errors import DataError

Matrix = list[list[float]]
ESTIMATORS = ("scores", "pairwise")
TIE_RULES = ("first", "distinct")
SYMMETRY_TOL = 1e-9  # |P_ij + P_ji − 1| allowed in a stored matrix (float rounding only)


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def probability_matrix(scores: list[float]) -> Matrix:
    """P_ij = σ(s_i − s_j) (the ``scores`` estimator)."""
    return [[sigmoid(si - sj) for sj in scores] for si in scores]


def pairwise_probabilities(logits: Matrix) -> Matrix:
    """P_ij = ½(σ(C_ij) + σ(−C_ji)), P_ii = ½, from the log-odds C_ij that i beats j when i is shown
    first: both orders of each pair averaged, so P_ij + P_ji = 1 and position bias cancels."""
    k = len(logits)
    return [[0.5 if i == j else 0.5 * (sigmoid(logits[i][j]) + sigmoid(-logits[j][i]))
             for j in range(k)] for i in range(k)]


def pick(strength: list[float], ties: str = "distinct") -> tuple[int, int]:
    """(chosen, rejected) indices: the first highest, and the first (``first``) or last
    (``distinct``) lowest."""
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {TIE_RULES}, not {ties!r}")
    k = len(strength)
    chosen = max(range(k), key=lambda i: (strength[i], -i))
    sign = 1 if ties == "first" else -1
    rejected = min(range(k), key=lambda i: (strength[i], sign * i))
    return chosen, rejected


def _check_scores(prompt_id: str, k: int, scores: Any) -> list[float]:
    if not isinstance(scores, list) or len(scores) != k:
        got = len(scores) if isinstance(scores, list) else repr(scores)
        raise DataError(f"prompt {prompt_id}: {k} responses but {got} scores")
    for i, s in enumerate(scores):
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not math.isfinite(s):
            raise DataError(f"prompt {prompt_id}: score {i} is {s!r}, expected a finite number")
    return scores


def _check_matrix(prompt_id: str, k: int, p: Any) -> Matrix:
    """``p`` if it is a K×K win-probability matrix: entries in [0, 1], P_ii = ½, P_ij + P_ji = 1."""
    if not isinstance(p, list) or len(p) != k or not all(isinstance(r, list) and len(r) == k for r in p):
        raise DataError(f"prompt {prompt_id}: pairwise probabilities are not a {k}×{k} matrix")
    for i in range(k):
        for j in range(k):
            x = p[i][j]
            if not isinstance(x, (int, float)) or isinstance(x, bool) or not 0.0 <= x <= 1.0:
                raise DataError(f"prompt {prompt_id}: pairwise P[{i}][{j}] is {x!r}, expected a "
                                "probability")
            if abs(x + p[j][i] - 1.0) > SYMMETRY_TOL:
                raise DataError(f"prompt {prompt_id}: pairwise P[{i}][{j}] + P[{j}][{i}] = "
                                f"{x + p[j][i]!r}, expected 1")
    return p


def preference_row(prompt_id: str, prompt: str, responses: list[str], scores: list[float] | None,
                   *, pairwise: Matrix | None = None, ties: str = "distinct") -> dict[str, Any]:
    """One row of ``preferences.jsonl`` (the official SPPO columns plus the full matrix), from the
    scores (``pairwise`` None) or from the ranker's pairwise probability matrix."""
    k = len(responses)
    if pairwise is None:
        strength = _check_scores(prompt_id, k, scores)
        p = probability_matrix(strength)
    else:
        p = [[float(x) for x in row] for row in _check_matrix(prompt_id, k, pairwise)]
        strength = [sum(row) / k for row in p]
    if k < 2:
        raise DataError(f"prompt {prompt_id}: need at least 2 scored responses, got {k}")
    w, lo = pick(strength, ties)
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


def row_from_scores(g: dict[str, Any], ranked: dict[str, Any], probabilities: str = "scores",
                    ties: str = "distinct") -> dict[str, Any]:
    """The preference row of generation ``g`` from its ``scores.jsonl`` row ``ranked``, under the
    estimator ``probabilities``; a run ranked before matrices were stored has scores only."""
    if probabilities not in ESTIMATORS:
        raise ValueError(f"probabilities must be one of {ESTIMATORS}, not {probabilities!r}")
    matrix = None
    if probabilities == "pairwise":
        matrix = ranked.get("pairwise")
        if matrix is None:
            raise DataError(f"prompt {g['prompt_id']}: no pairwise probabilities (ranked with "
                            "probabilities: scores?); rank again with probabilities: pairwise")
    return preference_row(g["prompt_id"], g["prompt"], g["responses"], ranked.get("scores"),
                          pairwise=matrix, ties=ties)


CHECKED_FIELDS = ("prompt", "chosen", "rejected", "chosen_probs", "chosen_probs_win", "chosen_probs_lose")


def check_preferences(rows: list[dict[str, Any]], generations: list[dict[str, Any]],
                      ranked: dict[str, dict[str, Any]], where: str, *,
                      probabilities: str = "scores", ties: str = "distinct") -> None:
    """Refuse preference rows that do not follow from the generations and the ``scores.jsonl`` rows
    (``ranked``, by prompt id: scores, and matrices under ``pairwise``) they were made from (an
    edited or corrupted file): ``where`` names the file in the error."""
    if [r.get("prompt_id") for r in rows] != [g["prompt_id"] for g in generations]:
        raise DataError(f"{where}: its prompts are not the {len(generations)} generated in this "
                        f"iteration (it has {len(rows)} rows)")
    source = "pairwise probabilities" if probabilities == "pairwise" else "scores"
    for n, (row, g) in enumerate(zip(rows, generations, strict=True), 1):
        if g["prompt_id"] not in ranked:
            raise DataError(f"{where}:{n}: prompt {g['prompt_id']} has no scores to follow from")
        want = row_from_scores(g, ranked[g["prompt_id"]], probabilities, ties)
        for field in CHECKED_FIELDS:
            got = row.get(field)
            same = (isinstance(got, float) and math.isclose(got, want[field], rel_tol=1e-12)
                    if isinstance(want[field], float) else got == want[field])
            if not same:
                raise DataError(f"{where}:{n}: prompt {g['prompt_id']}: {field} is {got!r}, but its "
                                f"{source} give {want[field]!r} (was the file edited?)")
