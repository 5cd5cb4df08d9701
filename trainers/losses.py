"""Preference losses on summed response log-probabilities, per example (no reduction).

Notation: a_w = log π(y_w|x) − log π_ref(y_w|x), a_l likewise for y_l, η = 1/β.

- ``sppo``        ½[(a_w − η(P_win − ½))² + (a_l − η(P_lose − ½))²]    (official SPPO)
- ``sppo_single`` ½[(a_w − η(P_wl − ½))² + (a_l + η(P_wl − ½))²]       (official SPPO)
- ``sppo_hard``   (a_w − ½η)² + (a_l + ½η)²                           (TRL DPOTrainer)
- ``sigmoid``     −log σ(β(a_w − a_l))                                  (DPO)
- ``ipo``         (a_w − a_l − ½η)²                                     (official SPPO's IPO)
- ``ipo_mean``    (a_w − a_l − ½η)²   on length-averaged log-probs      (IPO, as TRL)

P_win = ``chosen_probs_win``, P_lose = ``chosen_probs_lose``, P_wl = ``chosen_probs``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


@dataclass
class PreferenceBatch:
    """Log-probabilities of one batch and the SPPO probability columns."""

    policy_chosen: Tensor
    policy_rejected: Tensor
    ref_chosen: Tensor
    ref_rejected: Tensor
    chosen_probs: Tensor
    chosen_probs_win: Tensor
    chosen_probs_lose: Tensor


def sppo(b: PreferenceBatch, beta: float) -> Tensor:
    a_w, a_l, eta = b.policy_chosen - b.ref_chosen, b.policy_rejected - b.ref_rejected, 1.0 / beta
    return 0.5 * ((a_w - eta * (b.chosen_probs_win - 0.5)) ** 2
                  + (a_l - eta * (b.chosen_probs_lose - 0.5)) ** 2)


def sppo_single(b: PreferenceBatch, beta: float) -> Tensor:
    a_w, a_l, eta = b.policy_chosen - b.ref_chosen, b.policy_rejected - b.ref_rejected, 1.0 / beta
    return 0.5 * ((a_w - eta * (b.chosen_probs - 0.5)) ** 2
                  + (a_l + eta * (b.chosen_probs - 0.5)) ** 2)


def sppo_hard(b: PreferenceBatch, beta: float) -> Tensor:
    a_w, a_l = b.policy_chosen - b.ref_chosen, b.policy_rejected - b.ref_rejected
    return (a_w - 0.5 / beta) ** 2 + (a_l + 0.5 / beta) ** 2


def sigmoid(b: PreferenceBatch, beta: float) -> Tensor:
    margin = (b.policy_chosen - b.ref_chosen) - (b.policy_rejected - b.ref_rejected)
    return -F.logsigmoid(beta * margin)


def ipo(b: PreferenceBatch, beta: float) -> Tensor:
    margin = (b.policy_chosen - b.ref_chosen) - (b.policy_rejected - b.ref_rejected)
    return (margin - 0.5 / beta) ** 2


LOSSES: dict[str, Callable[[PreferenceBatch, float], Tensor]] = {
    "sppo": sppo,
    "sppo_single": sppo_single,
    "sppo_hard": sppo_hard,
    "sigmoid": sigmoid,
    "ipo": ipo,
    "ipo_mean": ipo,  # the same formula; the trainers average the log-probs first
}

# Losses defined on per-token average log-probabilities rather than sums.
LENGTH_NORMALIZED = frozenset({"ipo_mean"})
