"""Each loss against a direct transcription of its published formula (float64, 1e-12)."""

import math

import pytest
import torch

from trainers.losses import LOSSES, PreferenceBatch


def _batch(n: int = 64, seed: int = 0) -> PreferenceBatch:
    g = torch.Generator().manual_seed(seed)
    r = lambda scale=1.0: torch.randn(n, generator=g, dtype=torch.float64) * scale  # noqa: E731
    u = lambda: torch.rand(n, generator=g, dtype=torch.float64)  # noqa: E731
    return PreferenceBatch(r(50) - 100, r(50) - 120, r(50) - 100, r(50) - 120, u(), u(), u())


def _transcribed(name: str, b: PreferenceBatch, beta: float) -> list[float]:
    """Per example, scalar maths only, as the papers / official code write it."""
    out = []
    for i in range(len(b.policy_chosen)):
        pw, pl = float(b.policy_chosen[i]), float(b.policy_rejected[i])
        rw, rl = float(b.ref_chosen[i]), float(b.ref_rejected[i])
        p, p_win, p_lose = float(b.chosen_probs[i]), float(b.chosen_probs_win[i]), float(
            b.chosen_probs_lose[i])
        logits_w, logits_l = pw - rw, pl - rl
        if name == "sppo":
            v = ((logits_w - (1 / beta) * (p_win - 0.5)) ** 2
                 + (logits_l - (1 / beta) * (p_lose - 0.5)) ** 2) / 2
        elif name == "sppo_single":
            v = ((logits_w - (1 / beta) * (p - 0.5)) ** 2 + (logits_l + (1 / beta) * (p - 0.5)) ** 2) / 2
        elif name == "sppo_hard":
            v = (logits_w - 0.5 / beta) ** 2 + (logits_l + 0.5 / beta) ** 2
        elif name == "sigmoid":
            v = math.log1p(math.exp(-beta * (logits_w - logits_l)))
        elif name in ("ipo", "ipo_mean"):  # (ipo_mean: the trainers average before the loss)
            v = ((logits_w - logits_l) - 1 / (2 * beta)) ** 2
        out.append(v)
    return out


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("beta", [0.001, 0.1, 2.0])
def test_loss_matches_transcription(name: str, beta: float) -> None:
    b = _batch(seed=int(beta * 1000))
    got = LOSSES[name](b, beta)
    want = torch.tensor(_transcribed(name, b, beta), dtype=torch.float64)
    assert got.dtype == torch.float64 and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_gradients(name: str) -> None:
    b = _batch(n=4, seed=3)
    # Keep margins moderate so the sigmoid loss is not saturated.
    pc = (b.ref_chosen + torch.randn(4, dtype=torch.float64)).requires_grad_()
    pr = (b.ref_rejected + torch.randn(4, dtype=torch.float64)).requires_grad_()

    def f(pc_, pr_):
        return LOSSES[name](PreferenceBatch(pc_, pr_, b.ref_chosen, b.ref_rejected, b.chosen_probs,
                                            b.chosen_probs_win, b.chosen_probs_lose), 0.5).sum()

    assert torch.autograd.gradcheck(f, (pc, pr))


def test_sppo_pulls_logratios_to_their_targets() -> None:
    # At a_w = η(P_win − ½) and a_l = η(P_lose − ½) the sppo loss is exactly zero.
    beta, pw, pl = 0.01, torch.tensor([0.8], dtype=torch.float64), torch.tensor([0.3], dtype=torch.float64)
    ref_c, ref_r = torch.tensor([-10.0], dtype=torch.float64), torch.tensor([-12.0], dtype=torch.float64)
    b = PreferenceBatch(ref_c + (pw - 0.5) / beta, ref_r + (pl - 0.5) / beta, ref_c, ref_r,
                        torch.tensor([0.9], dtype=torch.float64), pw, pl)
    assert float(LOSSES["sppo"](b, beta)) == pytest.approx(0.0, abs=1e-18)
