"""``harness eval open_llm``: the Open LLM Leaderboard (v1 or v2) through lm-eval."""

from __future__ import annotations

import argparse
import sys

from harness.benchmarks import open_llm
from harness.commands import print_metrics
from harness.commands.eval import open_under_test, target

HELP = "the Open LLM Leaderboard v1 or v2 through lm-evaluation-harness"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", choices=["v1", "v2"], default="v1", help="leaderboard version")
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                   help="tasks to run, space- or comma-separated (v1: arc_challenge hellaswag mmlu "
                        "truthfulqa_mc2 winogrande gsm8k; v2: ifeval bbh math_lvl5 gpqa musr mmlu_pro; "
                        "default all)")
    p.add_argument("--chat-template", action="store_true",
                   help="format prompts with the model's chat template (recorded)")
    p.add_argument("--limit", type=int, default=None, help="examples per (sub)task (in the protocol)")


def run(args: argparse.Namespace) -> int:
    if args.tasks:  # lm-eval's own form, --tasks arc_challenge,gsm8k, too
        args.tasks = [t for arg in args.tasks for t in arg.split(",") if t]
    open_llm.selected_tasks(args.tasks, args.version)  # before loading the model
    t = target(args)
    model = open_under_test(args, t)
    try:
        result = open_llm.evaluate(
            model, t.out, limit=args.limit, tasks=args.tasks, batch_size=args.batch_size,
            version=args.version, apply_chat_template=args.chat_template,
            provenance={"model": t.path, "dtype": args.dtype, "generator": model.provenance()})
        print_metrics({k: v for k, v in result["metrics"].items() if k != "tasks"}, args.json)
    finally:
        model.close()
    print(f"results: {t.out / 'results.json'}", file=sys.stderr)
    return 0
