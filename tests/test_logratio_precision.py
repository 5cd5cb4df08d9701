"""The bench's decomposition of bf16 log-ratio error: each rounding reads the operands it names,
and the verdict follows the stated tolerance (bench/logratio_precision.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.logratio_precision import LOGRATIO_TOLERANCE, decompose, departure, logratios, rounded_linears
from harness.models import load_model
from trainers.data import PairExample


def _pairs(vocab: int, n: int = 6) -> list[PairExample]:
    g = torch.Generator().manual_seed(0)

    def ids(k: int) -> list[int]:
        return torch.randint(10, vocab, (k,), generator=g).tolist()

    return [PairExample(str(i), ids(12), ids(20), ids(16), 0.7, 0.6, 0.4) for i in range(n)]


def _models(tiny_model_dir: Path, bf16_exact: bool, scale: float = 8.0,
            move: float = 1e-3) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A reference and a policy moved from it by about a bf16 rounding step per weight (as a few
    RMSprop steps at the smoke profile's learning rate move it); ``scale`` 8 makes logits large
    enough that the activations' rounding shows too."""
    reference = load_model(str(tiny_model_dir), "float32")
    policy = load_model(str(tiny_model_dir), "float32")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for model in (reference, policy):
            for p in model.parameters():
                p.mul_(scale)
        for p in policy.parameters():
            p.add_(move * torch.randn(p.shape, generator=g))
        if bf16_exact:
            for model in (reference, policy):
                for p in model.parameters():
                    p.copy_(p.to(torch.bfloat16).float())
    return policy, reference


def test_rounding_the_weights_departs_only_for_weights_bf16_cannot_hold(tiny_model_dir: Path) -> None:
    for exact_weights in (True, False):
        policy, reference = _models(tiny_model_dir, exact_weights)
        pairs = _pairs(policy.config.vocab_size)
        fp32 = logratios(policy, reference, pairs, 0, 4)
        with rounded_linears([policy, reference], "weights"):
            gap = departure(fp32, logratios(policy, reference, pairs, 0, 4))["max_abs_difference"]
        # weights bf16 holds exactly: only fp32 summation order moves (a copied weight may take
        # another GEMM kernel); else rounding them moves log-ratios by whole nats here
        assert (gap <= 1e-3) if exact_weights else (gap >= 0.5)
        assert torch.equal(logratios(policy, reference, pairs, 0, 4), fp32)  # forwards restored


def test_split_weights_recover_what_rounding_them_loses(tiny_model_dir: Path) -> None:
    policy, reference = _models(tiny_model_dir, bf16_exact=False)
    found = decompose(policy, reference, _pairs(policy.config.vocab_size), 0, 4)["variants"]
    gap = {name: v["max_abs_difference"] for name, v in found.items()}
    assert gap["weights"] >= 0.5 and gap["both"] > gap["split weights"]
    # two bf16 parts hold a weight to ~2^-16 of itself: what is left is the activations' rounding
    assert gap["split weights"] == pytest.approx(gap["activations"], rel=0.1)


def test_departure_passes_up_to_the_tolerance_and_not_beyond() -> None:
    exact = torch.arange(10, dtype=torch.float64)
    limit = LOGRATIO_TOLERANCE * float(exact.std())
    for gap, passed in ((0.99 * limit, True), (1.01 * limit, False)):
        other = exact.clone()
        other[3] += gap
        found = departure(exact, other)
        assert found["passed"] is passed
        assert found["max_abs_difference"] == pytest.approx(gap, abs=1e-4)
        assert found["mean_abs_difference"] == pytest.approx(gap / 10, abs=1e-4)


def test_a_policy_that_is_its_reference_is_refused(tiny_model_dir: Path) -> None:
    _, reference = _models(tiny_model_dir, bf16_exact=False)
    with pytest.raises(ValueError, match="is the policy its reference"):
        decompose(reference, reference, _pairs(reference.config.vocab_size), 0, 4)


def test_the_trainers_split_weights_close_most_of_what_autocast_departs(tiny_model_dir: Path) -> None:
    # weights at their initial scale, the policy a quarter of a bf16 step from its reference: the
    # weights' rounding, not the activations', decides autocast's departure
    policy, reference = _models(tiny_model_dir, bf16_exact=False, scale=1.0, move=3e-5)
    pairs = _pairs(policy.config.vocab_size)
    fp32 = logratios(policy, reference, pairs, 0, 4)
    found = decompose(policy, reference, pairs, 0, 4, "bfloat16", roundings=("weights",))["variants"]
    gap = {name: v["max_abs_difference"] for name, v in found.items()}
    assert gap["bfloat16 autocast"] >= gap["weights"]  # at least as far as rounding the weights alone
    assert gap["bfloat16 autocast, split weights"] < 0.3 * gap["bfloat16 autocast"]
    assert torch.equal(logratios(policy, reference, pairs, 0, 4), fp32)  # forwards given back
