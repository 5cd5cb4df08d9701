"""Pre-flight: what a run checks before it does any work, so that a bad setting fails in seconds,
not after hours of generation: the prompt sources, the trainer backend's support for the training
settings, the process layout, the ranker, each benchmark's own check, and (once the base model is
known) the prompts' lengths."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness import benchmarks, distributed
from harness.errors import ConfigError, DataError
from harness.models import load_tokenizer
from harness.prompts import Prompt
from harness.rank import check_ranker
from trainers import get_trainer

if TYPE_CHECKING:
    from harness.pipeline import SPPORun


def check(run: SPPORun) -> None:
    config, opts = run.config, run.opts
    if opts.iters < 1:
        raise ConfigError("--iters must be at least 1")
    for t in range(1, opts.iters + 1):
        config.prompt_source(t)
    trainer = get_trainer(config.trainer)
    if hasattr(trainer, "check"):  # what the backend cannot do
        trainer.check(config.training)
    if opts.launcher == "accelerate":
        n, tc = opts.num_processes, config.training
        if n < 1:
            raise ConfigError("--num-processes must be at least 1")
        if tc.global_batch_size % (tc.per_device_batch_size * n):
            raise ConfigError(
                f"training.global_batch_size ({tc.global_batch_size}) must be a multiple of "
                f"per_device_batch_size × --num-processes ({tc.per_device_batch_size} × {n})")
        distributed.accelerate_config(opts.accelerate_config, opts.device)
    check_ranker(config.ranker, pairwise=run.pairwise())
    benchmarks.check_settings(config)
    for b in benchmarks.runnable(config.evaluation.benchmarks):
        if b.preflight is not None:
            b.preflight(config)


def check_prompt_lengths(run: SPPORun, prompts_of: dict[int, list[Prompt]]) -> None:
    """Under the clean layout every prompt must fit ``training.max_prompt_length`` with its chat
    template (the official layout cuts long prompts, as upstream); checkpoints keep the base's
    tokenizer, so the base's says it for every iteration."""
    if run.config.training.layout != "clean":
        return
    from harness.generate import chat_prompt

    tok = load_tokenizer(run.base_path, run.config.model.trust_remote_code)
    limit = run.config.training.max_prompt_length
    for prompts in prompts_of.values():
        for p in prompts:
            n = len(tok(chat_prompt(tok, p.prompt), add_special_tokens=False)["input_ids"])
            if n > limit:
                raise DataError(
                    f"prompt {p.prompt_id} is {n} tokens with its chat template, more than "
                    f"training.max_prompt_length={limit}; drop it from the prompt source or "
                    "raise the limit")
