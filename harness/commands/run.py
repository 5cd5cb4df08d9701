"""``harness run``: SPPO iterations on a base model, every checkpoint evaluated."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.commands import (
    HelpFormatter,
    add_config_flags,
    add_environment_flags,
    add_generator_flags,
    apply_environment,
    flags_given,
)
from harness.config import PreferencesConfig, TrainingConfig, VLLMConfig

TRAINING_FLAGS = ["loss", "layout"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run SPPO iterations: generate, rank, probabilities, train, evaluate, report",
        description="Run SPPO iterations on a base model and evaluate every checkpoint.",
        formatter_class=HelpFormatter,
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
                        "stage continues from what it committed")
    p.add_argument("--dry-run", action="store_true",
                   help="run the pre-flight checks and print the plan (every stage with its "
                        "settings; with --resume, which stages are done) without loading a model "
                        "or writing anything")
    p.add_argument("--break-lock", action="store_true",
                   help="take over the run's lock even if another host left it (a lock left by a "
                        "process gone from this host is taken over without it)")
    p.add_argument("--trainer", default=None, help="trainer backend (default: the config's)")
    p.add_argument("--launcher", default="none", choices=["none", "accelerate"],
                   help="train in --num-processes processes through accelerate launch (DDP, or "
                        "DeepSpeed/FSDP with --accelerate-config)")
    p.add_argument("--num-processes", type=int, default=1, metavar="N",
                   help="processes (GPUs) per training with --launcher accelerate")
    p.add_argument("--accelerate-config", default=None, metavar="NAME|FILE",
                   help="accelerate config: a shipped one (zero3, fsdp) or your own file "
                        "(multi-node: num_machines, machine_rank, main_process_ip in it)")
    add_config_flags(p, TrainingConfig, "training", TRAINING_FLAGS, unset=True)
    p.add_argument("--ranker", default=None,
                   help="ranker (default: the config's): pairrm, pairrm:<dir>, reward:<model>, "
                        "judge:<judge>, judge-single:<judge>, smollm-judge, smollm-pmi")
    add_config_flags(p, PreferencesConfig, "preferences", unset=True)
    p.add_argument("--yes", action="store_true",
                   help="accept the estimated cost of a paid judge without asking")
    p.add_argument("--limit", type=int, default=None,
                   help="AlpacaEval on its first N instructions only (smoke runs; marked as such "
                        "in provenance); the other benchmarks' limits are the config's")
    add_generator_flags(p)
    p.add_argument("--seed", type=int, default=0,
                   help="added to every sampling seed; also seeds the training data order")
    p.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    add_environment_flags(p, "benchmark and prompt files")


def run(args: argparse.Namespace) -> int:
    from harness.config import load_config
    from harness.pipeline import RunOptions, SPPORun

    apply_environment(args)
    overrides: dict = {}
    if args.prompts:
        overrides["prompts"] = {"iterations": [args.prompts] * max(args.iters, 1)}
    if args.trainer:
        overrides["trainer"] = args.trainer
    if args.ranker:
        overrides["ranker"] = args.ranker
    for section, model, names in (("preferences", PreferencesConfig, None),
                                  ("training", TrainingConfig, TRAINING_FLAGS),
                                  ("vllm", VLLMConfig, None)):
        if given := flags_given(args, model, names):
            overrides[section] = given
    if args.limit is not None:
        overrides["evaluation"] = {"alpaca_eval": {"limit": args.limit}}
    config = load_config(args.base, args.profile, overrides)
    suffix = "" if args.profile == "full" else f"-{args.profile}"
    out = args.out or Path("runs") / f"{config.name}-sppo{suffix}"
    opts = RunOptions(iters=args.iters, out=out, resume=args.resume, seed=args.seed,
                      generator=args.generator, progress=not args.no_progress,
                      launcher=args.launcher, num_processes=args.num_processes,
                      accelerate_config=args.accelerate_config, yes=args.yes,
                      break_lock=args.break_lock)
    if args.device:
        opts.device = args.device
    if args.dry_run:
        print(SPPORun(config, opts).plan())
        return 0
    SPPORun(config, opts).run()
    print(f"run directory: {out}", file=sys.stderr)
    return 0
