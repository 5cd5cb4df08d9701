"""The in-loop evaluation (the win rate against the base): one sample of the base and of each
checkpoint on the held-out prompts, scored by the run's ranker: together, or, for a ranker whose
scores are independent of the other candidates (:attr:`harness.rank.Ranker.independent`), the
base's answers once per run (``iter-0``'s ``base_scores.json``) and each checkpoint's alone, so
that every iteration is compared with the same base scores."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness import evaluate
from harness.artifacts import read_json, read_jsonl, write_json, write_jsonl
from harness.prompts import Prompt
from harness.rank import Ranker

if TYPE_CHECKING:
    from harness.pipeline import SPPORun


def heldout_generations(run: SPPORun, t: int, prompts: list[Prompt]) -> list[dict[str, Any]]:
    path = run.dir.eval_dir(t, evaluate.BENCHMARK) / "generations.jsonl"
    if path.exists():
        return read_jsonl(path)
    sampling = run.sampling()
    model = run.model(t)
    outs = model.sample(prompts, sampling)
    rows = [{"prompt_id": p.prompt_id, "prompt": p.prompt, "response": g.responses[0],
             "num_tokens": g.num_tokens[0], "finished": g.finished[0],
             "generator": model.provenance(), "sampling": sampling.as_dict(model.seed_rule)}
            for p, g in zip(prompts, outs, strict=True)]
    write_jsonl(path, rows)
    return rows


def base_scores(run: SPPORun, ranker: Ranker, base: list[dict[str, Any]]) -> list[float]:
    """The base's held-out answers scored alone, read from ``iter-0`` when this ranker (in this
    dtype) scored them before, else (also when the file does not hold a score per answer) scored
    and written there."""
    path = run.dir.eval_dir(0, evaluate.BENCHMARK) / "base_scores.json"
    key = {"ranker": ranker.name, "dtype": run.config.sampling.dtype,
           "prompt_ids": [b["prompt_id"] for b in base]}
    if path.exists():
        saved = read_json(path)
        if {k: saved.get(k) for k in key} == key and len(saved.get("scores") or ()) == len(base):
            return saved["scores"]
    scores = [s[0] for s in ranker.score([b["prompt"] for b in base], [[b["response"]] for b in base])]
    write_json(path, {**key, "scores": scores})
    return scores


def run_stage(run: SPPORun, t: int, prompts: list[Prompt]) -> dict[str, Any]:
    base = heldout_generations(run, 0, prompts)
    new = heldout_generations(run, t, prompts)
    ranker = run.ranker()
    if getattr(ranker, "independent", False):
        reference = base_scores(run, ranker, base)
        new_scores = ranker.score([n["prompt"] for n in new], [[n["response"]] for n in new])
        scores = [[b, n[0]] for b, n in zip(reference, new_scores, strict=True)]
    else:
        scores = ranker.score([b["prompt"] for b in base],
                              [[b["response"], n["response"]] for b, n in zip(base, new, strict=True)])
    out = run.dir.eval_dir(t, evaluate.BENCHMARK)
    write_jsonl(out / "scores.jsonl", (
        {"prompt_id": b["prompt_id"], "base_score": s[0], "score": s[1]}
        for b, s in zip(base, scores, strict=True)))
    # from the ranker's scores under either preferences.probabilities: the estimator shapes
    # training, not this measurement, so it is not part of the protocol ("judge" names the ranker)
    metrics = evaluate.win_rate([s[0] for s in scores], [s[1] for s in scores])
    sampling = run.sampling().as_dict()
    results = {
        "benchmark": evaluate.BENCHMARK,
        "version": evaluate.VERSION,
        "metrics": metrics,
        "provenance": {
            "model": run.policy_path(t),
            "iteration": t,
            "baseline": f"base policy ({run.config.model.source})",
            "judge": ranker.name,
            "judge_dtype": run.config.sampling.dtype,
            "n_examples": len(prompts),
            "prompts": f"{run.config.prompts.heldout} (held out, last "
                       f"{run.config.prompts.heldout_size})",
            "decoding": sampling,
            "profile": run.config.profile,
            "base_config": run.config.name,
            "git_sha": run.dir.meta.get("git_sha"),
            "packages": run.dir.meta.get("packages"),
        },
    }
    write_json(out / "results.json", results)
    return {k: metrics[k] for k in ("win_rate", "standard_error")}
