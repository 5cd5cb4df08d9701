"""Train stage: π_t against the reference π_{t-1} through the chosen trainer backend, in this
process or in N through accelerate; the checkpoint is committed atomically."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.artifacts import atomic_dir, read_jsonl
from harness.probabilities import check_preferences
from trainers import TrainRequest, discard_state, get_trainer, launch

if TYPE_CHECKING:
    from harness.pipeline import SPPORun


def run_stage(run: SPPORun, t: int) -> dict[str, Any]:
    prefs = run.config.preferences
    check_preferences(read_jsonl(run.dir.preferences(t)), read_jsonl(run.dir.generations(t)),
                      {r["prompt_id"]: r for r in read_jsonl(run.dir.scores(t))},
                      str(run.dir.preferences(t)), probabilities=prefs.probabilities,
                      ties=prefs.ties)
    run.release()  # free the model under test (and shut vLLM down) before training
    trainer = get_trainer(run.config.trainer)
    ckpt = run.dir.checkpoint(t)
    with atomic_dir(ckpt) as tmp:
        request = TrainRequest(
            model_path=run.policy_path(t - 1),
            reference_path=run.policy_path(t - 1),
            preferences=run.dir.preferences(t),
            output_dir=tmp,
            log_path=run.dir.train_log(t),
            config=run.config.training,
            seed=run.opts.seed + t,
            device=run.opts.device,
            trust_remote_code=run.config.model.trust_remote_code,
            progress=run.opts.progress,
            state_dir=run.dir.train_state(t) if run.config.training.save_steps else None,
        )
        if run.opts.launcher == "accelerate":
            result = launch.run(trainer.name, request, run.processes(),
                                run.opts.accelerate_config)
        else:
            result = trainer.train(request)
    discard_state(trainer, run.dir.train_state(t))  # the checkpoint is committed
    info = result.as_dict()
    info["train_seconds"] = round(info.pop("seconds"), 2)
    info["trainer"] = trainer.name
    info["processes"] = run.processes()
    info["final_loss"] = result.losses[-1] if result.losses else None
    info["losses"] = [round(x, 6) for x in result.losses]
    return info
