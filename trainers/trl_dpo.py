"""``trl``: TRL's DPOTrainer, extended with the soft SPPO losses.

``sigmoid``, ``ipo_mean`` (TRL's ``ipo``) and ``sppo_hard`` are TRL's own loss code; ``sppo``,
``sppo_single`` and ``ipo`` (official SPPO's, on summed log-probabilities) use
:mod:`trainers.losses`, the first two reading the ``chosen_probs*`` columns. The pairs are tokenised by
:mod:`trainers.data` and visited in the shared :class:`~trainers.data.Schedule` order, so this
backend and ``native`` see the same tokens in the same steps. Reference log-probabilities are
precomputed by TRL (one forward per example) and the reference model is dropped before training.
Under ``accelerate launch`` TRL's own DDP/DeepSpeed/FSDP support applies.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from datasets import Dataset, load_from_disk
from torch.utils.data import Sampler
from transformers import PrinterCallback, TrainerCallback
from trl import DPOConfig, DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from harness.config import TrainingConfig
from harness.errors import ConfigError, DataError
from harness.models import load_model
from trainers.base import NonFiniteLossError, TrainRequest, TrainResult, register
from trainers.data import pair_logps, prepare, strategy
from trainers.losses import LOSSES, PreferenceBatch

PROB_COLUMNS = ("chosen_probs", "chosen_probs_win", "chosen_probs_lose")
SOFT_LOSSES = frozenset({"sppo", "sppo_single", "ipo"})  # ours; everything else is TRL's code
TRL_NAMES = {"ipo_mean": "ipo"}  # harness loss → TRL loss_type, where they differ


class _FixedOrder(Sampler[int]):
    def __init__(self, order: list[int]) -> None:
        self.order = order

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


class _ProbCollator:
    """TRL's preference collator plus the SPPO probability columns as float tensors."""

    def __init__(self, inner: DataCollatorForPreference) -> None:
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        out = self.inner(examples)
        for k in PROB_COLUMNS:
            out[k] = torch.tensor([ex[k] for ex in examples], dtype=torch.float32)
        return out


class SPPODPOTrainer(DPOTrainer):
    """DPOTrainer with the soft SPPO losses, pre-tokenised data and a fixed example order."""

    def __init__(self, *args: Any, soft_loss: str | None, order: list[int], **kwargs: Any) -> None:
        self._soft_loss = soft_loss
        self._order = order
        super().__init__(*args, **kwargs)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset  # tokenised by trainers.data, exactly as for the native backend

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns = [*self._signature_columns, *PROB_COLUMNS]

    def _get_train_sampler(self, train_dataset=None):
        return _FixedOrder(self._order)

    def compute_ref_log_probs(self, model, inputs):
        return super().compute_ref_log_probs(
            model, {k: v for k, v in inputs.items() if k not in PROB_COLUMNS})

    def _compute_loss(self, model, inputs, return_outputs):
        probs = {k: inputs.pop(k) for k in PROB_COLUMNS if k in inputs}
        if self._soft_loss is None:
            out = super()._compute_loss(model, inputs, return_outputs)
        else:
            out = self._soft_sppo_loss(model, inputs, probs, return_outputs)
        loss = out[0] if return_outputs else out
        if not torch.isfinite(loss).all():
            raise NonFiniteLossError(f"non-finite loss at step {self.state.global_step + 1}; "
                                     "no checkpoint was written for this iteration")
        return out

    def _soft_sppo_loss(self, model, inputs, probs, return_outputs):
        mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(mask == 0, -100)
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                    labels=labels, use_cache=False, fused_lm_head=True)
        logps = out.log_probs[:, -(mask.size(1) - 1):].sum(dim=1)
        chosen, rejected = logps.chunk(2, dim=0)
        ref_c, ref_r = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        batch = PreferenceBatch(chosen, rejected, ref_c, ref_r,
                                *(probs[k].to(chosen.dtype) for k in PROB_COLUMNS))
        loss = LOSSES[self._soft_loss](batch, self.beta).mean()
        mode = "train" if self.model.training else "eval"
        gather = self.accelerator.gather_for_metrics
        for key, value in (("rewards/chosen", self.beta * (chosen - ref_c)),
                           ("rewards/rejected", self.beta * (rejected - ref_r))):
            self._metrics[mode][key].append(gather(value.detach()).mean().item())
        if mode == "train":
            tokens = gather(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += tokens
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return (loss, out) if return_outputs else loss


class _StepLog(TrainerCallback):
    """One ``train_log.jsonl`` row per optimizer step, in the native backend's columns."""

    def __init__(self, request: TrainRequest, n_pairs: int, global_batch: int) -> None:
        self.request, self.n, self.g = request, n_pairs, global_batch
        self.rows: list[dict[str, Any]] = []
        self.lr = 0.0
        self.start = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_begin(self, args, state, control, lr_scheduler=None, **kwargs):
        self.lr = lr_scheduler.get_last_lr()[0]  # the rate this step uses

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        beta = self.request.config.beta
        row = {
            "step": state.global_step,
            "epoch": state.global_step * self.g / self.n,
            "loss": float(logs["loss"]),
            "lr": self.lr,
            "grad_norm": logs.get("grad_norm"),
            "chosen_logratio": logs["rewards/chosen"] / beta,
            "rejected_logratio": logs["rewards/rejected"] / beta,
            "tokens": int(logs.get("num_tokens", 0)),
            "seconds": time.perf_counter() - self.start,
        }
        self.rows.append(row)
        if state.is_world_process_zero:
            with self.request.log_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


def dpo_config(request: TrainRequest, steps: int, accumulation: int, output_dir: str) -> DPOConfig:
    """TRL/transformers arguments equal to the harness hyper-parameters."""
    cfg = request.config
    # the soft ones are computed here (TRL's loss is configured but unused)
    loss = "sppo_hard" if cfg.loss in SOFT_LOSSES else TRL_NAMES.get(cfg.loss, cfg.loss)
    return DPOConfig(
        output_dir=output_dir,
        loss_type=[loss],
        beta=cfg.beta,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler if cfg.lr_scheduler == "linear" else
        "constant_with_warmup",
        warmup_steps=math.ceil(cfg.warmup_ratio * steps),
        optim="rmsprop" if cfg.optimizer == "rmsprop" else "adamw_torch",
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf"),
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=steps,
        max_length=cfg.max_length,
        bf16=cfg.dtype == "bfloat16",
        fp16=cfg.dtype == "float16",
        use_cpu=request.device == "cpu",
        activation_checkpointing=cfg.gradient_checkpointing,
        precompute_ref_log_probs=True,
        precompute_ref_batch_size=cfg.per_device_batch_size,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=request.seed,
        disable_tqdm=not request.progress,
        dataloader_num_workers=0,
    )


def _shared_dataset(pairs: list, path: Path) -> Dataset:
    """The pairs as an on-disk dataset every process opens, so TRL's cache of reference
    log-probabilities (written beside it by the main process) is visible to all of them."""
    state = PartialState()
    with state.main_process_first():
        if state.is_main_process:
            shutil.rmtree(path, ignore_errors=True)
            Dataset.from_list([
                {"prompt_ids": p.prompt_ids, "chosen_ids": p.chosen_ids,
                 "rejected_ids": p.rejected_ids, **{k: getattr(p, k) for k in PROB_COLUMNS}}
                for p in pairs]).save_to_disk(str(path))
        return load_from_disk(str(path))


@register("trl")
class TRLTrainer:
    name = "trl"

    @staticmethod
    def check(cfg: TrainingConfig) -> None:
        """What this backend cannot do, refused before any work."""
        if cfg.save_steps:
            raise ConfigError("training.save_steps (mid-iteration resume) needs the native "
                              "trainer; set it to 0 or use --trainer native")
        if cfg.last_batch == "partial":
            raise ConfigError("training.last_batch: partial needs the native trainer (TRL's steps "
                              "all take a full global batch here); use last_batch: wrap or "
                              "--trainer native")
        if cfg.weight_rounding == "split" and cfg.dtype != "float32":
            raise ConfigError("training.weight_rounding: split needs the native trainer (TRL "
                              "computes through autocast's single rounding); use "
                              "weight_rounding: single or --trainer native")

    def train(self, request: TrainRequest) -> TrainResult:
        pairs_dir = request.output_dir.parent / ".trl_pairs"
        try:
            return self._train(request, pairs_dir)
        finally:  # also when training fails: nothing is left beside the checkpoint
            if PartialState().is_main_process:
                shutil.rmtree(pairs_dir, ignore_errors=True)

    def _train(self, request: TrainRequest, pairs_dir: Path) -> TrainResult:
        cfg = request.config
        self.check(cfg)
        tok, pairs, schedule = prepare(request)
        split = [p.prompt_id for p in pairs if p.rejected_prompt_ids is not None]
        if split:
            raise DataError(f"{request.preferences}: in prompts {split[:5]} the tokenizer merged the "
                            "prompt's last token into a response, so chosen and rejected have "
                            "different contexts, which TRL's collator cannot hold; use --trainer "
                            "native")
        dataset = _shared_dataset(pairs, pairs_dir)
        device = "cpu" if request.device == "cpu" else PartialState().device
        model = load_model(request.model_path, "float32", device, request.trust_remote_code,
                           cfg.attn_implementation)
        ref_model = None
        if request.reference_path != request.model_path:
            ref_model = load_model(request.reference_path, "float32", device,
                                   request.trust_remote_code, cfg.attn_implementation)
        if PartialState().is_main_process:
            request.log_path.parent.mkdir(parents=True, exist_ok=True)
            request.log_path.write_text("")
        step_log = _StepLog(request, len(pairs), schedule.global_batch)
        trainer = SPPODPOTrainer(
            model=model, ref_model=ref_model,
            args=dpo_config(request, schedule.steps, schedule.accumulation,
                            str(request.output_dir)),
            train_dataset=dataset, processing_class=tok,
            data_collator=_ProbCollator(DataCollatorForPreference(pad_token_id=tok.pad_token_id)),
            callbacks=[step_log],
            soft_loss=cfg.loss if cfg.loss in SOFT_LOSSES else None,
            order=schedule.order,
        )
        trainer.ref_model = None  # log-probs are precomputed; free the reference
        if not request.progress:
            trainer.remove_callback(PrinterCallback)
        ref = torch.stack([torch.tensor(trainer.train_dataset[k], dtype=torch.float32)
                           for k in ("ref_chosen_logps", "ref_rejected_logps")], dim=1)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start

        acc = trainer.accelerator
        after = pair_logps(trainer.model_wrapped, pairs, cfg.per_device_batch_size, tok.pad_token_id,
                           acc, cfg.dtype, False, "after", request.progress) - ref
        if cfg.gradient_checkpointing:
            acc.unwrap_model(trainer.model).config.use_cache = True
        trainer.save_model(str(request.output_dir))
        trainer.accelerator.wait_for_everyone()
        result = TrainResult(
            steps=schedule.steps, examples=len(pairs),
            tokens=step_log.rows[-1]["tokens"] if step_log.rows else 0, seconds=seconds,
            losses=[r["loss"] for r in step_log.rows],
            logratios_before={"chosen": 0.0, "rejected": 0.0} if ref_model is None else {},
            logratios_after={"chosen": float(after[:, 0].mean()),
                             "rejected": float(after[:, 1].mean())},
            strategy=strategy(acc),
        )
        return result
