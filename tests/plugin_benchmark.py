"""A benchmark that is not built in, registered from ``SPPO_PLUGINS=plugin_benchmark``: how many
words the checkpoint writes, greedy, on three fixed instructions. It touches no harness file, yet
runs as a stage of ``harness run``, and its numbers reach the leaderboard and the gate."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from harness.artifacts import write_json
from harness.benchmarks import Benchmark, Metric, StageContext, register
from harness.prompts import Prompt

NAME = "answer_words"
INSTRUCTIONS = ("Name a colour.", "Say hello.", "Count to three.")


def run_stage(ctx: StageContext, t: int) -> dict[str, Any]:
    sampling = replace(ctx.sampling(), temperature=0.0, do_sample=False)
    prompts = [Prompt(f"{NAME}-{i}", x) for i, x in enumerate(INSTRUCTIONS)]
    answers = [g.responses[0] for g in ctx.model(t).sample(prompts, sampling)]
    words = [len(a.split()) for a in answers]
    mean = sum(words) / len(words)
    var = sum((w - mean) ** 2 for w in words) / (len(words) - 1)
    metrics = {"mean_words": mean, "mean_words_se": (var / len(words)) ** 0.5, "answers": answers}
    write_json(ctx.eval_dir(t, NAME) / "results.json", {
        "benchmark": NAME, "version": "1", "metrics": metrics,
        "provenance": {**ctx.provenance(t), "n_examples": len(prompts), "decoding": "greedy"}})
    return {"mean_words": mean}


register(Benchmark(NAME, "Answer words", (Metric("mean_words", "mean_words_se", "answer words (mean)"),),
                   stage=run_stage))
