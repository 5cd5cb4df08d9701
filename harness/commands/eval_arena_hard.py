"""``harness eval arena_hard``: Arena-Hard-Auto v0.1 or v2.0 (or re-scoring published judgments,
of one judge or, as the 2025 show_result.py, of several)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.benchmarks import arena_hard
from harness.commands import add_config_flags, emit_json
from harness.commands.eval import existing_files, run_judged
from harness.errors import ConfigError

HELP = "Arena-Hard-Auto v0.1 (the SPPO paper's) or v2.0: a judge's verdicts against the baseline"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_flags(p, arena_hard.ArenaHardConfig, "evaluation.arena_hard")
    p.add_argument("--from-judgments", type=Path, nargs="+", metavar="FILE",
                   help="re-score arena-hard-auto model_judgment files (2024 or 2025 rows; published "
                        "ones included); no judge called")
    p.add_argument("--judge-names", nargs="+", default=None, metavar="JUDGE",
                   help="with --from-judgments (files or model_judgment/<judge> folders) and --version "
                        "v2.0: pool these judges' judgments as the official show_result.py "
                        "--judge-names (battles concatenated, one fit and bootstrap; with "
                        "--style-control one style-controlled fit); the version names the judges")
    p.add_argument("--dry-run", action="store_true",
                   help="write the first-attempt judge requests and the cost estimate; call no judge")


def run(args: argparse.Namespace) -> int:
    if args.judge_names and not args.from_judgments:
        raise ConfigError("--judge-names is for arena_hard --from-judgments")
    if args.from_judgments:
        existing_files(args.from_judgments, folders=bool(args.judge_names))
        return from_judgments(args)
    judge = args.judge or arena_hard.version(args.version).judge
    return run_judged(args, judge, lambda t, chat: arena_hard.evaluate(
        t.name, chat, t.out, bench_version=args.version, judge=judge, limit=args.limit,
        max_new_tokens=args.max_new_tokens, style_control=args.style_control, yes=args.yes,
        dry_run=args.dry_run, device=t.device, provenance={"model": t.path, "dtype": args.dtype}))


def from_judgments(args: argparse.Namespace) -> int:
    if args.judge_names:
        return judges(args)
    if args.style_control:
        raise ConfigError("--style-control needs the answers: evaluate with --model instead")
    rows = [row for f in args.from_judgments for row in arena_hard.read_judgments(f)]
    per_model = _only(arena_hard.score(rows, args.version), args.model)
    if args.json:
        emit_json(per_model)
        return 0
    v = arena_hard.version(args.version)
    print(f"Arena-Hard {args.version} ({v.category} vs {v.baseline}); score = win rate vs the baseline "
          f"(%), CI {v.ci[0]:g}-{v.ci[1]:g} percentiles of 100 bootstraps")
    _table(per_model, "questions")
    return 0


def judges(args: argparse.Namespace) -> int:
    """``--judge-names``: several judges' judgments pooled as the official show_result.py."""
    control = arena_hard.control_name(True) if args.style_control else None
    result = arena_hard.score_judges(args.from_judgments, args.version, args.judge_names, control)
    result["models"] = _only(result["models"], args.model)
    if args.json:
        emit_json(result)
        return 0
    print(f"Arena-Hard {result['version']}; score = win rate vs the baseline (%)")
    _table(result["models"], "judgments")
    return 0


def _only(per_model: dict[str, Any], model: str | None) -> dict[str, Any]:
    if not model:
        return per_model
    if model not in per_model:
        raise ConfigError(f"no judgments of model {model!r} (found: {', '.join(per_model)})")
    return {model: per_model[model]}


def _table(per_model: dict[str, Any], counted: str) -> None:
    print(f"{'model':40s} {'score':>6s} {'CI':>16s} {counted:>9s} {'invalid games':>13s}")
    for model, m in sorted(per_model.items(), key=lambda kv: -(kv[1]["score"] or -1)):
        ci = (f"(-{m['score'] - m['ci_lower']:.1f}, +{m['ci_upper'] - m['score']:.1f})"
              if m["score"] is not None and m["ci_lower"] is not None else "-")
        cells = f"{m['score']:6.1f} {ci:>16s}" if m["score"] is not None else f"{'-':>6s} {'-':>16s}"
        print(f"{model:40s} {cells} {m['n_questions']:9d} {m['invalid_games']:13d}")
