"""Evaluate stage: the checkpoint against the base on held-out prompts, under the run's ranker.

The paper's "PairRM score" style metric: for each held-out prompt one sampled response of the
base and one of the checkpoint (same decoding settings, same seed) are scored by the ranker,
together, or where a response's score does not depend on the others (``Ranker.independent``) the
base's once per run; a win counts 1, a tie ½. Reported in percent with its standard error over
prompts, and the mean Bradley–Terry preference σ(s_new − s_base) beside it. Benchmarks of their
own issues plug in beside this one under ``eval/<benchmark>/results.json``.
"""

from __future__ import annotations

import math
from typing import Any

from harness.benchmarks import Benchmark, Metric, register
from harness.probabilities import sigmoid

BENCHMARK = "win_rate_vs_base"
VERSION = "1"


def win_rate(base_scores: list[float], new_scores: list[float]) -> dict[str, Any]:
    """Win rate of ``new`` over ``base`` (percent), standard error, and the tallies."""
    if len(base_scores) != len(new_scores) or not base_scores:
        raise ValueError("need equally many, and at least one, base and new scores")
    outcomes = [1.0 if n > b else 0.5 if n == b else 0.0
                for b, n in zip(base_scores, new_scores, strict=True)]
    n = len(outcomes)
    mean = sum(outcomes) / n
    var = sum((o - mean) ** 2 for o in outcomes) / (n - 1) if n > 1 else 0.0
    prefs = [sigmoid(s - b) for b, s in zip(base_scores, new_scores, strict=True)]
    return {
        "win_rate": 100 * mean,
        "standard_error": 100 * math.sqrt(var / n),
        "mean_preference": 100 * sum(prefs) / n,
        "n_wins": sum(o == 1.0 for o in outcomes),
        "n_losses": sum(o == 0.0 for o in outcomes),
        "n_ties": sum(o == 0.5 for o in outcomes),
        "n_total": n,
    }


# its stage is the run's own (held-out prompts, the base's answers, the run's ranker): pipeline.py
register(Benchmark(BENCHMARK, "Win rate vs base",
                   (Metric("win_rate", "standard_error", "win rate vs base (%)", base_value=50.0),)))
