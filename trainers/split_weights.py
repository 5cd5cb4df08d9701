"""Half-precision matmuls that read each fp32 master weight to about 16 significant bits.

Autocast rounds every weight to one bf16 (or fp16) value before a matmul. After a few steps at
a small learning rate the policy differs from its reference by a fraction of one rounding step per
weight, so rounding decides much of the log-ratio log π − log π_ref that SPPO trains on
(bench/REPORT.md, sections 3 and 6: up to about 0.3 of the log-ratios' fp32 spread). Here each
weight W is held as two half-precision parts, ``high = half(W)`` and ``low = half(W − high)``,
and a linear layer computes ``[x, x] @ [high; low]ᵀ``: one matmul of twice the depth whose fp32
accumulator sums both parts before the output is rounded once. Inputs are rounded as autocast
rounds them. The LM head alone computes in fp32, because its outputs are the logits themselves:
rounded to bf16, a logit of 16-32 moves by up to 1/16 of a nat (on the bench's shape that kept
the log-ratios 0.11 of their spread from fp32; fp32 logits bring them to 0.086). The backward
reads ``high`` only: ``dx = dy @ high`` and ``dW = dyᵀ x``, as autocast's backward does, so a step
costs about four matmuls' work where autocast's costs three.

The parts are made once per weight value (again after each optimizer step changes it in place)
and kept with the layer: 4 bytes per parameter beside the fp32 weights (2 for the LM head, whose
forward does not read them).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from harness.errors import ConfigError


class _SplitLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, parts: torch.Tensor,
                fp32_output: bool) -> torch.Tensor:
        xh = x.to(parts.dtype)
        ctx.save_for_backward(xh, parts)
        if fp32_output:  # the LM head: logits in fp32, from fp32 operands
            with torch.autocast(x.device.type, enabled=False):
                return F.linear(x.float(), weight)
        return F.linear(torch.cat([xh, xh], -1), parts)

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        xh, parts = ctx.saved_tensors
        width = xh.shape[-1]
        dy = dy.to(parts.dtype)
        dx = dy @ parts[:, :width]
        dw = dy.reshape(-1, dy.shape[-1]).t() @ xh.reshape(-1, width)
        return dx, dw.float(), None, None


def _parts(layer: torch.nn.Linear, dtype: torch.dtype, low: bool) -> torch.Tensor:
    """``[high, low]`` of the layer's weight ([out, 2·in]), or ``high`` alone where only the
    backward reads it (the LM head), remade when the weight has changed."""
    w = layer.weight
    if w.dtype != torch.float32:
        raise ConfigError(
            f"training.weight_rounding: split needs fp32 weights in the forward, and a linear layer "
            f"holds {w.dtype} ones (DeepSpeed's and FSDP's bf16 keep the parameters in bf16): "
            "use weight_rounding: single there")
    key = (w._version, w.data_ptr(), dtype, low)
    held = layer.__dict__.get("_split_parts")
    if held is None or held[0] != key:
        with torch.no_grad():
            high = w.to(dtype)
            held = (key, torch.cat([high, (w - high.float()).to(dtype)], 1) if low else high)
        layer.__dict__["_split_parts"] = held
    return held[1]


def split_weight_linears(model: torch.nn.Module, dtype: torch.dtype) -> Callable[[], None]:
    """Make every bias-free ``nn.Linear`` of ``model`` compute as this module says, the model's
    output embedding (the LM head) with fp32 logits; layers with a bias, which the models trained
    here lack, keep autocast's arithmetic. Returns a function that gives the layers back their
    own forwards and frees the parts."""
    inner = getattr(model, "module", model)  # under DDP
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.bias is None]
    for layer in layers:
        layer.forward = (lambda x, layer=layer, exact=layer is head:
                         _SplitLinear.apply(x, layer.weight, _parts(layer, dtype, not exact), exact))

    def undo() -> None:
        for layer in layers:
            layer.__dict__.pop("forward", None)
            layer.__dict__.pop("_split_parts", None)

    return undo
