"""``harness eval mt_bench``: FastChat's single-answer grading (or re-aggregating its files)."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.benchmarks import mt_bench
from harness.commands import add_config_flags, emit_json
from harness.commands.eval import existing_files, run_judged

HELP = "MT-Bench as FastChat's llm_judge grades it: two turns, a judge's 1-10 ratings"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from-judgments", type=Path, nargs="+", metavar="FILE",
                   help="re-aggregate FastChat model_judgment/<judge>_single.jsonl files (published "
                        "ones included); no judge called")
    p.add_argument("--dry-run", action="store_true",
                   help="write the judge requests and the cost estimate; call no judge")
    add_config_flags(p, mt_bench.MTBenchConfig, "evaluation.mt_bench")


def run(args: argparse.Namespace) -> int:
    if args.from_judgments:
        return from_judgments(args)
    return run_judged(args, args.judge, lambda t, chat: mt_bench.evaluate(
        t.name, chat, t.out, judge=args.judge, limit=args.limit, yes=args.yes, dry_run=args.dry_run,
        device=t.device, max_new_tokens=args.max_new_tokens,
        provenance={"model": t.path, "dtype": args.dtype}))


def from_judgments(args: argparse.Namespace) -> int:
    rows = [row for f in existing_files(args.from_judgments) for row in mt_bench.read_judgments(f)]
    per_model = mt_bench.aggregate(rows, args.model)
    if args.json:
        emit_json(per_model)
        return 0
    print(f"MT-Bench (single, {', '.join(map(str, args.from_judgments))}); scores 1-10, "
          "-1 ratings dropped")
    print(f"{'model':40s} {'turn 1':>7s} {'turn 2':>7s} {'average':>8s} {'n':>4s} {'parse fail':>10s}")
    for model, m in sorted(per_model.items(), key=lambda kv: -(kv[1]["score"] or 0)):
        cells = [f"{m[k]:7.4f}" if m[k] is not None else f"{'-':>7s}" for k in ("turn_1", "turn_2")]
        avg = f"{m['score']:8.4f}" if m["score"] is not None else f"{'-':>8s}"
        print(f"{model:40s} {cells[0]} {cells[1]} {avg} {m['n_judgments']:4d} {m['parse_failures']:10d}")
    return 0
