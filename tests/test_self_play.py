"""Does ``LOSSES["sppo"]`` really do Self-Play Preference Optimization? A bandit check, no model.

The policy is a softmax over K fixed responses with logits θ (float64). With a known preference
matrix P (P + Pᵀ = 1, diagonal ½) one SPPO iteration is what the trainer does, in miniature:

- the reference is π_t (detached) and the starting point is θ_t;
- the preference pool is every ordered pair (w, l) of responses with P(w ≻ π_t) > P(l ≻ π_t),
  where P(y ≻ π_t) = Σ_j P[y, j] π_t(j), carrying ``chosen_probs_win`` = P(w ≻ π_t),
  ``chosen_probs_lose`` = P(l ≻ π_t) and ``chosen_probs`` = P[w, l] (docs/design.md, "The
  preferences.jsonl columns");
- θ_{t+1} minimises the mean of ``LOSSES["sppo"]`` over that pool (L-BFGS run to a gradient
  norm below 1e-6, asserted, so what is tested is the loss's minimiser and not the optimiser).

The paper's theory: π_{t+1} ≈ π_t·exp(η P(y ≻ π_t))/Z with η = 1/β (multiplicative weights,
log Z replaced by η/2), whose time-averaged policy converges to the von Neumann winner.

Which broken copies of the sppo formula each test catches (checked by monkeypatching
``LOSSES["sppo"]`` in a scratch run; ``trainers/losses.py`` itself never edited):
    sign of η flipped ........................ one-step MW, transitive
    ½ centring dropped (targets ηP) .......... one-step MW, transitive
    centred at 1 instead of ½ ................ one-step MW, time average, transitive
    P_win / P_lose swapped ................... one-step MW, transitive
    η halved (β doubled) ..................... one-step MW, transitive
    ``sppo_single`` / ``sppo_hard`` in its place ... one-step MW, transitive (and time average for
                                                     ``sppo_single``, which never moves here)
The RPS time average alone cannot see a sign flip: the reversed game is again rock-paper-scissors.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from trainers.losses import LOSSES, PreferenceBatch

DT = torch.float64


def rock_paper_scissors(p: float = 0.9) -> torch.Tensor:
    """(rock, paper, scissors): rock ≻ scissors ≻ paper ≻ rock, each with probability p."""
    P = torch.full((3, 3), 0.5, dtype=DT)
    for winner, loser in ((0, 2), (2, 1), (1, 0)):
        P[winner, loser], P[loser, winner] = p, 1 - p
    return P


def bradley_terry(rewards: list[float]) -> torch.Tensor:
    r = torch.tensor(rewards, dtype=DT)
    return torch.sigmoid(r[:, None] - r[None, :])


def tv(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * float((p - q).abs().sum())


def mw_target(pi: torch.Tensor, P: torch.Tensor, eta: float) -> torch.Tensor:
    """The exact multiplicative-weights step π·exp(η P(y ≻ π))/Z."""
    w = pi * torch.exp(eta * (P @ pi))
    return w / w.sum()


def sppo_update(theta_t: torch.Tensor, P: torch.Tensor, beta: float) -> tuple[torch.Tensor, float]:
    """One SPPO iteration on the bandit: the pool from π_t, then argmin of the mean sppo loss."""
    log_ref = torch.log_softmax(theta_t, 0)
    win = P @ log_ref.exp()  # P(y ≻ π_t)
    k = len(theta_t)
    pairs = [(i, j) for i in range(k) for j in range(k) if win[i] > win[j]]
    assert pairs, "the pool is empty"
    w = torch.tensor([i for i, _ in pairs])
    lo = torch.tensor([j for _, j in pairs])
    theta = theta_t.clone().requires_grad_()
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=200, tolerance_grad=1e-12,
                            tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logp = torch.log_softmax(theta, 0)
        batch = PreferenceBatch(logp[w], logp[lo], log_ref[w], log_ref[lo], P[w, lo], win[w],
                                win[lo])
        loss = LOSSES["sppo"](batch, beta).mean()  # looked up per call: patchable in a scratch run
        loss.backward()
        return loss

    opt.step(closure)
    closure()
    return theta.detach(), float(theta.grad.norm())


# --- rock-paper-scissors ------------------------------------------------------------------------
RPS_BETA = 0.5  # η = 2
RPS_T = 400
RPS_PI0 = torch.tensor([0.6, 0.3, 0.1], dtype=DT)  # TV to uniform 0.267
UNIFORM3 = torch.full((3,), 1 / 3, dtype=DT)


@pytest.fixture(scope="module")
def rps_run() -> dict:
    P, eta = rock_paper_scissors(), 1 / RPS_BETA
    theta = RPS_PI0.log()
    avg = torch.zeros(3, dtype=DT)
    step_ratio, step_tv, grad_norms = [], [], []
    for _ in range(RPS_T):
        pi_t = torch.softmax(theta, 0)
        target = mw_target(pi_t, P, eta)
        theta, g = sppo_update(theta, P, RPS_BETA)
        pi_next = torch.softmax(theta, 0)
        step_tv.append(tv(pi_next, target))
        step_ratio.append(tv(pi_next, target) / tv(pi_t, target))
        grad_norms.append(g)
        avg += pi_next
    last = torch.softmax(theta, 0)
    return {"avg": avg / RPS_T, "last": last, "step_ratio": step_ratio, "step_tv": step_tv,
            "grad_norms": grad_norms}


def test_sppo_update_is_a_multiplicative_weights_step(rps_run: dict) -> None:
    """Each SPPO update lands close to π_t·exp(η P(y ≻ π_t))/Z, far closer than π_t was.

    Measured (β = 0.5, P = 0.9, π_0 = (.6, .3, .1)): the ratio TV(π_{t+1}, MW)/TV(π_t, MW) is
    0.018 at t = 0 and at most 0.093 over the 400 iterations; TV(π_{t+1}, MW) ≤ 0.011. Broken
    copies of the formula give ratios ≥ 0.5 (η halved) and > 1 (sign, centring, swap).
    Tolerance: ratio ≤ 0.15 at every iteration, TV ≤ 0.02.
    """
    assert max(rps_run["grad_norms"]) < 1e-6  # the inner minimisation converged every time
    print(f"\nSPPO vs MW on RPS: ratio first {rps_run['step_ratio'][0]:.4f}, "
          f"max {max(rps_run['step_ratio']):.4f}; max TV {max(rps_run['step_tv']):.4f}")
    assert max(rps_run["step_ratio"]) <= 0.15
    assert max(rps_run["step_tv"]) <= 0.02


def test_sppo_time_average_approaches_the_von_neumann_winner_of_rps(rps_run: dict) -> None:
    """The averaged policy (1/T)Σπ_t is near uniform, the game's unique von Neumann winner.

    Measured: TV(π̄_400, uniform) = 0.0145 (π_0: 0.267). The last iterate does not converge: like
    exact multiplicative weights with a fixed step it spirals outwards to the simplex's corners
    (TV(π_t, U) between 0.33 and 0.667 for t > 50; π_400 = (0.996, 0.000, 0.004)).
    Tolerance: TV(π̄_T, uniform) < 0.05 and below a fifth of π_0's distance.
    """
    d_avg, d0 = tv(rps_run["avg"], UNIFORM3), tv(RPS_PI0, UNIFORM3)
    d_last = tv(rps_run["last"], UNIFORM3)
    print(f"\nSPPO on RPS: TV(avg, U) {d_avg:.4f}, TV(last, U) {d_last:.4f}, TV(pi_0, U) {d0:.4f}")
    assert d_avg < 0.05
    assert d_avg < d0 / 5


# --- a transitive preference --------------------------------------------------------------------
def test_sppo_concentrates_on_the_best_response_under_a_transitive_preference() -> None:
    """Bradley–Terry with rewards (1, .5, 0, −.5, −1): response 0 is best, π_0 favours the worst.

    Measured (β = 0.5, 30 iterations): π_t(best) rises monotonically from 0.058 to 0.9984 (exact
    multiplicative weights: 0.9986). With η halved it reaches 0.94, with the sign flipped or the
    centring dropped it stalls or collapses (≤ 0.30).
    Tolerance: π_30(best) > 0.99, and π_t(best) strictly increasing.
    """
    P = bradley_terry([1.0, 0.5, 0.0, -0.5, -1.0])
    theta = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0], dtype=DT)
    best = [float(torch.softmax(theta, 0)[0])]
    for _ in range(30):
        theta, g = sppo_update(theta, P, 0.5)
        assert g < 1e-6
        best.append(float(torch.softmax(theta, 0)[0]))
    print(f"\nSPPO on Bradley–Terry: pi(best) {best[0]:.4f} -> {best[10]:.4f} (t=10) -> "
          f"{best[-1]:.4f} (t=30)")
    assert all(b > a for a, b in itertools.pairwise(best))
    assert best[-1] > 0.99


# --- iterative DPO on the same game (reported, not asserted) ------------------------------------
def dpo_update(theta_t: torch.Tensor, P: torch.Tensor, beta: float, steps: int = 10,
               lr: float = 1.0) -> torch.Tensor:
    """Pairs drawn from π_t (exact expectation: pair {i, j} weighted π_t(i)π_t(j)), chosen = the
    one P prefers, ``LOSSES["sigmoid"]`` against reference π_t, a fixed budget of GD steps (the
    DPO loss has no finite minimiser on a fixed pool, so there is nothing to converge to)."""
    log_ref = torch.log_softmax(theta_t, 0)
    pi_t = log_ref.exp()
    k = len(theta_t)
    pairs = [(i, j) if P[i, j] > P[j, i] else (j, i) for i in range(k) for j in range(i + 1, k)]
    w = torch.tensor([i for i, _ in pairs])
    lo = torch.tensor([j for _, j in pairs])
    weight = pi_t[w] * pi_t[lo]
    weight = weight / weight.sum()
    theta = theta_t.clone().requires_grad_()
    opt = torch.optim.SGD([theta], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        logp = torch.log_softmax(theta, 0)
        batch = PreferenceBatch(logp[w], logp[lo], log_ref[w], log_ref[lo], P[w, lo], P[w, lo],
                                P[lo, w])
        (LOSSES["sigmoid"](batch, beta) * weight).sum().backward()
        opt.step()
    return theta.detach()


def test_iterative_dpo_on_rps_is_reported() -> None:
    """Iterative DPO on the same RPS game (β = 0.5, 10 GD steps of lr 1 per iteration, T = 400).

    Observed, and asserted with margins: the averaged policy also ends near uniform, TV(π̄_400, U) ≈ 0.028
    (SPPO: 0.0145), but the last iterate collapses onto a pure strategy within a few dozen
    iterations and then cycles rock → paper → scissors among the vertices (TV(π_t, U) = 0.667 at
    t = 400; between 0.33 and 0.667 after the first few iterations). The same held for β ∈ {0.1, 1}
    and 1 to 200 GD steps per iteration: averages 0.014–0.066, last iterates at or near a vertex.
    SPPO's last iterate does no better here (same TV range, π_400 = (0.996, 0.000, 0.004)): with a
    fixed η neither method's last iterate converges; only the averages do, SPPO's a bit closer.
    """
    P = rock_paper_scissors()
    theta = RPS_PI0.log()
    avg = torch.zeros(3, dtype=DT)
    last_tv = []
    for _ in range(RPS_T):
        theta = dpo_update(theta, P, RPS_BETA)
        pi = torch.softmax(theta, 0)
        avg += pi
        last_tv.append(tv(pi, UNIFORM3))
    avg /= RPS_T
    print(f"\niterative DPO on RPS: TV(avg, U) {tv(avg, UNIFORM3):.4f}, TV(last, U) "
          f"{last_tv[-1]:.4f}, TV(pi_t, U) over t > 50 in [{min(last_tv[50:]):.3f}, "
          f"{max(last_tv[50:]):.3f}], pi_T {[round(x, 3) for x in pi.tolist()]}")
    # The behaviour described above: the average near uniform, the last iterate at or near a
    # vertex from the first few dozen iterations on (margins of about 2x on each measured bound).
    assert abs(float(avg.sum()) - 1) < 1e-9
    assert tv(avg, UNIFORM3) < 0.06
    assert min(last_tv[50:]) > 0.3 and last_tv[-1] > 0.6
