"""Log-probabilities under a causal LM: summed over response tokens after a prefix (the quantity
SPPO trains on), and of the next token after a prompt (the verdict of a log-probability judge)."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from harness.models import kv_cache_name


def pad_rows(prefixes: list[list[int]], responses: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded ``prefix + response`` rows with an attention mask and a response mask: every
    row's response ends at the last column, so the scored positions are the last columns."""
    width = max(len(p) + len(r) for p, r in zip(prefixes, responses, strict=True))
    n = len(prefixes)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    resp = torch.zeros((n, width), dtype=torch.long)
    for i, (p, r) in enumerate(zip(prefixes, responses, strict=True)):
        ids[i, width - len(p) - len(r) :] = torch.tensor(p + r)
        attn[i, width - len(p) - len(r) :] = 1
        resp[i, width - len(r) :] = 1
    return {"input_ids": ids, "attention_mask": attn, "response_mask": resp}


def sequence_logps(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probabilities of the response tokens of each :func:`pad_rows` row, and their
    token counts.

    Logits are computed only where a response token is predicted (the last ``longest response +
    1`` columns; ``logits_to_keep``), so no [rows, width, vocabulary] tensor is made; positions
    count from each row's first real token, as if it were unpadded.
    """
    ids, attn, resp = batch["input_ids"], batch["attention_mask"], batch["response_mask"]
    keep = int(resp.sum(-1).max()) + 1
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=attn, position_ids=positions, logits_to_keep=keep).logits
    logits = logits[:, :-1].to(torch.promote_types(logits.dtype, torch.float32))
    targets, scored = ids[:, 1 - keep :], resp[:, 1 - keep :].bool()
    token_logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    # where, not a product: a kept column left of a short row's start holds padding
    return torch.where(scored, token_logps, 0.0).sum(-1), scored.sum(-1)


@torch.inference_mode()
def batched_logps(
    model: torch.nn.Module,
    prefixes: list[list[int]],
    responses: list[list[int]],
    pad_id: int,
    batch_size: int = 16,
) -> list[tuple[float, int]]:
    """(sum log p(response | prefix), tokens) per row, batched by length to limit padding."""
    order = sorted(range(len(prefixes)), key=lambda i: len(prefixes[i]) + len(responses[i]))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(prefixes)
    device = next(model.parameters()).device
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        batch = pad_rows([prefixes[i] for i in idx], [responses[i] for i in idx], pad_id)
        logps, counts = sequence_logps(model, {k: v.to(device) for k, v in batch.items()})
        for j, i in enumerate(idx):
            out[i] = (float(logps[j]), int(counts[j]))
    return out


@torch.inference_mode()
def next_token_logprobs(
    model: torch.nn.Module,
    seqs: list[list[int]],
    pad_id: int,
    token_ids: list[int],
    top: int = 0,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "next token",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """log p(next token) after each sequence, in left-padded batches sorted by length.

    Returns ``[N, len(token_ids)]`` log-probs of ``token_ids``, and the ``top`` most likely next
    tokens as ``[N, top]`` log-probs and ids.
    """
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    chosen = torch.zeros(len(seqs), len(token_ids), dtype=torch.float64)
    top_lp = torch.zeros(len(seqs), top, dtype=torch.float64)
    top_ids = torch.zeros(len(seqs), top, dtype=torch.long)
    device = next(model.parameters()).device
    wanted = torch.tensor(token_ids, device=device)
    model.eval()
    for s in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress):
        idx = order[s : s + batch_size]
        width = max(len(seqs[i]) for i in idx)
        ids = torch.tensor([[pad_id] * (width - len(seqs[i])) + seqs[i] for i in idx], device=device)
        mask = torch.tensor([[0] * (width - len(seqs[i])) + [1] * len(seqs[i]) for i in idx],
                            device=device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos,
                       logits_to_keep=1).logits[:, -1]
        logp = logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(-1)
        chosen[idx] = logp[:, wanted].double().cpu()
        if top:
            v, i = logp.topk(top, dim=-1)
            top_lp[idx], top_ids[idx] = v.double().cpu(), i.cpu()
    return chosen, top_lp, top_ids


@torch.inference_mode()
def continuation_logprobs(model: torch.nn.Module, prompt: list[int],
                          continuations: list[list[int]]) -> list[float]:
    """Summed log p(continuation | prompt) of each continuation: the prompt is run once and its
    KV cache cut back to the prompt after each continuation (a constrained judge's choice)."""
    if any(not c for c in continuations):
        raise ValueError("every continuation needs at least one token")
    device = next(model.parameters()).device
    cache_arg = kv_cache_name(model)
    model.eval()
    out = model(input_ids=torch.tensor([prompt], device=device), use_cache=True)
    cache = getattr(out, cache_arg)
    first = out.logits[0, -1].float().log_softmax(-1)
    totals = []
    for cont in continuations:
        total = float(first[cont[0]])
        if len(cont) > 1:
            logits = model(input_ids=torch.tensor([cont[:-1]], device=device), use_cache=True,
                           **{cache_arg: cache}).logits[0]
            logp = logits.float().log_softmax(-1)
            total += float(logp[torch.arange(len(cont) - 1), torch.tensor(cont[1:], device=device)].sum())
            cache.crop(-(len(cont) - 1))  # back to the prompt alone
        totals.append(total)
    return totals
