"""``harness leaderboard``, ``harness check`` (the regression gate) and ``harness card``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.commands import HelpFormatter


def add_parsers(sub: argparse._SubParsersAction) -> None:
    fmt = HelpFormatter
    p = sub.add_parser("leaderboard", help="one comparable table across runs (and published results)",
                       description="Tabulate runs: rows are checkpoints, columns are metrics under one "
                                   "protocol each; numbers measured differently never share a column.",
                       formatter_class=fmt)
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories")
    p.add_argument("--published", action="store_true",
                   help="add published reference rows (leaderboards/published_sppo.csv) with sources")
    p.add_argument("--format", choices=["md", "csv", "html"], default="md")
    p.add_argument("--out", type=Path, default=None,
                   help="write here instead of stdout (html: plots go beside it)")

    p = sub.add_parser("check", help="regression gate: compare a run with a committed baseline",
                       description="Fail (exit 1) when a metric regresses beyond k standard errors of "
                                   "the difference, or when its protocol differs from the baseline's.",
                       formatter_class=fmt)
    p.add_argument("run", type=Path, metavar="RUN", help="run directory")
    p.add_argument("--baseline", type=Path, required=True, help="baseline JSON file")
    p.add_argument("--tolerance", type=float, default=2.0, metavar="K",
                   help="allowed drop, in standard errors of the difference")
    p.add_argument("--report", type=Path, default=None,
                   help="where check.md/check.json go (default: the run directory)")
    p.add_argument("--write-baseline", action="store_true",
                   help="write (refresh) --baseline from RUN instead of checking")

    p = sub.add_parser("card", help="model card + alpaca_eval model config for a checkpoint",
                       formatter_class=fmt)
    p.add_argument("run", type=Path, metavar="RUN", help="run directory")
    p.add_argument("--iter", type=int, required=True, help="iteration whose checkpoint gets the card")


def leaderboard(args: argparse.Namespace) -> int:
    from harness import leaderboard

    out_dir = args.out.parent if args.out else Path("leaderboard")
    text = leaderboard.render(args.runs, args.format, args.published, out_dir)
    if args.out:
        from harness.artifacts import write_text_atomic

        write_text_atomic(args.out, text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def check(args: argparse.Namespace) -> int:
    from harness import gate
    from harness.artifacts import write_json

    if args.write_baseline:
        write_json(args.baseline, gate.make_baseline(args.run))
        print(f"baseline written: {args.baseline}", file=sys.stderr)
        return 0
    ok, report = gate.check(args.run, args.baseline, args.tolerance, args.report)
    sys.stdout.write(report.read_text(encoding="utf-8"))
    return 0 if ok else 1


def card(args: argparse.Namespace) -> int:
    from harness.card import write_card

    print(f"wrote {write_card(args.run, args.iter)}", file=sys.stderr)
    return 0


COMMANDS = {"leaderboard": leaderboard, "check": check, "card": card}
