"""The fast nucleus warper keeps exactly what transformers' temperature + top-p warpers keep."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import TemperatureLogitsWarper, TopPLogitsWarper, set_seed

from harness.generate import NucleusWarper
from harness.models import load_model, load_tokenizer


@pytest.mark.parametrize("scale", [0.5, 3.0, 8.0, 30.0])
@pytest.mark.parametrize(("temperature", "top_p"), [(0.7, 0.9), (1.0, 0.5), (0.3, 0.99)])
def test_kept_tokens_equal_transformers(scale: float, temperature: float, top_p: float) -> None:
    # scale 0.5 gives flat rows (the fallback path), 30 gives one or two kept tokens.
    torch.manual_seed(int(scale * 10))
    logits = torch.randn(16, 5000) * scale
    expected = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, logits.clone()))
    got = NucleusWarper(temperature, top_p, probe=64)(None, logits.clone())
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    kept = ~torch.isinf(got)
    assert torch.allclose(got[kept], expected[kept])
    assert kept.sum(-1).min() >= 1


def test_generate_matches_transformers_sampling(tiny_model_dir: Path) -> None:
    """Same seed, same tokens as generate(temperature=, top_p=) on a peaked and a flat model."""
    tok = load_tokenizer(str(tiny_model_dir))
    model = load_model(str(tiny_model_dir))
    ids = tok(["Hello there", "Write a haiku"], return_tensors="pt", padding=True, padding_side="left")
    for sharpen in (1.0, 400.0):  # the random model is flat; sharpened, the fast path is taken
        with torch.no_grad():
            model.lm_head.weight.mul_(sharpen)
        runs = []
        for fast in (False, True):
            set_seed(7)
            kwargs = ({"temperature": 1.0, "top_p": 1.0, "logits_processor": [NucleusWarper(0.7, 0.9)]}
                      if fast else {"temperature": 0.7, "top_p": 0.9})
            runs.append(model.generate(**ids, do_sample=True, top_k=0, max_new_tokens=12,
                                       pad_token_id=tok.pad_token_id, **kwargs))
        assert torch.equal(runs[0], runs[1])
