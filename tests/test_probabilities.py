import math

import numpy as np
import pytest

from harness.errors import DataError
from harness.probabilities import (
    check_preferences,
    pairwise_probabilities,
    pick,
    preference_row,
    row_from_scores,
)


def test_columns_against_hand_computed_values() -> None:
    # scores s = [0, 2, -1]: winner 1, loser 2.
    row = preference_row("p1", "x", ["a", "b", "c"], [0.0, 2.0, -1.0])
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    assert (row["chosen"], row["rejected"]) == ("b", "c")
    assert row["chosen_probs"] == pytest.approx(sig(3.0), abs=1e-15)
    assert row["chosen_probs_win"] == pytest.approx((sig(2) + 0.5 + sig(3)) / 3, abs=1e-15)
    assert row["chosen_probs_lose"] == pytest.approx((sig(-1) + sig(-3) + 0.5) / 3, abs=1e-15)
    p = row["probability"]
    for i in range(3):
        assert p[i][i] == 0.5
        for j in range(3):
            assert p[i][j] + p[j][i] == pytest.approx(1.0, abs=1e-15)
    # 0.7310585786300049 = σ(1), written out so that a wrong sign or scale cannot pass.
    assert p[0][2] == pytest.approx(0.7310585786300049, abs=1e-15)


def test_ties_still_give_distinct_chosen_and_rejected() -> None:
    row = preference_row("p", "x", ["a", "b", "c"], [1.0, 1.0, 1.0])
    assert row["chosen_index"] == 0 and row["rejected_index"] == 2
    assert row["chosen_probs"] == 0.5 and row["chosen_probs_win"] == 0.5


def test_extreme_scores_do_not_overflow() -> None:
    row = preference_row("p", "x", ["a", "b"], [1000.0, -1000.0])
    assert row["chosen_probs"] == 1.0 and row["probability"][1][0] == 0.0


@pytest.mark.parametrize(
    ("scores", "message"),
    [([1.0], "need at least 2 scored responses"), ([1.0, float("nan")], "score 1 is nan"),
     ([1.0, None], "score 1 is None"), ([1.0, 2.0, 3.0], "2 responses but 3 scores")],
)
def test_bad_scores_are_named(scores, message) -> None:
    responses = ["a"] if len(scores) == 1 else ["a", "b"]
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        preference_row("p9", "x", responses, scores)


# --- the pairwise estimator ---------------------------------------------------------------------
# Pairwise logits C[i][j] (i shown first), chosen so every σ is a round number:
#   σ(ln 3) = 3/4, σ(ln 4) = 4/5, σ(ln 9) = 9/10, σ(ln 19) = 19/20, σ(0) = 1/2.
HAND_LOGITS = [[0.0, math.log(3), 0.0],
               [-math.log(4), 0.0, math.log(19)],
               [math.log(9), -math.log(19), 0.0]]
# P_ij = ½(σ(C_ij) + σ(−C_ji)):
#   P01 = ½(σ(ln 3) + σ(ln 4))    = ½(0.75 + 0.80) = 0.775
#   P10 = ½(σ(−ln 4) + σ(−ln 3))  = ½(0.20 + 0.25) = 0.225
#   P02 = ½(σ(0) + σ(−ln 9))      = ½(0.50 + 0.10) = 0.30
#   P20 = ½(σ(ln 9) + σ(0))       = ½(0.90 + 0.50) = 0.70
#   P12 = ½(σ(ln 19) + σ(ln 19))  = ½(0.95 + 0.95) = 0.95
#   P21 = ½(σ(−ln 19) + σ(−ln 19)) = ½(0.05 + 0.05) = 0.05
HAND_P = [[0.5, 0.775, 0.3],
          [0.225, 0.5, 0.95],
          [0.7, 0.05, 0.5]]


def test_pairwise_probabilities_against_hand_computed_values() -> None:
    p = pairwise_probabilities(HAND_LOGITS)
    for i in range(3):
        assert p[i][i] == 0.5
        for j in range(3):
            assert p[i][j] + p[j][i] == pytest.approx(1.0, abs=1e-15)
            assert p[i][j] == pytest.approx(HAND_P[i][j], abs=1e-15)
    # row means (1.575, 1.675, 1.25)/3: chosen 1, rejected 2
    row = preference_row("p", "x", ["a", "b", "c"], None, pairwise=p)
    assert (row["chosen_index"], row["rejected_index"]) == (1, 2)
    assert row["chosen_probs"] == pytest.approx(0.95, abs=1e-15)
    assert row["chosen_probs_win"] == pytest.approx(0.5583333333333333, abs=1e-15)  # 1.675 / 3
    assert row["chosen_probs_lose"] == pytest.approx(0.4166666666666667, abs=1e-15)  # 1.25 / 3
    assert row["probability"] == p


def test_pairwise_estimator_chooses_by_row_means_not_scores() -> None:
    # An antisymmetric C where the estimators disagree: response 0 crushes 1 (C01 = 10) but loses to
    # 2 (C02 = −1), response 2 beats both by 1. Scores (row means of C − Cᵀ) = (18, −22, 4)/3 pick 0;
    # P row sums: 0: ½ + σ(10) + σ(−1) = 1.769; 2: σ(1) + σ(1) + ½ = 1.962; 1: ½ + σ(−10) + σ(−1) = 0.769.
    c = [[0.0, 10.0, -1.0], [-10.0, 0.0, -1.0], [1.0, 1.0, 0.0]]
    scores = [sum(c[i][j] - c[j][i] for j in range(3)) / 3 for i in range(3)]
    by_scores = preference_row("p", "x", ["a", "b", "c"], scores)
    by_pairs = preference_row("p", "x", ["a", "b", "c"], scores, pairwise=pairwise_probabilities(c))
    assert (by_scores["chosen_index"], by_scores["rejected_index"]) == (0, 1)
    assert (by_pairs["chosen_index"], by_pairs["rejected_index"]) == (2, 1)
    assert by_pairs["chosen_probs"] == pytest.approx(0.7310585786300049, abs=1e-15)  # σ(1)
    assert by_pairs["chosen_probs_win"] == pytest.approx((0.5 + 2 * 0.7310585786300049) / 3, abs=1e-15)


@pytest.mark.parametrize(("matrix", "message"), [
    ([[0.5, 0.7], [0.2, 0.5]], r"P\[0\]\[1\] \+ P\[1\]\[0\] = 0.899"),
    ([[0.5, 1.5], [-0.5, 0.5]], r"P\[0\]\[1\] is 1.5, expected a probability"),
    ([[0.5, 0.5]], "not a 2×2 matrix"),
    ([[0.6, 0.5], [0.5, 0.5]], r"P\[0\]\[0\] \+ P\[0\]\[0\] = 1.2"),
])
def test_bad_pairwise_matrices_are_named(matrix, message) -> None:
    with pytest.raises(DataError, match=message):
        preference_row("p9", "x", ["a", "b"], None, pairwise=matrix)


# --- tie rules ----------------------------------------------------------------------------------
@pytest.mark.parametrize("scores", [[1.0, 1.0, 1.0], [3.0, 1.0, 3.0, 1.0], [0.0, 2.0, 2.0, -1.0, -1.0],
                                    [2.0, 1.0], [5.0, 5.0, 4.0, 4.0, 4.0]])
def test_tie_rule_first_is_numpy_argmax_and_argmin(scores) -> None:
    row = preference_row("p", "x", [f"r{i}" for i in range(len(scores))], scores, ties="first")
    assert (row["chosen_index"], row["rejected_index"]) == (np.argmax(scores), np.argmin(scores))


def test_tie_rule_first_matches_numpy_on_random_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        strength = rng.integers(0, 3, size=int(rng.integers(1, 7))).astype(float).tolist()
        assert pick(strength, "first") == (np.argmax(strength), np.argmin(strength))


def test_all_equal_under_first_gives_chosen_equal_rejected_as_upstream() -> None:
    row = preference_row("p", "x", ["a", "b", "c"], [1.0, 1.0, 1.0], ties="first")
    assert row["chosen_index"] == row["rejected_index"] == 0 and row["chosen"] == row["rejected"] == "a"
    assert row["chosen_probs"] == 0.5
    # the same under the pairwise estimator: all row means ½
    even = [[0.5] * 3 for _ in range(3)]
    row = preference_row("p", "x", ["a", "b", "c"], None, pairwise=even, ties="first")
    assert (row["chosen_index"], row["rejected_index"]) == (0, 0)


def test_tie_rule_distinct_takes_the_last_lowest() -> None:
    scores = [3.0, 1.0, 3.0, 1.0]
    assert pick(scores, "distinct") == (0, 3) and pick(scores, "first") == (0, 1)
    row = preference_row("p", "x", ["a", "b", "c", "d"], scores)  # distinct is the default
    assert (row["chosen"], row["rejected"]) == ("a", "d")


# --- rows checked against what they follow from -------------------------------------------------
def _gens() -> list[dict]:
    return [{"prompt_id": "p1", "prompt": "x", "responses": ["a", "b", "c"]}]


def test_check_preferences_under_each_estimator_and_tie_rule() -> None:
    ranked = {"p1": {"scores": [0.0, 2.0, -1.0], "pairwise": HAND_P}}
    rows = [row_from_scores(_gens()[0], ranked["p1"], "pairwise", "first")]
    check_preferences(rows, _gens(), ranked, "prefs.jsonl", probabilities="pairwise", ties="first")
    # the same rows do not follow from the scores: chosen_probs σ(3) ≠ P12
    with pytest.raises(DataError, match=r"prefs.jsonl:1: prompt p1: chosen_probs is 0.95, but its "
                                        r"scores give 0.952574"):
        check_preferences(rows, _gens(), ranked, "prefs.jsonl")
    edited = [{**rows[0], "chosen_probs_win": 0.6}]
    with pytest.raises(DataError, match=r"chosen_probs_win is 0.6, but its pairwise probabilities give"):
        check_preferences(edited, _gens(), ranked, "prefs.jsonl", probabilities="pairwise", ties="first")


def test_scores_only_rows_of_older_runs_read_under_scores_and_refused_under_pairwise() -> None:
    old = {"prompt_id": "p1", "scores": [0.0, 2.0, -1.0], "ranker": "pairrm"}
    row = row_from_scores(_gens()[0], old)
    assert row == preference_row("p1", "x", ["a", "b", "c"], [0.0, 2.0, -1.0])
    with pytest.raises(DataError, match="prompt p1: no pairwise probabilities"):
        row_from_scores(_gens()[0], old, "pairwise")


def test_a_run_made_before_later_settings_existed_resumes_under_what_it_did() -> None:
    from harness.config import load_config
    from harness.pipeline import _config_diff, _stored_config

    now = load_config("smollm2-135m", "smoke").model_dump(mode="json")
    old = {k: v for k, v in now.items() if k != "preferences"}  # run.json before these settings
    old["training"] = {k: v for k, v in now["training"].items()
                       if k not in ("layout", "last_batch", "weight_rounding")}
    assert _config_diff(_stored_config(old), now) == []
    pairwise = {**now, "preferences": {"probabilities": "pairwise", "ties": "distinct"}}
    changed = "preferences.probabilities: 'scores' -> 'pairwise'"
    assert _config_diff(_stored_config(old), pairwise) == [changed]
    assert _config_diff(_stored_config(pairwise), now) == [changed.replace("'scores' -> 'pairwise'",
                                                                           "'pairwise' -> 'scores'")]
    official = {**now, "training": {**now["training"], "layout": "official"}}
    assert _config_diff(_stored_config(old), official) == ["training.layout: 'clean' -> 'official'"]
    split = {**now, "training": {**now["training"], "weight_rounding": "split"}}
    assert _config_diff(_stored_config(old), split) == ["training.weight_rounding: 'single' -> 'split'"]
