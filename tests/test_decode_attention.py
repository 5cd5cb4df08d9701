"""The CPU decoding attention of the transformers backend: transformers' SDPA attention to float
rounding on one-token steps (padding masks, grouped-query heads), SDPA itself everywhere else."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from harness.models import load_model, load_tokenizer
from harness.under_test.decode_attention import NAME, decode_grouped_on_cpu, grouped_decode_attention


class _Heads(torch.nn.Module):
    """What the attention functions read off a model's attention module."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


def _inputs(dtype: torch.dtype, q_len: int = 1, mask: str = "bool"):
    torch.manual_seed(0)
    batch, heads, kv_heads, keys, dim = 6, 9, 3, 40, 64
    q = torch.randn(batch, heads, q_len, dim).to(dtype)
    k, v = (torch.randn(batch, kv_heads, keys, dim).to(dtype) for _ in range(2))
    allowed = torch.ones(batch, 1, q_len, keys, dtype=torch.bool)
    for row in range(batch):  # left padding of different widths
        allowed[row, ..., : 5 * row] = False
    if q_len > 1:
        allowed &= torch.ones(q_len, keys, dtype=torch.bool).tril(keys - q_len)
    if mask == "float":
        return q, k, v, torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return q, k, v, (None if mask == "none" else allowed)


@pytest.mark.parametrize("mask", ["bool", "float", "none", "one row for all"])
def test_a_decoding_step_equals_sdpa(mask: str) -> None:
    q, k, v, m = _inputs(torch.float32, mask="bool" if mask == "one row for all" else mask)
    if mask == "one row for all":  # a mask of batch 1 broadcasts over the rows
        m = m[3:4]
    module = _Heads(3)
    got, _ = grouped_decode_attention(module, q, k, v, m)
    want, _ = sdpa_attention_forward(module, q, k, v, m)
    assert got.shape == want.shape == (6, 1, 9, 64)
    assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())


def test_bf16_decoding_step_is_as_close_to_fp32_as_bf16_allows() -> None:
    q, k, v, m = _inputs(torch.bfloat16)
    module = _Heads(3)
    exact, _ = sdpa_attention_forward(module, q.float(), k.float(), v.float(), m)
    got, _ = grouped_decode_attention(module, q, k, v, m)
    # bf16 scores and probabilities: a few units of bf16's 2^-8 on outputs of size ~0.2-1
    assert float((got.float() - exact).abs().max()) < 4 * 2**-8


def test_everything_but_a_decoding_step_is_sdpa() -> None:
    q, k, v, m = _inputs(torch.float32, q_len=7)
    module = _Heads(3)
    got, _ = grouped_decode_attention(module, q, k, v, m)
    assert torch.equal(got, sdpa_attention_forward(module, q, k, v, m)[0])


def test_greedy_generation_and_scores_match_sdpa(tiny_model_dir: Path) -> None:
    """The tiny Llama (grouped-query heads) decodes left-padded rows to the same logits."""
    tok = load_tokenizer(str(tiny_model_dir))
    ids = tok(["Hello there, how are you", "Hi"], return_tensors="pt", padding=True, padding_side="left")
    runs = {}
    for impl in ("sdpa", NAME):
        model = load_model(str(tiny_model_dir), attn_implementation=impl)
        assert model.config._attn_implementation == impl
        with torch.no_grad():
            model.lm_head.weight.mul_(50.0)  # peaked: greedy choices are not near-ties
        runs[impl] = model.generate(**ids, do_sample=False, max_new_tokens=10, pad_token_id=tok.pad_token_id,
                                    output_logits=True, return_dict_in_generate=True)
    assert torch.equal(runs["sdpa"].sequences, runs[NAME].sequences)
    for a, b in zip(runs["sdpa"].logits, runs[NAME].logits, strict=True):
        assert torch.allclose(a, b, atol=1e-4), float((a - b).abs().max())


def test_cpu_models_under_test_decode_with_it(tiny_model_dir: Path) -> None:
    from harness.under_test.hf import TransformersModel

    under_test = TransformersModel.load(str(tiny_model_dir), dtype="float32", device="cpu")
    assert under_test.model.config._attn_implementation == NAME
    eager = load_model(str(tiny_model_dir), attn_implementation="eager")  # e.g. Gemma-2's softcapping
    decode_grouped_on_cpu(eager)
    assert eager.config._attn_implementation == "eager"
