"""``harness eval alpaca_eval``: answer the 805 instructions, annotate, score (or re-score
published annotations)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.benchmarks import alpaca_eval
from harness.commands import add_config_flags, print_metrics
from harness.commands.eval import open_under_test, target
from harness.config import SamplingConfig

HELP = "AlpacaEval 2.0 through alpaca_eval: win rate and length-controlled win rate"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from-annotations", type=Path, metavar="FILE",
                   help="re-score an annotations.json (published ones included) without calling any judge")
    add_config_flags(p, alpaca_eval.AlpacaEvalConfig, "evaluation.alpaca_eval", ["annotator", "limit"])
    p.add_argument("--judge", default=None,
                   help="the model behind --annotator local (default embedded:smollm2-135m)")
    add_config_flags(p, SamplingConfig, "sampling", ["temperature", "top_p", "max_new_tokens"])


def run(args: argparse.Namespace) -> int:
    from harness.artifacts import read_json

    if args.from_annotations:
        files, reason = alpaca_eval.lc_files()
        annotations = read_json(args.from_annotations)
        metrics = alpaca_eval.score(annotations, files, reason)
        position = alpaca_eval.annotations_position(annotations, metrics)
        if position is not None and args.json:
            metrics[alpaca_eval.POSITION_KEY] = position
        print_metrics(metrics, args.json)
        return 0
    alpaca_eval.check_annotator(args.annotator)
    t = target(args)
    from harness.generate import Sampling
    from harness.prompts import Prompt

    model = open_under_test(args, t)
    try:
        sampling = Sampling((args.seed,), args.temperature, args.top_p, args.max_new_tokens)

        def answer(instructions: list[str]) -> list[str]:
            prompts = [Prompt(f"alpaca_eval-{i:03d}", x) for i, x in enumerate(instructions)]
            return [g.responses[0] for g in model.sample(prompts, sampling)]

        result = alpaca_eval.evaluate(t.name, t.path, answer, sampling.as_dict(model.seed_rule), t.out,
                                      annotator=args.annotator, limit=args.limit,
                                      judge=args.judge or "embedded:smollm2-135m", dtype=args.dtype,
                                      provenance={"generator": model.provenance()})
        print_metrics(result["metrics"], args.json)
    finally:
        model.close()
    print(f"results: {t.out / 'results.json'}", file=sys.stderr)
    return 0
