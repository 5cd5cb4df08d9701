"""Attention for the transformers backend on CPU: SDPA, except for one-token decoding steps.

PyTorch's CPU SDPA runs a one-query decoding step through its flash kernel, block by block over
every (row, key-value head), with fp32 buffers: on SmolLM2 sampling 240 rows it was a fifth of
generation time for a few percent of its FLOPs. A decoding step here is two batched matmuls: the
query heads of each key-value head (grouped-query attention) against the cache, bf16 scores,
softmax in fp32, as transformers' ``eager`` attention computes it, without copying the cache per
query head. Everything else (prefill, scoring, training, softcapping, attention sinks, dropout)
is transformers' ``sdpa_attention_forward`` unchanged; masks are built as for ``sdpa``.

Registered with transformers' ``AttentionInterface`` as :data:`NAME`
(:func:`decode_grouped_on_cpu` switches a loaded model to it).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "sdpa_grouped_decode"

_DELEGATED = ("softcap", "s_aux", "sinks", "position_bias", "output_attentions")


def grouped_decode_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """``query`` [B, H, Q, D], ``key``/``value`` [B, KV, T, D]; returns [B, Q, H, D] as
    ``sdpa_attention_forward`` does."""
    batch, heads, q_len, dim = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    mask_ok = attention_mask is None or (attention_mask.dim() == 4 and attention_mask.shape[0] in (1, batch)
                                         and attention_mask.shape[1:] == (1, 1, keys))
    if (q_len != 1 or (dropout and module.training) or heads % kv_heads or not mask_ok
            or any(kwargs.get(k) for k in _DELEGATED)):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    groups = heads // kv_heads  # query head h reads key-value head h // groups (repeat_kv's order)
    scale = scaling if scaling is not None else dim**-0.5
    scores = torch.matmul(query.reshape(batch, kv_heads, groups, dim), key.transpose(-1, -2))
    scores = scores.float() * scale  # [B, KV, groups, T]
    if attention_mask is not None:  # [B or 1, 1, 1, T] broadcasts over heads and groups
        scores = (scores.masked_fill(~attention_mask, float("-inf")) if attention_mask.dtype == torch.bool
                  else scores + attention_mask.float())
    probs = scores.softmax(-1).to(value.dtype)
    out = torch.matmul(probs, value).reshape(batch, heads, 1, dim)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, grouped_decode_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)


def decode_grouped_on_cpu(model: torch.nn.Module) -> None:
    """A model under test on a CPU that runs SDPA decodes with :data:`NAME`; a model whose
    attention is another (Gemma-2's eager softcapping) or on a GPU is left as loaded."""
    if model.device.type == "cpu" and model.config._attn_implementation == "sdpa":
        model.set_attn_implementation(NAME)
