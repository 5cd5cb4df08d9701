"""Log-probabilities under a causal LM: summed over response tokens after a prefix (the quantity
SPPO trains on), and of the next token after a prompt (the verdict of a log-probability judge)."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from tqdm.auto import tqdm

from harness.models import kv_cache_name

T = TypeVar("T")


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
    targets, scored = ids[:, 1 - keep :], resp[:, 1 - keep :].bool()
    token_logps = _token_logps(logits[:, :-1], targets)
    # where, not a product: a kept column left of a short row's start holds padding
    return torch.where(scored, token_logps, 0.0).sum(-1), scored.sum(-1)


def _token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) at each position, in at least fp32."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)


def paired_logps(
    model: torch.nn.Module, contexts: list[list[int]], responses: list[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`sequence_logps` of ``contexts[i % B] + responses[i]`` for 2B responses (a pair's two
    responses, i and i + B, follow the same context), with each context forwarded once.

    The B contexts run left-padded; their KV cache is repeated for both responses, which continue
    right-padded with positions counting on from each context. Gradients flow back through the
    shared cache, so a backward equals the one through whole sequences. Returns the log-prob sums,
    the response token counts and each pair's tokens forwarded ([B]; padding excluded).
    """
    n = len(contexts)
    if len(responses) != 2 * n or not all(responses):
        raise ValueError("paired_logps needs two non-empty responses per context")
    device = next(model.parameters()).device
    name = kv_cache_name(model)
    left = pad_rows(contexts, [[] for _ in contexts], pad_id)
    ids, mask = left["input_ids"].to(device), left["attention_mask"].to(device)
    out = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                use_cache=True, logits_to_keep=1)
    cache = getattr(out, name)
    cache.batch_repeat_interleave(2)  # row 2i continues context i with its chosen, 2i+1 rejected
    rows = [responses[i + k * n] for i in range(n) for k in (0, 1)]
    longest = max(map(len, rows))
    resp = torch.full((2 * n, longest), pad_id, dtype=torch.long)
    scored = torch.zeros((2 * n, longest), dtype=torch.bool)
    for j, r in enumerate(rows):
        resp[j, : len(r)] = torch.tensor(r)
        scored[j, : len(r)] = True
    resp, scored = resp.to(device), scored.to(device)
    lengths = mask.sum(-1).repeat_interleave(2)
    logits = model(input_ids=resp, attention_mask=torch.cat([mask.repeat_interleave(2, 0), scored.long()], 1),
                   position_ids=lengths[:, None] + torch.arange(longest, device=device),
                   use_cache=True, **{name: cache}).logits
    first = _token_logps(out.logits[:, -1].repeat_interleave(2, 0), resp[:, 0])
    rest = torch.where(scored[:, 1:], _token_logps(logits[:, :-1], resp[:, 1:]), 0.0)
    sums = first + rest.sum(-1)
    back = torch.tensor([2 * i + k for k in (0, 1) for i in range(n)], device=device)  # chosen, rejected
    counts = scored.sum(-1)
    return sums[back], counts[back], mask.sum(-1) + counts[0::2] + counts[1::2]


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
    token_ids: list[int],
    top: int = 0,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "next token",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """log p(next token) after each sequence; sequences that share a prefix run it once
    (:func:`shared_prefix_logprobs`).

    Returns ``[N, len(token_ids)]`` log-probs of ``token_ids``, and the ``top`` most likely next
    tokens as ``[N, top]`` log-probs and ids.
    """
    weights = next(model.parameters())
    wanted = torch.tensor(token_ids, device=weights.device)

    def take(_: int, logp: torch.Tensor) -> tuple[torch.Tensor, ...]:
        last = logp[-1]
        v, i = last.topk(top) if top else (last[:0], wanted[:0])
        return last[wanted].double().cpu(), v.double().cpu(), i.cpu()

    model.eval()
    bar = tqdm(total=len(seqs), desc=desc, disable=not progress)
    rows = shared_prefix_logprobs(model, [Scored(tuple(s), len(s) - 1) for s in seqs], batch_size,
                                  torch.promote_types(weights.dtype, torch.float32), take,
                                  lambda chunk: bar.update(len(chunk)))
    bar.close()
    chosen, top_lp, top_ids = (torch.stack(parts) for parts in zip(*rows, strict=True))
    return chosen, top_lp, top_ids.long()


@dataclass(frozen=True)
class Scored:
    """One model input and the first position whose next-token log-probs are wanted."""

    tokens: tuple[int, ...]
    first: int


MIN_SHARED = 16  # a shorter common prefix is not worth a forward of its own
FAMILY_SPAN = 256  # the most inputs one family may hold (bounds the partition's search)


def _common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def families(inputs: list[Scored], min_shared: int = MIN_SHARED) -> list[tuple[int, list[int]]]:
    """Groups of inputs that run a common prefix once, as (prefix length, indices into ``inputs``).

    Inputs are sorted by their tokens, so inputs sharing a prefix are neighbours; a family is a
    run of them and its prefix the shortest common prefix of neighbours in it, cut before any
    position whose log-probs are read. The runs are chosen to save the most prefix tokens,
    (members − 1) × prefix summed over families (dynamic programming over the sorted order): one
    MMLU subject's five shots form a family rather than every subject sharing the few words their
    instructions start with. A prefix under ``min_shared`` tokens saves nothing.
    """
    order = sorted(range(len(inputs)), key=lambda i: inputs[i].tokens)
    n = len(order)
    # shared[k]: what neighbours k and k+1 may share
    shared = [min(_common_prefix(inputs[a].tokens, inputs[b].tokens), inputs[a].first, inputs[b].first)
              for a, b in itertools.pairwise(order)]
    best = [0] * (n + 1)  # best[j]: the most tokens saved over the first j inputs
    cut = list(range(n + 1))  # cut[j]: where the last family of that best partition starts
    for j in range(1, n + 1):
        best[j], cut[j] = best[j - 1], j - 1  # input j-1 alone
        low = None
        for i in range(j - 2, max(-1, j - 1 - FAMILY_SPAN), -1):  # a family of inputs i..j-1
            low = shared[i] if low is None else min(low, shared[i])
            if low < min_shared:
                break
            if best[i] + (j - 1 - i) * low > best[j]:
                best[j], cut[j] = best[i] + (j - 1 - i) * low, i
    out = []
    j = n
    while j > 0:
        i = cut[j]
        out.append((min(shared[i : j - 1]) if j - i > 1 else 0, order[i:j]))
        j = i
    return out[::-1]


@torch.no_grad()
def shared_prefix_logprobs(
    model: torch.nn.Module,
    inputs: list[Scored],
    batch_size: int,
    softmax_dtype: torch.dtype | None,
    take: Callable[[int, torch.Tensor], T],
    on_chunk: Callable[[list[int]], None] | None = None,
) -> list[T]:
    """``take(i, logp)`` per input, ``logp`` being log-softmax over the vocabulary at positions
    ``first`` to the end of input i ([positions, vocabulary]; ``softmax_dtype`` None: the logits').

    Each :func:`families` prefix runs once and its KV cache continues every member (right-padded
    rows, so padding only follows real tokens; positions count on from the prefix); inputs that
    share nothing run in batches of their own. Logits are computed only at the positions some row
    of a batch reads. The caller's autocast, if any, applies.
    """
    out: list[T | None] = [None] * len(inputs)
    device = next(model.parameters()).device
    name = kv_cache_name(model)
    groups = families(inputs)
    alone = [i for shared, members in groups if not shared for i in members]  # batched together
    for shared, members in [g for g in groups if g[0]] + ([(0, alone)] if alone else []):
        members.sort(key=lambda i: -len(inputs[i].tokens))  # less padding per batch
        cache = None
        if shared:
            prefix = torch.tensor([inputs[members[0]].tokens[:shared]], device=device)
            cache = getattr(model(input_ids=prefix, use_cache=True, logits_to_keep=1), name)
        for s in range(0, len(members), batch_size):
            chunk = members[s : s + batch_size]
            rest = [inputs[i].tokens[shared:] for i in chunk]
            width = max(map(len, rest))
            ids = torch.tensor([list(r) + [0] * (width - len(r)) for r in rest], device=device)
            starts = [inputs[i].first - shared for i in chunk]  # each row reads start..its end
            kept = sorted({c for a, r in zip(starts, rest, strict=True) for c in range(a, len(r))})
            at = {c: k for k, c in enumerate(kept)}
            kwargs: dict[str, Any] = {}
            if cache is not None:
                kwargs[name] = copy.deepcopy(cache)
                kwargs[name].batch_repeat_interleave(len(chunk))
                positions = torch.arange(shared, shared + width, device=device)
                kwargs["position_ids"] = positions.expand(len(chunk), -1)
            # the LM head runs at the read columns only: the last ones (an int, as one contiguous
            # run to the end) or, where rows end apart, those listed (the same bits per row)
            keep = (width - kept[0] if len(kept) == width - kept[0]
                    else torch.tensor(kept, device=device))
            logits = model(input_ids=ids, use_cache=cache is not None, logits_to_keep=keep, **kwargs).logits
            logp = torch.nn.functional.log_softmax(logits, dim=-1, dtype=softmax_dtype)
            for j, (i, a) in enumerate(zip(chunk, starts, strict=True)):
                out[i] = take(i, logp[j, at[a] : at[a] + len(rest[j]) - a])
            if on_chunk is not None:
                on_chunk(chunk)
    return out  # type: ignore[return-value]


@torch.inference_mode()
def continuation_logprobs(model: torch.nn.Module, prompt: list[int],
                          continuations: list[list[int]]) -> list[float]:
    """Summed log p(continuation | prompt) of each continuation (a constrained judge's choice).

    The prompt runs once, keeping logits at its last position only; the continuations of each
    length then run as one batch on copies of its KV cache. Rows of one length got the same bits
    in a batch as alone in bf16 on AVX512-BF16 (AMX kernels round differently for different row
    counts, within bf16's own error: tests/test_constrained_verdicts.py); a row padded to a longer
    one did not (its attention is blocked differently), so rows are grouped by length, not padded."""
    if any(not c for c in continuations):
        raise ValueError("every continuation needs at least one token")
    device = next(model.parameters()).device
    cache_arg = kv_cache_name(model)
    model.eval()
    out = model(input_ids=torch.tensor([prompt], device=device), use_cache=True, logits_to_keep=1)
    cache = getattr(out, cache_arg)
    first = out.logits[0, -1].float().log_softmax(-1)
    totals = [float(first[cont[0]]) for cont in continuations]
    by_length: dict[int, list[int]] = {}
    for i, cont in enumerate(continuations):
        if len(cont) > 1:
            by_length.setdefault(len(cont), []).append(i)
    for length, rows in by_length.items():
        rows_cache = copy.deepcopy(cache)
        rows_cache.batch_repeat_interleave(len(rows))
        ids = torch.tensor([continuations[i][:-1] for i in rows], device=device)
        logp = model(input_ids=ids, use_cache=True, **{cache_arg: rows_cache}).logits.float().log_softmax(-1)
        steps = torch.arange(length - 1, device=device)
        for r, i in enumerate(rows):
            totals[i] += float(logp[r, steps, torch.tensor(continuations[i][1:], device=device)].sum())
    return totals
