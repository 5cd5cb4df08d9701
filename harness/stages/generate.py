"""Generate stage: K samples per prompt from π_{t-1}, committed batch by batch (a crash loses
one batch at most), or sharded over processes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness import sharded
from harness.artifacts import partial_path, write_jsonl
from harness.commits import Commits
from harness.generate import Generation, Sampling
from harness.prompts import Prompt
from harness.under_test import choose_backend

if TYPE_CHECKING:
    from harness.pipeline import SPPORun


def run_stage(run: SPPORun, t: int, prompts: list[Prompt]) -> dict[str, Any]:
    path = run.policy_path(t - 1)
    sampling = run.policy_sampling()
    n = run.processes()
    resumed = 0
    if n > 1 and choose_backend(run.opts.generator) == "transformers":
        run.release()
        outs = sharded.generate(
            path, prompts, sampling, dtype=run.config.sampling.dtype,
            batch_size=run.config.sampling.batch_size,
            trust_remote_code=run.config.model.trust_remote_code, device=run.opts.device,
            work=run.dir.iter_dir(t), processes=n, config=run.opts.accelerate_config)
        generator = {"backend": "transformers", "model": path, "processes": n}
        seed_rule = sampling.as_dict()["seed_rule"]
    else:  # one model under test (vLLM spreads over its GPUs itself)
        model = run.model(t - 1)
        generator, seed_rule = model.provenance(), model.seed_rule
        # batch by batch into a partial file: a crash loses one batch at most
        commits = Commits(run.dir.generations(t), "prompt_id", "generate/chunk", what="prompt")
        resumed = commits.resumed
        done = {k: Generation(r["responses"], r["num_tokens"], r["finished"])
                for k, r in commits.rows.items()}
        outs = model.sample(prompts, sampling, done=done, on_batch=lambda batch: commits.commit(
            generation_row(p, g, generator, sampling, seed_rule) for p, g in batch))
    write_jsonl(run.dir.generations(t), (generation_row(p, g, generator, sampling, seed_rule)
                                          for p, g in zip(prompts, outs, strict=True)))
    partial_path(run.dir.generations(t)).unlink(missing_ok=True)
    n_tok = sum(sum(g.num_tokens) for g in outs)
    cut = sum(not f for g in outs for f in g.finished)
    return {"prompts": len(prompts), "responses": len(prompts) * len(sampling.seeds),
            "new_tokens": n_tok, "cut_at_max_new_tokens": cut, "processes": generator.get(
                "processes", 1), "resumed_prompts": resumed}


def generation_row(p: Prompt, g: Generation, generator: dict[str, Any],
                    sampling: Sampling, seed_rule: str) -> dict[str, Any]:
    return {"prompt_id": p.prompt_id, "prompt": p.prompt, "responses": g.responses,
            "num_tokens": g.num_tokens, "finished": g.finished, "generator": generator,
            "sampling": sampling.as_dict(seed_rule)}
