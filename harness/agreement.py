"""How often a ranker agrees with published preferences (AlpacaEval's GPT-4-Turbo annotations).

Each annotation row compares ``output_1`` and ``output_2`` for one instruction; its ``preference``
(1 to 2, weighted by the judge's log-probabilities) says which GPT-4-Turbo preferred. Exact ties
(1.5) are dropped. The ranker scores the two outputs in the published order and again swapped:

- ``agreement``: the share of pairs where the ranker prefers GPT-4-Turbo's choice (a ranker tie
  counts one half), with a 95 % Wilson interval; ``agreement_swapped``: the same, outputs swapped;
- ``consistency``: the share of pairs where the same output wins in both orders;
- ``first_position_wins``: how often the output shown first wins, over both orders (0.5 = no
  position bias; pointwise rankers and PairRM are order-free by construction).
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

from harness import datafiles
from harness.artifacts import read_json
from harness.errors import DataError
from harness.rank import Ranker


def load_annotations(spec: str) -> list[dict[str, Any]]:
    """Rows of an annotations file: a path, or a mirrored file such as
    ``alpaca_eval/annotations/alpaca-7b.json``."""
    path = Path(spec)
    if not path.exists():
        if spec not in datafiles.manifest():
            raise DataError(f"annotations {spec!r}: no such file, and not a known data file")
        path = datafiles.fetch(spec)
    rows = read_json(path)
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of annotation rows")
    need = {"instruction", "output_1", "output_2", "preference"}
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or need - set(r):
            raise DataError(f"{path}: row {i} lacks {sorted(need - set(r or {}))}")
    return rows


def labelled_pairs(rows: list[dict[str, Any]], limit: int | None = None, seed: int = 0,
                   balanced: bool = False) -> list[dict[str, Any]]:
    """Rows with a decided preference (label 1 or 2); a seeded sample of ``limit`` of them.

    ``balanced``: as many pairs of each label (the rarer label's count, or ``limit`` / 2), so that
    always picking one side scores 50 % (published files are dominated by baseline wins).
    """
    pairs = []
    for r in rows:
        pref = r["preference"]
        if pref is None or (isinstance(pref, float) and math.isnan(pref)) or float(pref) == 1.5:
            continue
        pairs.append({**r, "label": 2 if float(pref) > 1.5 else 1})
    rng = random.Random(seed)
    if balanced:
        sides = [[p for p in pairs if p["label"] == label] for label in (1, 2)]
        each = min(len(sides[0]), len(sides[1]), limit // 2 if limit is not None else len(pairs))
        pairs = rng.sample(sides[0], each) + rng.sample(sides[1], each)
        rng.shuffle(pairs)
    elif limit is not None and limit < len(pairs):
        pairs = rng.sample(pairs, limit)
    return pairs


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def _winner(first: float, second: float) -> float:
    """1 if the first shown output wins, 0 if the second does, 0.5 on a tie."""
    return 1.0 if first > second else 0.0 if first < second else 0.5


def measure(ranker: Ranker, pairs: list[dict[str, Any]]) -> dict[str, Any]:
    if not pairs:
        raise DataError("no annotated pairs with a decided preference to compare against")
    prompts = [p["instruction"] for p in pairs]
    straight = ranker.score(prompts, [[p["output_1"], p["output_2"]] for p in pairs])
    swapped = ranker.score(prompts, [[p["output_2"], p["output_1"]] for p in pairs])
    agree = agree_sw = consistent = first = 0.0
    for p, s, w in zip(pairs, straight, swapped, strict=True):
        one_wins = _winner(s[0], s[1])  # output_1 shown first
        one_wins_sw = 1.0 - _winner(w[0], w[1])  # output_1 shown second
        truth = 1.0 if p["label"] == 1 else 0.0
        agree += 1.0 - abs(one_wins - truth)
        agree_sw += 1.0 - abs(one_wins_sw - truth)
        consistent += 1.0 - abs(one_wins - one_wins_sw)
        first += (one_wins + _winner(w[0], w[1])) / 2
    n = len(pairs)
    low, high = wilson(agree, n)
    return {"n": n, "agreement": agree / n, "agreement_ci95": [low, high],
            "agreement_swapped": agree_sw / n, "consistency": consistent / n,
            "first_position_wins": first / n,
            "judge_prefers_output_2": sum(p["label"] == 2 for p in pairs) / n}
