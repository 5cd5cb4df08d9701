"""``native``: a plain PyTorch SPPO/DPO trainer, data-parallel through accelerate.

Reference log-probabilities are computed once, before training, in one forward per example
(sharded across processes); when the reference is the starting policy (SPPO: π_ref = π_{t-1}) no
second model is loaded. Each optimizer step takes one global batch from the shared
:class:`~trainers.data.Schedule`; every micro-batch loss is a mean and accelerate divides it by
the accumulation count, and DDP averages over processes, so per-device batch, accumulation and
process count never change the maths. Under ``accelerate launch`` the same loop runs with DDP,
DeepSpeed or FSDP, whichever the accelerate config names.

With ``training.save_steps`` the model, optimizer, scheduler and RNG states are saved every N steps
(accelerate's ``save_state``, into ``request.state_dir``, swapped in whole). A restarted iteration
loads the last state and continues at the next step: the schedule fixes each step's examples, so
no example is skipped or repeated and the losses continue as if never interrupted.

With ``training.weight_rounding: split`` every forward of the policy and reference (the loop's, the
reference pass's, the after-training pass's) reads each fp32 master weight as two bf16/fp16 parts
(:mod:`trainers.split_weights`) instead of autocast's one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from tqdm.auto import tqdm
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

from harness.faults import crash_point
from harness.models import DTYPES, load_model
from trainers.base import NonFiniteLossError, TrainRequest, TrainResult, register
from trainers.data import accelerator, autocast, pair_forward, pair_logps, prepare, strategy
from trainers.losses import LENGTH_NORMALIZED, LOSSES, PreferenceBatch
from trainers.split_weights import split_weight_linears


def _optimizer(params: list[torch.nn.Parameter], cfg) -> torch.optim.Optimizer:
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


@register("native")
class NativeTrainer:
    name = "native"

    @staticmethod
    def discard_state(state_dir: Path) -> None:
        """The checkpoint is committed: the saved state (and a half-swapped next one) is spent."""
        for d in (state_dir, _next(state_dir)):
            shutil.rmtree(d, ignore_errors=True)

    def train(self, request: TrainRequest) -> TrainResult:
        cfg = request.config
        tok, pairs, schedule = prepare(request)
        acc = accelerator(request.device, schedule.accumulation)
        torch.manual_seed(request.seed)
        normalize = cfg.loss in LENGTH_NORMALIZED
        micro, pad = cfg.per_device_batch_size, tok.pad_token_id
        # a pair's prompt runs once, in a forward of its own, unless a checkpointed forward keeps
        # no KV cache or ZeRO-3/FSDP would gather every parameter again for it (on CPU that
        # doubled a ZeRO-3 step's time)
        share = not (cfg.gradient_checkpointing or _zero3(acc)
                     or acc.distributed_type == DistributedType.FSDP)
        show = request.progress and acc.is_main_process

        # Master weights in fp32; bf16/fp16 compute through autocast.
        model = load_model(request.model_path, "float32", acc.device, request.trust_remote_code,
                           cfg.attn_implementation)
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.config.use_cache = False
        if acc.state.deepspeed_plugin is not None:
            ds = acc.state.deepspeed_plugin.deepspeed_config
            ds["train_micro_batch_size_per_gpu"] = micro  # no data loader to infer it from
            # DeepSpeed clips by itself; accelerate would fill "auto" with 1.0 whatever was asked
            ds["gradient_clipping"] = cfg.max_grad_norm or 0.0
        opt = _optimizer([p for p in model.parameters() if p.requires_grad], cfg)
        model, opt = acc.prepare(model, opt)
        split = cfg.weight_rounding == "split" and cfg.dtype != "float32"
        if split:
            split_weight_linears(model, DTYPES[cfg.dtype])
        if request.reference_path == request.model_path:
            ref = pair_logps(model, pairs, micro, pad, acc, cfg.dtype, normalize, "reference", show,
                             share)
        else:
            ref_model = acc.prepare_model(load_model(
                request.reference_path, "float32", acc.device, request.trust_remote_code,
                cfg.attn_implementation),
                evaluation_mode=True)
            if split:
                split_weight_linears(ref_model, DTYPES[cfg.dtype])
            ref = pair_logps(ref_model, pairs, micro, pad, acc, cfg.dtype, normalize, "reference",
                             show, share)
            del ref_model  # freed before policy training

        warmup = math.ceil(cfg.warmup_ratio * schedule.steps)
        if cfg.lr_scheduler == "linear":
            sched = get_linear_schedule_with_warmup(opt, warmup, schedule.steps)
        else:
            sched = get_constant_schedule_with_warmup(opt, warmup)

        loss_fn = LOSSES[cfg.loss]
        result = TrainResult(steps=schedule.steps, examples=len(pairs), tokens=0, seconds=0.0,
                             strategy=strategy(acc))
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
        saving = bool(cfg.save_steps and request.state_dir is not None)
        kept_log: list[str] = []
        if saving:
            acc.register_for_checkpointing(sched)
            saved = _saved_state(request.state_dir)
            if saved is not None:
                progress = json.loads((saved / "progress.json").read_text())
                acc.load_state(str(saved / "state"))
                result.resumed_from_step = progress["step"]
                result.losses, result.tokens = progress["losses"], progress["tokens"]
                kept_log = progress["log"]
        log = None
        if acc.is_main_process:
            request.log_path.parent.mkdir(parents=True, exist_ok=True)
            log = request.log_path.open("w", encoding="utf-8")
            log.writelines(kept_log)
        start = time.perf_counter()
        model.train()
        bar = tqdm(total=schedule.steps, initial=result.resumed_from_step, desc=f"train ({cfg.loss})",
                   unit="step", disable=not show)
        try:
            for step in range(result.resumed_from_step, schedule.steps):
                # loss, chosen and rejected log-ratio sums, tokens: this process's share
                sums = torch.zeros(4, dtype=torch.float64)
                # each micro-batch's loss is its counted examples' sum over this divisor: after
                # accelerate's division by the accumulation and the mean over processes, the step
                # takes the mean over its examples (the micro-batch mean when the step is full)
                size = len(schedule.batches[step])
                divisor = size / (schedule.accumulation * acc.num_processes)
                for micro_batch in schedule.micro_batches(step, acc.process_index):
                    mb, n = micro_batch.indices, micro_batch.counted
                    with acc.accumulate(model), autocast(acc.device, cfg.dtype):
                        logps, counts, forwarded = pair_forward(model, [pairs[i] for i in mb], pad,
                                                                share)
                        if normalize:
                            logps = logps / counts
                        pol_c, pol_r = logps.float().split(len(mb))
                        r = ref[mb].to(acc.device)
                        pb = PreferenceBatch(
                            pol_c, pol_r, r[:, 0], r[:, 1],
                            *(torch.tensor([getattr(pairs[i], f) for i in mb], device=acc.device)
                              for f in ("chosen_probs", "chosen_probs_win", "chosen_probs_lose")),
                        )
                        losses = loss_fn(pb, cfg.beta)
                        if not torch.isfinite(losses).all():
                            bad = [pairs[mb[i]].prompt_id for i in
                                   (~torch.isfinite(losses)).nonzero().flatten().tolist()]
                            raise NonFiniteLossError(
                                f"non-finite loss at step {step + 1}, prompts {bad}; "
                                "no checkpoint was written for this iteration")
                        acc.backward(losses[:n].sum() / divisor)
                    sums += torch.tensor([
                        float(losses[:n].detach().sum()),
                        float((pol_c - pb.ref_chosen)[:n].detach().sum()),
                        float((pol_r - pb.ref_rejected)[:n].detach().sum()),
                        float(forwarded[:n].sum()),
                    ], dtype=torch.float64)
                norm = acc.clip_grad_norm_(model.parameters(), max_norm)  # None under DeepSpeed
                lr = sched.get_last_lr()[0]
                opt.step()
                if norm is None and hasattr(model, "get_global_grad_norm"):  # DeepSpeed's engine
                    norm = model.get_global_grad_norm()
                grad_norm = None if norm is None else float(norm)
                if grad_norm is not None and not math.isfinite(grad_norm):
                    raise NonFiniteLossError(f"non-finite gradient norm at step {step + 1}; "
                                             "no checkpoint was written for this iteration")
                sched.step()
                opt.zero_grad(set_to_none=True)
                total = acc.reduce(sums.to(acc.device), reduction="sum").cpu()
                step_loss = float(total[0]) / size
                result.tokens += int(total[3])
                row = {
                    "step": step + 1,
                    "epoch": sum(map(len, schedule.batches[: step + 1])) / len(pairs),
                    "loss": step_loss,
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "chosen_logratio": float(total[1]) / size,
                    "rejected_logratio": float(total[2]) / size,
                    "tokens": result.tokens,
                    "seconds": time.perf_counter() - start,
                }
                kept_log.append(json.dumps(row) + "\n")
                if log is not None:
                    log.write(kept_log[-1])
                    log.flush()
                result.losses.append(step_loss)
                if saving and (step + 1) % cfg.save_steps == 0 and step + 1 < schedule.steps:
                    _save_state(acc, request.state_dir, {"step": step + 1, "losses": result.losses,
                                                         "tokens": result.tokens, "log": kept_log})
                crash_point("train/step")
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.4g}")
        finally:
            bar.close()
            if log is not None:
                log.close()
        result.seconds = time.perf_counter() - start

        after = pair_logps(model, pairs, micro, pad, acc, cfg.dtype, normalize, "after", show,
                           share) - ref
        result.logratios_before = {"chosen": 0.0, "rejected": 0.0} if (
            request.reference_path == request.model_path) else {}
        result.logratios_after = {"chosen": float(after[:, 0].mean()),
                                  "rejected": float(after[:, 1].mean())}
        save_checkpoint(acc, model, tok, request)
        return result


def _saved_state(state_dir: Path) -> Path | None:
    """The complete saved state, if any (the next one, when a crash came mid-swap)."""
    for d in (state_dir, _next(state_dir)):
        if (d / "progress.json").is_file():
            return d
    return None


def _next(state_dir: Path) -> Path:
    return state_dir.with_name(state_dir.name + ".next")


def _save_state(acc: Accelerator, state_dir: Path, progress: dict) -> None:
    """All processes save into ``<state_dir>.next``; the main process then swaps it in whole."""
    nxt = _next(state_dir)
    if acc.is_main_process:
        shutil.rmtree(nxt, ignore_errors=True)
        (nxt / "state").mkdir(parents=True)  # before any process writes its shard (ZeRO-3) into it
    acc.wait_for_everyone()
    acc.save_state(str(nxt / "state"))
    acc.wait_for_everyone()  # every process has written its part (ZeRO-3 shards, RNG states)
    if acc.is_main_process:
        (nxt / "progress.json").write_text(json.dumps(progress))  # written last: marks it complete
        shutil.rmtree(state_dir, ignore_errors=True)
        os.replace(nxt, state_dir)
    acc.wait_for_everyone()


def _zero3(acc: Accelerator) -> bool:
    plugin = acc.state.deepspeed_plugin
    return plugin is not None and plugin.deepspeed_config["zero_optimization"]["stage"] == 3


def full_state_dict(acc: Accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on the main process. Under ZeRO-3 these are the optimizer's fp32
    master weights, gathered (accelerate's 16-bit gathering would save bf16 weights where DDP saves
    fp32); otherwise accelerate's gathering (FSDP shards, DDP's module)."""
    if not _zero3(acc):
        return acc.get_state_dict(model)
    from deepspeed.utils import safe_get_full_fp32_param

    state = {}
    for name, param in acc.unwrap_model(model).named_parameters():
        full = safe_get_full_fp32_param(param)  # a collective: every process takes part
        if acc.is_main_process:
            state[name] = full.detach().cpu().contiguous()
    return state


def save_checkpoint(acc: Accelerator, model: torch.nn.Module, tok, request: TrainRequest) -> None:
    """Hugging Face format on the main process; gathers ZeRO-3/FSDP shards first."""
    acc.wait_for_everyone()
    state = full_state_dict(acc, model)
    unwrapped = acc.unwrap_model(model)
    if request.config.gradient_checkpointing:
        unwrapped.config.use_cache = True
    unwrapped.save_pretrained(request.output_dir, is_main_process=acc.is_main_process,
                              save_function=acc.save, state_dict=state, safe_serialization=True)
    if acc.is_main_process:
        # config.json names the saved weights' dtype, not the module's (bf16 under DeepSpeed)
        unwrapped.config.dtype = next(v.dtype for v in state.values() if v.is_floating_point())
        unwrapped.config.save_pretrained(request.output_dir)
        tok.save_pretrained(request.output_dir)
    acc.wait_for_everyone()
