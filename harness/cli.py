"""``python -m harness``: command-line entry point."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness.errors import HarnessError


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run SPPO iterations: generate, rank, probabilities, train, evaluate, report",
        description="Run SPPO iterations on a base model and evaluate every checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--base", required=True,
                   help="base model config: a name in model_configs/ (smollm2-135m, mistral-7b, "
                        "llama-3-8b, gemma-2-9b) or a path to a YAML file")
    p.add_argument("--iters", type=int, default=3, help="number of SPPO iterations")
    p.add_argument("--profile", default="full",
                   help="'full' (the official recipe) or a profile of the config, e.g. 'smoke'")
    p.add_argument("--prompts", metavar="SOURCE", default=None,
                   help="prompt source for all iterations, split disjointly between them: "
                        "'embedded', 'hf:DATASET[:COLUMN]', or a .jsonl/.json/.parquet file "
                        "with a 'prompt' column (default: the config's per-iteration sources)")
    p.add_argument("--out", type=Path, default=None,
                   help="run directory (default: runs/<base>-sppo, or runs/<base>-sppo-<profile>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out: finished stages are skipped, an interrupted "
                        "stage is redone")
    p.add_argument("--trainer", default=None, help="trainer backend (default: the config's)")
    p.add_argument("--loss", default=None,
                   choices=["sppo", "sppo_single", "sppo_hard", "sigmoid", "ipo"],
                   help="preference loss (default: the config's, sppo)")
    p.add_argument("--ranker", default=None, help="ranker (default: the config's)")
    p.add_argument("--generator", default="auto", choices=["auto", "transformers", "vllm"],
                   help="generation backend; auto = vllm when installed with a GPU, else "
                        "transformers")
    p.add_argument("--seed", type=int, default=0,
                   help="added to every sampling seed; also seeds the training data order")
    p.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="local mirror of benchmark and prompt files (env SPPO_DATA_DIR); without "
                        "it files are fetched from their official sources and checked by sha256")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness",
        description="sppo-harness: Self-Play Preference Optimization with honest evaluation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from harness.config import load_config
    from harness.pipeline import RunOptions, SPPORun

    if args.data_dir is not None:
        os.environ["SPPO_DATA_DIR"] = str(args.data_dir)
    if args.no_progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    overrides: dict = {}
    if args.prompts:
        overrides["prompts"] = {"iterations": [args.prompts] * max(args.iters, 1)}
    if args.trainer:
        overrides["trainer"] = args.trainer
    if args.ranker:
        overrides["ranker"] = args.ranker
    if args.loss:
        overrides["training"] = {"loss": args.loss}
    config = load_config(args.base, args.profile, overrides)
    suffix = "" if args.profile == "full" else f"-{args.profile}"
    out = args.out or Path("runs") / f"{config.name}-sppo{suffix}"
    opts = RunOptions(iters=args.iters, out=out, resume=args.resume, seed=args.seed,
                      generator=args.generator, progress=not args.no_progress)
    if args.device:
        opts.device = args.device
    SPPORun(config, opts).run()
    print(f"run directory: {out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _cmd_run(args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished stages are kept; continue with --resume", file=sys.stderr)
        return 130
    return 1
