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
- **Style control** (option), fitted jointly over the battles of *every* model given (the
  official scripts pool all judgments in the judge's folder; so does the harness: a run's
  checkpoints, the base, published judgment files), with the token counts and markdown counts of
  each answer (the official ``token_len`` where an answer file has it). v0.1 follows the 2024
  script (lmarena/arena-hard-auto@3071ef9 ``show_result.py`` + ``utils_math.py``): features
  (a − b)/(a + b + 1) of the raw counts, standardised; L2-penalised logistic regression
  (scikit-learn defaults); the score is the full-data fit, the CI 2.5/97.5 percentiles of 100
  bootstraps under ``np.random.seed(42)``. v2.0 follows the current script
  (lmarena/arena-hard-auto@196f6b8 ``show_result.py`` + ``utils/math_utils.py``): length
  (m − b)/(m + b), markdown densities count/(length + 1), unpenalised L-BFGS in float32; the score
  is the median of 100 bootstraps, the CI their 5/95 quantiles (seeded 42 here, unseeded there).
  Options: length only or markdown only (``CONTROLS``).

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


def style_counts(meta: dict[str, Any]) -> list[int]:
    """[token_len, headers, list items, bold spans] of an answer's official metadata
    (``conv_metadata`` of 2024, ``metadata`` of 2025): an int as is, a dict summed, as both scripts."""
    return [int(v) if isinstance(v, int) else int(sum(v.values()))
            for v in (meta["token_len"], meta["header_count"], meta["list_count"], meta["bold_count"])]


def style_features(text: str, count_tokens: Callable[[str], int]) -> list[float]:
    """[token length, header count, list-item count, bold count] of a text."""
    return [float(x) for x in style_counts({"token_len": count_tokens(text), **markdown_counts(text)})]


# the feature columns each control option keeps, of [length, headers, lists, bold]
CONTROLS = {"style": (0, 1, 2, 3), "length": (0,), "markdown": (1, 2, 3)}


def _style_arrays(df, features: dict[tuple[str, str], Any], baseline: str) -> tuple[np.ndarray, np.ndarray]:
    """The model's and the baseline's [length, headers, lists, bold] counts of each battle row."""
    m = np.array([features[(i, x)] for i, x in zip(df["id"], df["model"], strict=True)], dtype=np.int64)
    b = np.array([features[(i, baseline)] for i in df["id"]], dtype=np.int64)
    return m.reshape(len(df), 4), b.reshape(len(df), 4)


# style control as the 2024 show_result.py + utils_math.py (lmarena/arena-hard-auto@3071ef9) -----
def _fit_bt_2024(x: np.ndarray, y: np.ndarray, present: list[str], col: dict[str, int],
                 baseline: str) -> dict[str, float]:
    """``fit_bt``: L2-penalised logistic regression (scikit-learn's defaults: C = 1, lbfgs,
    tol 1e-4, 100 iterations), Elo scale, the baseline anchored at 1114.

    As the official function, the first ``len(present)`` ratings are given to ``present`` in
    order: when a bootstrap sample lacks a model, the names after it shift (kept, to agree)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        lr = LogisticRegression(fit_intercept=False).fit(x, y)
    elo = 400 * lr.coef_[0] + 1000
    elo += 1114 - elo[col[baseline]]
    return {name: float(elo[k]) for k, name in enumerate(present)}


def _win_rates_2024(ratings: dict[str, float], baseline: str) -> dict[str, float]:
    """``get_win_rate_column`` (unrounded, 0-100): the win rate against the baseline as
    ``predict_win_rate``'s loop leaves it in the table."""
    out = {}
    base = ratings[baseline]
    for a, r in ratings.items():
        if a == baseline:
            out[a] = 50.0
        elif a < baseline:  # the loop's last write is 1 - P(baseline beats a)
            out[a] = 100 * (1 - 1 / (1 + 10 ** ((r - base) / 400)))
        else:
            out[a] = 100 * (1 / (1 + 10 ** ((base - r) / 400)))
    return out


def score_style_2024(df, features: dict[tuple[str, str], Any], baseline: str, control: str = "style",
                     rounds: int = ROUNDS, seed: int = SEED,
                     ci: tuple[float, float] = (2.5, 97.5)) -> dict[str, dict[str, Any]]:
    """Per model: the 2024 script's style-controlled score (0–100), pooled over every battle in ``df``.

    ``df``: battle rows of all models (``id``, ``model``, ``score`` from the model's side), in
    the order of the official battles table; ``features[(id, model)]`` the [token_len, headers,
    lists, bold] counts of an answer (baseline's included). As ``construct_style_matrices``: the
    baseline is model_a, each battle is entered twice (a tie as one win and one loss); each feature
    is (a − b) / (a + b + 1) of the raw counts, standardised (mean, population std) over all
    battles; ratings ±ln 10. The score is the full-data fit; the CI the 2.5/97.5 percentiles of
    the ratings over ``rounds`` resamples of the battles (``np.random.seed(42)``'s stream, ties
    resampled as pairs, as ``get_bootstrap_result_style_control``), turned into win rates.
    ``standard_error`` (not in the official output) is the std of the bootstrap win rates. Where
    the official percentile is NaN (a model missing from some resample) the CI is None.
    """
    keep = list(CONTROLS[control])
    models = list(dict.fromkeys([baseline, *df["model"]]))  # pd.concat([model_a, model_b]).unique()
    col = {name: i for i, name in enumerate(models)}
    n, p, k = 2 * len(df), len(models), len(keep)
    a_names = np.array([baseline] * len(df) * 2)
    b_names = np.concatenate([df["model"].to_numpy(), df["model"].to_numpy()])
    x = np.zeros([n, p + k])
    x[np.arange(n), [col[m] for m in a_names]] = +math.log(10)
    x[np.arange(n), [col[m] for m in b_names]] = -math.log(10)
    mine, base = _style_arrays(df, features, baseline)
    vec_a = np.concatenate([base, base])[:, keep].T  # (k, n): style_vector[:k]
    vec_b = np.concatenate([mine, mine])[:, keep].T  # style_vector[k:]
    diff = (vec_a - vec_b).astype(float)
    total = (vec_a + vec_b).astype(float) + np.ones(diff.shape)
    diff /= total
    mean, std = np.mean(diff, axis=1), np.std(diff, axis=1)
    if not (std > 0).all():
        raise ValueError("a style feature is constant over all battles: the official script divides "
                         "by its standard deviation (0)")
    x[:, -k:] = ((diff - mean[:, np.newaxis]) / std[:, np.newaxis]).T
    s = np.concatenate([df["score"].to_numpy(dtype=float)] * 2)
    y = np.zeros(n)
    y[s == 0.0] = 1.0  # winner model_a (the baseline)
    tie = s == 0.5
    tie[len(tie) // 2:] = False
    y[tie] = 1.0
    point = _fit_bt_2024(x, y, models, col, baseline)
    rng = np.random.RandomState(seed)
    half = len(df)
    is_tie = df["score"].to_numpy(dtype=float) == 0.5
    boots = []
    for _ in range(rounds):
        idx = rng.choice(half, size=half, replace=True)
        nontie = idx[~is_tie[idx]]
        ties = np.concatenate([idx[is_tie[idx]], idx[is_tie[idx]] + half])
        bx = np.concatenate([x[nontie], x[nontie], x[ties]])
        by = np.concatenate([y[nontie], y[nontie], y[ties]])
        absent = ~bx[:, :p].any(axis=0)
        boots.append(_fit_bt_2024(bx, by, [m for m in models if not absent[col[m]]], col, baseline))
    table = {m: np.array([b.get(m, np.nan) for b in boots]) for m in models}
    lower = {m: float(np.percentile(v, ci[0])) for m, v in table.items()}
    upper = {m: float(np.percentile(v, ci[1])) for m, v in table.items()}
    score, lo, hi = (_win_rates_2024(r, baseline) for r in (point, lower, upper))
    out = {}
    for m in sorted(set(df["model"]) - {baseline}):
        wins = 100 / (1 + 10 ** ((table[baseline] - table[m]) / 400))
        out[m] = {"score": score[m], "ci_lower": _finite(lo[m]), "ci_upper": _finite(hi[m]),
                  "standard_error": _finite(float(np.nanstd(wins, ddof=1)))}
    return out


def _finite(x: float) -> float | None:
    """None for the official script's NaN (a percentile over resamples some of which lack the
    model: few battles)."""
    return x if math.isfinite(x) else None


# style control as the 2025 show_result.py + utils/math_utils.py (lmarena/arena-hard-auto@196f6b8) -
def _fit_bt_2025(features, outcomes):
    """``fit_pairwise_model`` (loss "bt"): logits from 0.5, L-BFGS (lr 0.1, 50 iterations,
    tolerances 1e-9), summed binary cross-entropy, no penalty; float32."""
    import torch

    logits = torch.nn.Parameter(torch.nn.init.constant_(torch.empty(features.shape[1]), 0.5))
    opt = torch.optim.LBFGS([logits], lr=0.1, max_iter=50, tolerance_grad=1e-9, tolerance_change=1e-9)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(features @ logits, outcomes.float(),
                                                                    reduction="sum")
        loss.backward()
        return loss

    opt.step(closure)
    return logits.detach()


def score_style_2025(df, features: dict[tuple[str, str], Any], baseline: str, control: str = "style",
                     rounds: int = ROUNDS, seed: int = SEED,
                     ci: tuple[float, float] = (5.0, 95.0)) -> dict[str, dict[str, Any]]:
    """Per model: the 2025 script's style-controlled score (0–100), pooled over every battle in ``df``.

    As ``print_leaderboard_with_style_features`` (float32 throughout): the length feature is
    (m − b) / (m + b) of the token counts; markdown counts become densities count / (length + 1)
    and each feature (m − b) / (m + b + 1); all are standardised (mean, sample std) over all
    battles; the models one-hot (+1 the model, −1 the baseline, sorted names). ``rounds`` fits on
    resamples of the battle rows (``np.random.randint``; the official script leaves the stream
    unseeded, here ``RandomState(seed)``); each model's win rate vs the baseline per fit; the
    score is the median, the CI the ``ci`` quantiles. ``standard_error`` (not in the official
    output) is the std of the bootstrap win rates.

    ``control`` "length" / "markdown" keep only those style columns, as the script's options mean
    to (its slicing takes model columns instead; see the tests)."""
    import torch

    keep = list(CONTROLS[control])
    mine, base = (torch.tensor(a.tolist(), dtype=torch.float32)
                  for a in _style_arrays(df, features, baseline))
    final = torch.zeros_like(mine)
    final[:, 0] = (mine[:, 0] - base[:, 0]) / (mine[:, 0] + base[:, 0])
    mine_md = mine[:, 1:] / (mine[:, :1] + 1)
    base_md = base[:, 1:] / (base[:, :1] + 1)
    final[:, 1:] = (mine_md - base_md) / (mine_md + base_md + 1)
    if final.isnan().any():
        raise ValueError("a battle's two answers both have no tokens: the length feature is 0/0")
    normalised = (final - torch.mean(final, axis=0)) / torch.std(final, axis=0)
    if normalised[:, keep].isnan().any():
        raise ValueError("a style feature is constant over all battles: the official script divides "
                         "by its standard deviation (0)")
    outcomes = torch.tensor(df["score"].tolist())
    names = df["model"].tolist()
    models = sorted({*names, baseline})
    col = {name: i for i, name in enumerate(models)}
    onehot = [[0] * len(models) for _ in names]
    for row, name in zip(onehot, names, strict=True):
        row[col[name]] = 1
        row[col[baseline]] = -1
    x = torch.cat([torch.tensor(onehot, dtype=torch.float32), normalised[:, keep]], dim=1)
    idx = np.random.RandomState(seed).randint(low=0, high=x.shape[0], size=(rounds, x.shape[0]))
    coefs = torch.stack([_fit_bt_2025(x[i], outcomes[i]) for i in idx])[:, :len(models)]
    exp = torch.exp(coefs)
    probs = exp / (exp + exp[:, col[baseline]:col[baseline] + 1])  # to_winrate_probabilities
    table = np.array(probs.tolist())
    out = {}
    for m in sorted(set(names) - {baseline}):
        wins = table[:, col[m]]
        out[m] = {"score": 100 * float(np.quantile(wins, 0.5)),
                  "ci_lower": 100 * float(np.quantile(wins, ci[0] / 100)),
                  "ci_upper": 100 * float(np.quantile(wins, ci[1] / 100)),
                  "standard_error": 100 * float(np.std(wins, ddof=1))}
    return out


def score_style_controlled(df, features: dict[tuple[str, str], Any], baseline: str, version: str,
                           control: str = "style", rounds: int = ROUNDS,
                           seed: int = SEED) -> dict[str, dict[str, Any]]:
    """Style-controlled scores of all models in ``df``, fitted jointly: v0.1 by the 2024 script,
    v2.0 by the 2025 one."""
    if control not in CONTROLS:
        raise ValueError(f"style control {control!r} is not one of {sorted(CONTROLS)}")
    fit = score_style_2024 if version == "v0.1" else score_style_2025
    return fit(df, features, baseline, control, rounds, seed)
