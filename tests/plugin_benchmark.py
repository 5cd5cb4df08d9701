"""A benchmark that is not built in, registered from ``SPPO_PLUGINS=plugin_benchmark``: how many
words the checkpoint writes, greedy, on (up to) three fixed instructions. It touches no harness
file, yet runs as a stage of ``harness run`` with its own settings (``evaluation.answer_words``)
and as ``harness eval answer_words``, and its numbers reach the leaderboard and the gate."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import Field

from harness.artifacts import write_json
from harness.benchmarks import Benchmark, Metric, StageContext, register, settings
from harness.config import Section
from harness.prompts import Prompt

NAME = "answer_words"
INSTRUCTIONS = ("Name a colour.", "Say hello.", "Count to three.")


class AnswerWordsConfig(Section):
    """``evaluation.answer_words``."""

    instructions: int = Field(len(INSTRUCTIONS), ge=2, le=len(INSTRUCTIONS),
                              description="how many of the fixed instructions to answer")


def evaluate(model: Any, sampling: Any, out: Path, provenance: dict[str, Any],
             instructions: int = len(INSTRUCTIONS)) -> dict[str, Any]:
    prompts = [Prompt(f"{NAME}-{i}", x) for i, x in enumerate(INSTRUCTIONS[:instructions])]
    answers = [g.responses[0] for g in model.sample(prompts, replace(sampling, temperature=0.0,
                                                                      do_sample=False))]
    words = [len(a.split()) for a in answers]
    mean = sum(words) / len(words)
    var = sum((w - mean) ** 2 for w in words) / (len(words) - 1)
    metrics = {"mean_words": mean, "mean_words_se": (var / len(words)) ** 0.5, "answers": answers}
    result = {"benchmark": NAME, "version": "1", "metrics": metrics,
              "provenance": {**provenance, "n_examples": len(prompts), "decoding": "greedy"}}
    write_json(out / "results.json", result)
    return result


def run_stage(ctx: StageContext, t: int) -> dict[str, Any]:
    result = evaluate(ctx.model(t), ctx.sampling(), ctx.eval_dir(t, NAME), ctx.provenance(t),
                      settings(ctx.config, NAME).instructions)
    return {"mean_words": result["metrics"]["mean_words"]}


# ``harness eval answer_words``: this module is its own ``cli`` module
HELP = "mean word count of greedy answers to three instructions (a plug-in example)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=8, help="answer length")


def run(args: argparse.Namespace) -> int:
    from harness.commands import print_metrics
    from harness.commands.eval import open_under_test, target
    from harness.generate import Sampling

    t = target(args)
    model = open_under_test(args, t)
    try:
        result = evaluate(model, Sampling((args.seed,), 0.0, 1.0, args.max_new_tokens), t.out,
                          {"model": t.path, "generator": model.provenance()})
    finally:
        model.close()
    print_metrics({k: v for k, v in result["metrics"].items() if k != "answers"}, args.json)
    return 0


register(Benchmark(NAME, "Answer words", (Metric("mean_words", "mean_words_se", "answer words (mean)"),),
                   stage=run_stage, cli=__name__, config=AnswerWordsConfig))
