import math

import pytest

from harness.errors import DataError
from harness.probabilities import preference_row


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
