"""``training.weight_rounding: split`` (trainers/split_weights.py): the forward reads each fp32
weight as two bf16 parts, the backward is autocast's, the parts follow the optimizer's in-place
updates, and weights that are not fp32 are refused."""

from __future__ import annotations

import pytest
import torch

from harness.errors import ConfigError
from trainers.split_weights import split_weight_linears


def _layer(seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(96, 40, bias=False)


def _forward_backward(layer: torch.nn.Linear, x: torch.Tensor, dy: torch.Tensor):
    x = x.clone().requires_grad_(True)
    layer.weight.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    y.backward(dy)
    return y.detach(), x.grad, layer.weight.grad


def test_the_backward_is_autocasts_bit_for_bit() -> None:
    layer = _layer()
    x, dy = torch.randn(3, 7, 96), torch.randn(3, 7, 40).to(torch.bfloat16)
    y_single, dx_single, dw_single = _forward_backward(layer, x, dy)
    split_weight_linears(layer, torch.bfloat16)
    y_split, dx_split, dw_split = _forward_backward(layer, x, dy)
    assert y_split.dtype == y_single.dtype == torch.bfloat16
    assert dw_split.dtype == torch.float32
    assert torch.equal(dx_split, dx_single) and torch.equal(dw_split, dw_single)
    assert not torch.equal(y_split, y_single)  # the forward is what changed


def test_the_forward_reads_the_weights_to_about_16_bits() -> None:
    layer = _layer()
    x = torch.randn(64, 96)
    xh = x.to(torch.bfloat16).double()
    exact = xh @ layer.weight.double().t()  # inputs rounded as autocast rounds them, weights exact
    rounded = xh @ layer.weight.to(torch.bfloat16).double().t()
    split_weight_linears(layer, torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x).double()
    high, low = layer.__dict__["_split_parts"][1].float().split(96, dim=1)
    assert ((high + low - layer.weight).abs() <= 2**-16 * layer.weight.abs()).all()
    assert (high != layer.weight).float().mean() > 0.9  # one bf16 alone would not hold them
    # the fp32 accumulator sums both parts, so the output is the exact product rounded once;
    # with the weights rounded to one bf16 (autocast) it is not
    nearest = exact.to(torch.bfloat16).double()
    assert (y == nearest).float().mean() >= 0.97
    assert (rounded.to(torch.bfloat16).double() == nearest).float().mean() <= 0.9


def test_the_parts_follow_an_in_place_update_of_the_weight() -> None:
    layer = _layer()
    split_weight_linears(layer, torch.bfloat16)
    x = torch.randn(5, 96)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layer(x)
        stale = layer.__dict__["_split_parts"][1].clone()
        with torch.no_grad():
            layer.weight.add_(2**-12 * layer.weight.abs())  # below a bf16 step: the high part barely moves
        layer(x)
    fresh = layer.__dict__["_split_parts"][1]
    high = layer.weight.to(torch.bfloat16)
    assert torch.equal(fresh, torch.cat([high, (layer.weight - high.float()).to(torch.bfloat16)], 1))
    assert not torch.equal(fresh, stale)


def test_undo_gives_back_autocasts_arithmetic() -> None:
    layer = _layer()
    x = torch.randn(4, 96)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        before = layer(x)
        undo = split_weight_linears(layer, torch.bfloat16)
        during = layer(x)
        undo()
        after = layer(x)
    assert torch.equal(before, after) and not torch.equal(before, during)
    assert "_split_parts" not in layer.__dict__


def test_weights_that_are_not_fp32_are_refused() -> None:
    layer = _layer().to(torch.bfloat16)  # what DeepSpeed's and FSDP's bf16 hand the forward
    split_weight_linears(layer, torch.bfloat16)
    with pytest.raises(ConfigError, match=r"weight_rounding: split needs fp32 weights.*bfloat16"):
        layer(torch.randn(2, 96, dtype=torch.bfloat16))


def test_the_trl_backend_refuses_split() -> None:
    from harness.config import TrainingConfig
    from trainers import get_trainer

    check = get_trainer("trl").check
    check(TrainingConfig(weight_rounding="split", dtype="float32"))  # nothing to split in fp32
    with pytest.raises(ConfigError, match="weight_rounding: split needs the native trainer"):
        check(TrainingConfig(weight_rounding="split", dtype="bfloat16"))


def test_a_model_layer_without_bias_is_the_only_kind_changed() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 8, bias=False), torch.nn.Linear(8, 8))
    x = torch.randn(2, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = model(x)
        split_weight_linears(model, torch.bfloat16)
        got = model(x)
    assert "forward" not in model[1].__dict__ and "forward" in model[0].__dict__
    assert not torch.equal(got, want)


def test_the_lm_head_gives_fp32_logits_and_the_trunk_bf16(tiny_model_dir) -> None:
    from harness.models import load_model

    model = load_model(str(tiny_model_dir), "float32")
    ids = torch.tensor([[5, 9, 14, 3]])
    seen = {}
    proj = model.model.layers[0].mlp.down_proj
    proj.register_forward_hook(lambda m, i, o: seen.update(down_proj=o.dtype))
    head = model.get_output_embeddings()
    hidden = torch.randn(2, 3, head.in_features)
    dy = torch.randn(2, 3, head.out_features).to(torch.bfloat16)
    _, dx_single, dw_single = _forward_backward(head, hidden, dy)
    split_weight_linears(model, torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=ids).logits
    assert logits.dtype == torch.float32 and seen["down_proj"] == torch.bfloat16
    # the head's backward reads the high part alone, so only that is held; it is autocast's
    assert torch.equal(head.__dict__["_split_parts"][1], head.weight.to(torch.bfloat16))
    _, dx_split, dw_split = _forward_backward(head, hidden, dy)
    assert torch.equal(dx_split, dx_single) and torch.equal(dw_split, dw_single)


def test_the_model_card_says_so_only_where_weights_were_split() -> None:
    from harness.card import _split_note

    assert _split_note({"dtype": "bfloat16"}) == ""  # a run made before the setting existed
    assert _split_note({"dtype": "bfloat16", "weight_rounding": "single"}) == ""
    assert _split_note({"dtype": "float32", "weight_rounding": "split"}) == ""  # nothing to split
    assert "weight_rounding: split" in _split_note({"dtype": "bfloat16", "weight_rounding": "split"})
