"""Arena-Hard-Auto scores from judged games, as the official ``show_result.py`` computes them.

A judged question yields *battles* of the model against the baseline, each a score from the
model's side (1 win, ½ tie, 0 loss); a strong verdict (``>>``) counts ``WEIGHT`` = 3 times.
Game 1 shows the baseline as assistant A, game 2 the model.

- **v0.1** (``show_result.py`` of 2024): Bradley–Terry by unpenalised logistic regression on the
  Elo scale (400, base 10), the baseline anchored at 1000; the score is the predicted win rate
  against the baseline. The CI: 100 bootstrap resamples of the battle rows (``numpy`` seeded with
  42, as the official script), 2.5/97.5 percentiles of the ratings, turned into win rates. A game
  without a valid verdict is dropped on its own.
- **v2.0** (``show_result.py`` of 2025): a question is dropped when either game lacks a valid
  verdict; the score is the mean battle score, and the CI the 5/95 quantiles over 100 bootstrap
  resamples within each model (the official script leaves this unseeded; here the seed is 42).
- **Style control** (option; the 2025 formulation for both versions): Bradley–Terry with the
  length difference and markdown-density differences (headers, lists, bold; code blocks removed)
  as extra standardised features, fit with L-BFGS on bootstrap resamples; the score is the median
  win rate with the model's style effect removed.

All battles are against one baseline, so without style control the Bradley–Terry win rate equals
the weighted mean battle score in closed form (tested).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

WEIGHT = 3
ROUNDS = 100
SEED = 42
# a game's verdict label -> battle scores from the side of assistant A
_A_SCORES = {"A>B": [1.0], "A>>B": [1.0] * WEIGHT, "A=B": [0.5], "A<<B": [0.0] * WEIGHT, "A<B": [0.0],
             "B>A": [0.0], "B>>A": [0.0] * WEIGHT, "B=A": [0.5], "B<<A": [1.0] * WEIGHT, "B<A": [1.0]}
# the 2024 script knew five labels only; any other was a dropped game
V01_LABELS = ("A>B", "A>>B", "A=B", "B>A", "B>>A")


def game_scores(label: str | None, model_is_a: bool, labels: Iterable[str] = _A_SCORES) -> list[float]:
    """Battle scores of the model for one game's verdict ([] for no valid verdict)."""
    if label not in labels or label not in _A_SCORES:
        return []
    scores = _A_SCORES[label]
    return list(scores) if model_is_a else [1.0 - s for s in scores]


def battles(rows: list[dict[str, Any]], version: str):
    """Battle rows (id, model, category, score) in the official order, and the invalid-game count.

    ``rows`` are normalised judgment rows: ``{"id", "model", "category", "labels": [g1, g2]}``.
    """
    import pandas as pd

    out, invalid = [], 0
    for r in rows:
        g1, g2 = r["labels"][0], r["labels"][1] if len(r["labels"]) > 1 else None
        if version == "v0.1":  # game by game; 2024 labels only
            s1 = game_scores(g1, False, V01_LABELS)
            s2 = game_scores(g2, True, V01_LABELS)
            invalid += (not s1) + (not s2)
            scores = s1 + s2
        else:  # both games or neither
            s1, s2 = game_scores(g1, False), game_scores(g2, True)
            if not s1 or not s2:
                invalid += 2
                continue
            scores = s2 + s1  # the 2025 script lists game 2's scores first
        out += [(r["id"], r["model"], r["category"], s) for s in scores]
    return pd.DataFrame(out, columns=["id", "model", "category", "score"]), invalid


# Bradley–Terry (v0.1) --------------------------------------------------------------------------
def bt_ratings(df, baseline: str) -> dict[str, float]:
    """Elo-scale Bradley–Terry ratings, baseline = 1000, as ``compute_mle_elo`` (v0.1).

    Every battle is entered twice (a win as two wins, a tie as one win and one loss) and fit by
    logistic regression without intercept or penalty (tolerance 1e-8).
    """
    from sklearn.linear_model import LogisticRegression

    models = sorted(set(df["model"]) | {baseline})
    col = {m: i for i, m in enumerate(models)}
    n = len(df)
    x = np.zeros((2 * n, len(models)))
    x[np.arange(n), [col[m] for m in df["model"]]] = math.log(10)
    x[np.arange(n), col[baseline]] = -math.log(10)
    x[n:] = x[:n]
    s = df["score"].to_numpy(dtype=float)
    y = np.concatenate([s >= 0.5, s > 0.5]).astype(float)
    if y.min() == y.max():  # one class only: the MLE is at infinity
        r = 400.0 * 8 * (1 if y[0] else -1)  # a win rate of 1 − 1e-8 or 1e-8
        return {m: (1000.0 if m == baseline else 1000.0 + r) for m in models}
    lr = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-8).fit(x, y)
    elo = 400.0 * lr.coef_[0] + 1000.0
    elo += 1000.0 - elo[col[baseline]]
    return {m: float(elo[col[m]]) for m in models}


def win_rate(rating: float, baseline_rating: float = 1000.0) -> float:
    return 1.0 / (1.0 + 10 ** ((baseline_rating - rating) / 400.0))


def _summary(point: float, boots: np.ndarray, ci: tuple[float, float]) -> dict[str, Any]:
    lo, hi = np.nanpercentile(boots, ci)
    return {"score": 100 * point, "ci_lower": 100 * float(lo), "ci_upper": 100 * float(hi),
            "standard_error": 100 * float(np.nanstd(boots, ddof=1))}


def score_v01(df, baseline: str, ci: tuple[float, float] = (2.5, 97.5), rounds: int = ROUNDS,
              seed: int = SEED) -> dict[str, dict[str, Any]]:
    """Per model: Bradley–Terry win rate vs the baseline (0–100) and its bootstrap CI."""
    point = bt_ratings(df, baseline)
    rng = np.random.RandomState(seed)  # the stream of np.random.seed(42) + DataFrame.sample
    boot = [bt_ratings(df.sample(frac=1.0, replace=True, random_state=rng), baseline)
            for _ in range(rounds)]
    out = {}
    for m in sorted(set(df["model"])):
        ratings = np.array([b.get(m, np.nan) for b in boot])
        lo, hi = np.nanpercentile(ratings, ci)  # percentiles of ratings, then win rates
        wins = np.array([win_rate(r) for r in ratings])
        out[m] = {"score": 100 * win_rate(point[m]), "ci_lower": 100 * win_rate(lo),
                  "ci_upper": 100 * win_rate(hi), "standard_error": 100 * float(np.nanstd(wins, ddof=1))}
    return out


def score_v2(df, ci: tuple[float, float] = (5.0, 95.0), rounds: int = ROUNDS,
             seed: int = SEED) -> dict[str, dict[str, Any]]:
    """Per model: mean battle score (0–100), bootstrap mean and CI as the 2025 script."""
    rng = np.random.RandomState(seed)
    g = df[["model", "score"]]
    boots = [g.groupby("model").sample(frac=1.0, replace=True, random_state=rng)
             .groupby("model")["score"].mean() for _ in range(rounds)]
    out = {}
    for m in sorted(set(df["model"])):
        values = np.array([b[m] for b in boots])
        out[m] = _summary(float(values.mean()), values, ci)
    return out


# style control -------------------------------------------------------------------------------
_CODE = re.compile(r"```([^`]*)```")


def markdown_counts(text: str) -> dict[str, dict[str, int]]:
    """Headers, list items and bold spans outside code blocks, as arena-hard-auto's answer metadata."""
    prose = text
    for block in _CODE.findall(text):
        prose = prose.replace(block, "")

    def n(pattern: str) -> int:
        return len(re.findall(pattern, prose, re.MULTILINE))

    return {"header_count": {f"h{k}": n(rf"^#{{{k}}}\s") for k in range(1, 7)},
            "list_count": {"ordered": n(r"^\s*\d+\.\s"), "unordered": n(r"^\s*[-*+]\s")},
            "bold_count": {"**": n(r"\*\*[^*\n]+\*\*"), "__": n(r"__[^_\n]+__")}}


def style_features(text: str, count_tokens: Callable[[str], int]) -> list[float]:
    """[token length, header count, list-item count, bold count]."""
    counts = markdown_counts(text)
    return [float(count_tokens(text)), *(float(sum(counts[k].values()))
                                         for k in ("header_count", "list_count", "bold_count"))]


def _fit_bt(features, outcomes):
    import torch

    logits = torch.nn.Parameter(torch.full((features.shape[1],), 0.5))
    opt = torch.optim.LBFGS([logits], lr=0.1, max_iter=50, tolerance_grad=1e-9, tolerance_change=1e-9)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(features @ logits, outcomes,
                                                                    reduction="sum")
        loss.backward()
        return loss

    opt.step(closure)
    return logits.detach()


def score_style_controlled(df, model_style: np.ndarray, baseline_style: np.ndarray, baseline: str,
                           ci: tuple[float, float], rounds: int = ROUNDS,
                           seed: int = SEED) -> dict[str, dict[str, Any]]:
    """Per model: style-controlled Bradley–Terry win rate vs the baseline (median, CI, 0–100).

    ``model_style``/``baseline_style`` hold :func:`style_features` of the two answers of each
    battle row.
    """
    import torch

    m, b = model_style.astype(float), baseline_style.astype(float)
    feats = np.zeros_like(m)
    total = m[:, 0] + b[:, 0]
    feats[:, 0] = np.divide(m[:, 0] - b[:, 0], total, out=np.zeros_like(total), where=total > 0)
    md = np.divide(m[:, 1:], m[:, :1], out=np.zeros_like(m[:, 1:]), where=m[:, :1] > 0)
    bd = np.divide(b[:, 1:], b[:, :1], out=np.zeros_like(b[:, 1:]), where=b[:, :1] > 0)
    feats[:, 1:] = (md - bd) / (md + bd + 1)
    std = feats.std(axis=0, ddof=1) if len(feats) > 1 else np.zeros(feats.shape[1])
    keep = std > 0  # a constant feature cannot be standardised (and explains nothing)
    style = (feats[:, keep] - feats[:, keep].mean(axis=0)) / std[keep]
    models = sorted(set(df["model"]) | {baseline})
    col = {name: i for i, name in enumerate(models)}
    onehot = np.zeros((len(df), len(models)))
    onehot[np.arange(len(df)), [col[x] for x in df["model"]]] = 1.0
    onehot[:, col[baseline]] = -1.0
    x = torch.tensor(np.concatenate([onehot, style], axis=1), dtype=torch.float32)
    y = torch.tensor(df["score"].to_numpy(dtype=float), dtype=torch.float32)
    idx = np.random.RandomState(seed).randint(0, len(df), size=(rounds, len(df)))
    coefs = torch.stack([_fit_bt(x[i], y[i]) for i in idx]).numpy()
    out = {}
    for name in sorted(set(df["model"])):
        wins = 1.0 / (1.0 + np.exp(coefs[:, col[baseline]] - coefs[:, col[name]]))
        out[name] = _summary(float(np.median(wins)), wins, ci)
    return out
