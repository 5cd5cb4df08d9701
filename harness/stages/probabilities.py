"""Probabilities stage: chosen, rejected and their win probabilities from the ranker's scores
(``preferences.jsonl``, the official SPPO columns)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.artifacts import read_jsonl, write_jsonl
from harness.errors import DataError
from harness.probabilities import row_from_scores

if TYPE_CHECKING:
    from harness.pipeline import SPPORun


def run_stage(run: SPPORun, t: int) -> dict[str, Any]:
    gens = read_jsonl(run.dir.generations(t))
    scores = {r["prompt_id"]: r for r in read_jsonl(run.dir.scores(t))}
    prefs = run.config.preferences
    rows = []
    for g in gens:
        if g["prompt_id"] not in scores:
            raise DataError(f"{run.dir.scores(t)}: no scores for prompt {g['prompt_id']}")
        try:
            rows.append(row_from_scores(g, scores[g["prompt_id"]], prefs.probabilities, prefs.ties))
        except DataError as exc:
            raise DataError(f"{run.dir.scores(t)}: {exc}") from None
    write_jsonl(run.dir.preferences(t), rows)
    mean_gap = sum(r["chosen_probs"] for r in rows) / len(rows)
    return {"pairs": len(rows), "mean_chosen_probs": mean_gap,
            "probabilities": prefs.probabilities, "ties": prefs.ties,
            "same_chosen_and_rejected": sum(r["chosen_index"] == r["rejected_index"] for r in rows)}
