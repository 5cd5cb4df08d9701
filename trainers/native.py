"""``native``: a plain PyTorch SPPO/DPO trainer.

Reference log-probabilities are computed once, before training, in one forward per example;
when the reference is the starting policy (SPPO: π_ref = π_{t-1}) no second model is loaded.
Optimizer steps follow the global batch: per-device micro-batches are accumulated and each
example's loss is weighted 1/(examples in the step), so micro-batching never changes the maths.
"""

from __future__ import annotations

import json
import math
import time

import torch
from tqdm.auto import tqdm
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

from harness.errors import HarnessError
from harness.logprobs import sequence_logps
from harness.models import DTYPES, load_model, load_tokenizer
from trainers.base import TrainRequest, TrainResult, register
from trainers.data import PairExample, collate, load_pairs
from trainers.losses import LENGTH_NORMALIZED, LOSSES, PreferenceBatch


class NonFiniteLossError(HarnessError):
    pass


def _autocast(device: torch.device, dtype: str):
    if dtype == "float32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=DTYPES[dtype])


@torch.no_grad()
def pair_logps(
    model: torch.nn.Module, pairs: list[PairExample], batch_size: int, pad_id: int,
    device: torch.device, dtype: str, normalize: bool, desc: str, progress: bool,
) -> torch.Tensor:
    """[N, 2] log-probs (chosen, rejected) of every pair under ``model``."""
    model.eval()
    out = []
    for i in tqdm(range(0, len(pairs), batch_size), desc=desc, disable=not progress):
        chunk = pairs[i : i + batch_size]
        batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
        with _autocast(device, dtype):
            logps, n = sequence_logps(model, batch)
        if normalize:
            logps = logps / n
        out.append(torch.stack(logps.split(len(chunk)), dim=1).cpu())
    return torch.cat(out)


@register("native")
class NativeTrainer:
    name = "native"

    def train(self, request: TrainRequest) -> TrainResult:
        cfg = request.config
        device = torch.device(request.device)
        torch.manual_seed(request.seed)
        tok = load_tokenizer(request.model_path, request.trust_remote_code)
        pairs = load_pairs(request.preferences, tok, cfg.max_length, cfg.max_prompt_length)
        normalize = cfg.loss in LENGTH_NORMALIZED
        micro = cfg.per_device_batch_size
        show = request.progress

        # Master weights in fp32; bf16/fp16 compute through autocast.
        model = load_model(request.model_path, "float32", device, request.trust_remote_code)
        if request.reference_path == request.model_path:
            ref = pair_logps(model, pairs, micro, tok.pad_token_id, device, cfg.dtype, normalize,
                             "reference", show)
        else:
            ref_model = load_model(request.reference_path, "float32", device,
                                   request.trust_remote_code)
            ref = pair_logps(ref_model, pairs, micro, tok.pad_token_id, device, cfg.dtype,
                             normalize, "reference", show)
            del ref_model
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.config.use_cache = False

        n = len(pairs)
        global_batch = min(cfg.global_batch_size, n)
        total_examples = math.ceil(n * cfg.epochs)
        steps = math.ceil(total_examples / global_batch)
        params = [p for p in model.parameters() if p.requires_grad]
        if cfg.optimizer == "rmsprop":
            opt = torch.optim.RMSprop(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        warmup = math.ceil(cfg.warmup_ratio * steps)
        if cfg.lr_scheduler == "linear":
            sched = get_linear_schedule_with_warmup(opt, warmup, steps)
        else:
            sched = get_constant_schedule_with_warmup(opt, warmup)

        # Data order: one seeded permutation per epoch, concatenated, cut into optimizer steps.
        gen = torch.Generator().manual_seed(request.seed)
        order: list[int] = []
        while len(order) < total_examples:
            order.extend(torch.randperm(n, generator=gen).tolist())
        order = order[:total_examples]

        loss_fn = LOSSES[cfg.loss]
        request.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = request.log_path.open("w", encoding="utf-8")
        result = TrainResult(steps=steps, examples=n, tokens=0, seconds=0.0)
        start = time.perf_counter()
        model.train()
        bar = tqdm(total=steps, desc=f"train ({cfg.loss})", unit="step", disable=not show)
        try:
            for step in range(steps):
                idx = order[step * global_batch : (step + 1) * global_batch]
                opt.zero_grad(set_to_none=True)
                step_loss, sums = 0.0, {"chosen": 0.0, "rejected": 0.0}
                for j in range(0, len(idx), micro):
                    mb = idx[j : j + micro]
                    batch = {k: v.to(device) for k, v in
                             collate([pairs[i] for i in mb], tok.pad_token_id).items()}
                    result.tokens += int(batch["attention_mask"].sum())
                    with _autocast(device, cfg.dtype):
                        logps, counts = sequence_logps(model, batch)
                    if normalize:
                        logps = logps / counts
                    pol_c, pol_r = logps.split(len(mb))
                    r = ref[mb].to(device)
                    pb = PreferenceBatch(
                        pol_c, pol_r, r[:, 0], r[:, 1],
                        *(torch.tensor([getattr(pairs[i], f) for i in mb], device=device)
                          for f in ("chosen_probs", "chosen_probs_win", "chosen_probs_lose")),
                    )
                    losses = loss_fn(pb, cfg.beta)
                    if not torch.isfinite(losses).all():
                        bad = [pairs[mb[i]].prompt_id for i in
                               (~torch.isfinite(losses)).nonzero().flatten().tolist()]
                        raise NonFiniteLossError(
                            f"non-finite loss at step {step + 1}, prompts {bad}; "
                            "no checkpoint was written for this iteration"
                        )
                    (losses.sum() / len(idx)).backward()
                    step_loss += float(losses.detach().sum()) / len(idx)
                    sums["chosen"] += float((pol_c - pb.ref_chosen).detach().sum())
                    sums["rejected"] += float((pol_r - pb.ref_rejected).detach().sum())
                max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
                if not math.isfinite(grad_norm):
                    raise NonFiniteLossError(
                        f"non-finite gradient norm at step {step + 1}; "
                        "no checkpoint was written for this iteration"
                    )
                lr = sched.get_last_lr()[0]
                opt.step()
                sched.step()
                row = {
                    "step": step + 1,
                    "epoch": (step + 1) * global_batch / n,
                    "loss": step_loss,
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "chosen_logratio": sums["chosen"] / len(idx),
                    "rejected_logratio": sums["rejected"] / len(idx),
                    "tokens": result.tokens,
                    "seconds": time.perf_counter() - start,
                }
                log.write(json.dumps(row) + "\n")
                log.flush()
                result.losses.append(step_loss)
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.4g}")
        finally:
            bar.close()
            log.close()
        result.seconds = time.perf_counter() - start

        after = pair_logps(model, pairs, micro, tok.pad_token_id, device, cfg.dtype, normalize,
                           "after", show) - ref
        result.logratios_before = {"chosen": 0.0, "rejected": 0.0} if (
            request.reference_path == request.model_path) else {}
        result.logratios_after = {"chosen": float(after[:, 0].mean()),
                                  "rejected": float(after[:, 1].mean())}
        if cfg.gradient_checkpointing:
            model.config.use_cache = True
        model.save_pretrained(request.output_dir, safe_serialization=True)
        tok.save_pretrained(request.output_dir)
        return result
