"""``python -m harness``: command-line entry point."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from harness.config import TrainingConfig
from harness.errors import ConfigError, HarnessError
from harness.plugins import load_plugins

if TYPE_CHECKING:
    from harness.config import VLLMConfig


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown once: not where the help already states its default, nor for unset flags."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        return super()._get_help_string(action)


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run SPPO iterations: generate, rank, probabilities, train, evaluate, report",
        description="Run SPPO iterations on a base model and evaluate every checkpoint.",
        formatter_class=_HelpFormatter,
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
    p.add_argument("--loss", default=None,
                   choices=get_args(TrainingConfig.model_fields["loss"].annotation),
                   help="preference loss (default: the config's, sppo)")
    p.add_argument("--ranker", default=None,
                   help="ranker (default: the config's): pairrm, pairrm:<dir>, reward:<model>, "
                        "judge:<judge>, judge-single:<judge>, smollm-judge, smollm-pmi")
    p.add_argument("--probabilities", default=None, choices=["scores", "pairwise"],
                   help="win-probability estimator (default: the config's preferences.probabilities, "
                        "scores): scores = σ(s_i − s_j) of the ranker's scores (official code); "
                        "pairwise = the ranker's own pairwise comparisons, symmetrised (the paper's; "
                        "pairrm and judge: rankers only)")
    p.add_argument("--ties", default=None, choices=["first", "distinct"],
                   help="tie rule for chosen/rejected (default: the config's preferences.ties, "
                        "distinct): first = numpy argmax/argmin as upstream (all equal: chosen = "
                        "rejected); distinct = the last lowest is rejected")
    p.add_argument("--yes", action="store_true",
                   help="accept the estimated cost of a paid judge without asking")
    p.add_argument("--limit", type=int, default=None,
                   help="AlpacaEval on its first N instructions only (smoke runs; marked as such "
                        "in provenance); the other benchmarks' limits are the config's")
    _add_generator_flags(p)
    p.add_argument("--seed", type=int, default=0,
                   help="added to every sampling seed; also seeds the training data order")
    p.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="local mirror of benchmark and prompt files (env SPPO_DATA_DIR); without "
                        "it files are fetched from their official sources and checked by sha256")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_generator_flags(p: argparse.ArgumentParser) -> None:
    """--generator, and one flag per vLLM engine setting (vLLM's own flag names), from the config."""
    from harness.config import VLLMConfig

    p.add_argument("--generator", default="auto", choices=["auto", "transformers", "vllm"],
                   help="backend of the model under test; auto = vllm when installed with a GPU, "
                        "else transformers")
    for name, field in VLLMConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        # (%(default).0s prints nothing: the default shown is the config's, not argparse's None)
        help_ = f"vLLM: {field.description} (config key vllm.{name}, default {field.default})%(default).0s"
        if field.annotation is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_)
        else:
            kind = float if "float" in str(field.annotation) else int
            p.add_argument(flag, type=kind, default=None, metavar="N", help=help_)


def _vllm_overrides(args: argparse.Namespace) -> dict:
    from harness.config import VLLMConfig

    return {k: getattr(args, k) for k in VLLMConfig.model_fields if getattr(args, k) is not None}


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate one model (or re-score published judgments) on a benchmark",
        description="Evaluate a checkpoint or hub model on a benchmark, outside any run.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("benchmark", choices=["alpaca_eval", "mt_bench", "arena_hard", "open_llm"],
                   help="benchmark to run")
    p.add_argument("--model", help="checkpoint directory, hub id, or embedded:smollm2-135m "
                                   "(with --from-judgments: the model name to report)")
    p.add_argument("--from-annotations", type=Path, metavar="FILE",
                   help="alpaca_eval: re-score an annotations.json (published ones included) "
                        "without calling any judge")
    p.add_argument("--from-judgments", type=Path, nargs="+", metavar="FILE",
                   help="mt_bench: re-aggregate FastChat model_judgment/<judge>_single.jsonl; "
                        "arena_hard: re-score arena-hard-auto model_judgment files (2024 or 2025 "
                        "rows); published ones included, no judge called")
    p.add_argument("--version", choices=["v1", "v2", "v0.1", "v2.0"], default=None,
                   help="open_llm: leaderboard version v1 (default) or v2; arena_hard: v0.1 "
                        "(default, the SPPO paper's) or v2.0")
    p.add_argument("--judge-names", nargs="+", default=None, metavar="JUDGE",
                   help="arena_hard only, with --from-judgments (files or model_judgment/<judge> "
                        "folders) and --version v2.0: pool these judges' judgments as the official "
                        "show_result.py --judge-names (battles concatenated, one fit and bootstrap; "
                        "with --style-control one style-controlled fit); the version names the judges")
    p.add_argument("--style-control", action="store_true",
                   help="arena_hard: control for answer length and markdown (reported as its own "
                        "version)")
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                   help="open_llm: tasks to run, space- or comma-separated (v1: arc_challenge "
                        "hellaswag mmlu truthfulqa_mc2 winogrande gsm8k; v2: ifeval bbh math_lvl5 "
                        "gpqa musr mmlu_pro; default all)")
    p.add_argument("--chat-template", action="store_true",
                   help="open_llm: format prompts with the model's chat template (recorded)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--annotator", default="weighted_alpaca_eval_gpt4_turbo",
                   help="alpaca_eval: annotator config, or 'local' (in-process judge)")
    p.add_argument("--judge", default=None,
                   help="alpaca_eval: the model behind --annotator local (default "
                        "embedded:smollm2-135m); mt_bench: a judge config (judge_configs/), YAML "
                        "or local[:<model>] (default: the official judge: mt_bench gpt-4, "
                        "arena_hard v0.1 gpt-4-1106-preview, v2.0 gpt-4.1)")
    p.add_argument("--dry-run", action="store_true",
                   help="mt_bench, arena_hard: write the judge requests and the cost estimate; "
                        "call no judge")
    p.add_argument("--yes", action="store_true", help="accept a paid judge's estimated cost")
    p.add_argument("--limit", type=int, default=None,
                   help="first N instructions (alpaca_eval), questions per category (mt_bench), "
                        "questions (arena_hard) or examples per (sub)task (open_llm)")
    p.add_argument("--name", default=None, help="model name in outputs (default: from --model)")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: evals/<name>/<benchmark>)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="answer length (default 2048; mt_bench: 1024, as FastChat; arena_hard: "
                        "4096)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--batch-size", type=int, default=16, help="generation batch size")
    p.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    _add_generator_flags(p)
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow the model's own code from the hub (off unless asked)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="local mirror of benchmark files (env SPPO_DATA_DIR)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_reporting(sub: argparse._SubParsersAction) -> None:
    fmt = _HelpFormatter
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


def _add_agreement(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "agreement", help="how often a ranker or judge agrees with published AlpacaEval preferences",
        description="Score both outputs of each published annotation with the ranker, in the "
                    "published order and swapped; report agreement with the annotator (95%% Wilson "
                    "interval), consistency across orders and position bias.",
        formatter_class=_HelpFormatter)
    p.add_argument("--ranker", required=True, help="any --ranker of `harness run`")
    p.add_argument("--annotations", nargs="+", required=True, metavar="FILE",
                   help="annotation files: paths, or mirrored ones such as "
                        "alpaca_eval/annotations/alpaca-7b.json")
    p.add_argument("--limit", type=int, default=None, help="a seeded sample of N decided pairs")
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit sample")
    p.add_argument("--balanced", action="store_true",
                   help="as many pairs the annotator decided for each side (always picking one "
                        "side then scores 50%%)")
    p.add_argument("--template", default="embedded:smollm2-135m", metavar="MODEL",
                   help="tokenizer whose chat template renders prompts for rankers that use one "
                        "(pairrm)")
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    p.add_argument("--yes", action="store_true", help="accept a paid judge's estimated cost")
    p.add_argument("--out", type=Path, default=None, help="also write the result as JSON here")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="local mirror of benchmark files (env SPPO_DATA_DIR)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _cmd_agreement(args: argparse.Namespace) -> int:
    import torch

    from harness import agreement
    from harness.provenance import package_versions
    from harness.rank import check_ranker, get_ranker

    _apply_common(args)
    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    check_ranker(args.ranker)
    rows = [r for spec in args.annotations for r in agreement.load_annotations(spec)]
    pairs = agreement.labelled_pairs(rows, args.limit, args.seed, args.balanced)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    ranker = get_ranker(args.ranker, device=device, dtype=args.dtype, progress=not args.no_progress,
                        policy_tokenizer=args.template, yes=args.yes)
    result = {"ranker": ranker.name, **agreement.measure(ranker, pairs),
              "annotator": sorted({str(r.get("annotator")) for r in pairs}),
              "annotations": args.annotations, "limit": args.limit, "seed": args.seed,
              "balanced": args.balanced,
              "dtype": args.dtype, "ranker_details": dict(getattr(ranker, "details", {})),
              "packages": package_versions()}
    if args.out:
        from harness.artifacts import write_json

        write_json(args.out, result)
    if args.json:
        _emit_json(result)
    else:
        lo, hi = result["agreement_ci95"]
        print(f"{result['ranker']}: agreement {100 * result['agreement']:.1f}% "
              f"[{100 * lo:.1f}, {100 * hi:.1f}] on n={result['n']} ({', '.join(result['annotator'])}); "
              f"swapped {100 * result['agreement_swapped']:.1f}%, consistency "
              f"{100 * result['consistency']:.1f}%, first position wins "
              f"{100 * result['first_position_wins']:.1f}%; the annotator preferred the second "
              f"output in {100 * result['judge_prefers_output_2']:.1f}% of these pairs")
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
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


def _cmd_check(args: argparse.Namespace) -> int:
    from harness import gate
    from harness.artifacts import write_json

    if args.write_baseline:
        write_json(args.baseline, gate.make_baseline(args.run))
        print(f"baseline written: {args.baseline}", file=sys.stderr)
        return 0
    ok, report = gate.check(args.run, args.baseline, args.tolerance, args.report)
    sys.stdout.write(report.read_text(encoding="utf-8"))
    return 0 if ok else 1


def _cmd_card(args: argparse.Namespace) -> int:
    from harness.card import write_card

    print(f"wrote {write_card(args.run, args.iter)}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness",
        description="sppo-harness: Self-Play Preference Optimization with honest evaluation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_eval(sub)
    _add_reporting(sub)
    _add_agreement(sub)
    return parser


def _apply_common(args: argparse.Namespace) -> None:
    """--data-dir and --no-progress, shared by every subcommand."""
    if args.data_dir is not None:
        os.environ["SPPO_DATA_DIR"] = str(args.data_dir)
    if os.environ.get("SPPO_DATA_DIR"):  # absolute, so later stages may change directory safely
        os.environ["SPPO_DATA_DIR"] = str(Path(os.environ["SPPO_DATA_DIR"]).resolve())
    if args.no_progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def _cmd_run(args: argparse.Namespace) -> int:
    from harness.config import load_config
    from harness.pipeline import RunOptions, SPPORun

    _apply_common(args)
    overrides: dict = {}
    if args.prompts:
        overrides["prompts"] = {"iterations": [args.prompts] * max(args.iters, 1)}
    if args.trainer:
        overrides["trainer"] = args.trainer
    if args.ranker:
        overrides["ranker"] = args.ranker
    preferences = {k: v for k, v in (("probabilities", args.probabilities), ("ties", args.ties)) if v}
    if preferences:
        overrides["preferences"] = preferences
    if args.loss:
        overrides["training"] = {"loss": args.loss}
    if args.limit is not None:
        overrides["evaluation"] = {"alpaca_eval": {"limit": args.limit}}
    if _vllm_overrides(args):
        overrides["vllm"] = _vllm_overrides(args)
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
    SPPORun(config, opts).run()
    print(f"run directory: {out}", file=sys.stderr)
    return 0


_JSON_OUT: list[Any] = []  # where --json output goes, while stdout is sent to stderr


def _emit_json(value: Any) -> None:
    import json

    print(json.dumps(value), file=_JSON_OUT[-1] if _JSON_OUT else sys.stdout)


def _print_metrics(metrics: dict, as_json: bool) -> None:
    if as_json:
        _emit_json(metrics)
        return
    for k, v in metrics.items():
        print(f"{k:28s} {v:.6g}" if isinstance(v, float) else f"{k:28s} {v}")


def _cmd_eval(args: argparse.Namespace) -> int:
    from harness.artifacts import read_json
    from harness.benchmarks import alpaca_eval

    _apply_common(args)
    if args.from_annotations:
        if args.benchmark != "alpaca_eval":
            raise ConfigError("--from-annotations is for alpaca_eval")
        files, reason = alpaca_eval.lc_files()
        annotations = read_json(args.from_annotations)
        metrics = alpaca_eval.score(annotations, files, reason)
        position = alpaca_eval.annotations_position(annotations, metrics)
        if position is not None and args.json:
            metrics[alpaca_eval.POSITION_KEY] = position
        _print_metrics(metrics, args.json)
        return 0
    _check_version(args)
    if args.judge_names and not (args.benchmark == "arena_hard" and args.from_judgments):
        raise ConfigError("--judge-names is for arena_hard --from-judgments")
    if args.from_judgments:
        for f in args.from_judgments:
            if not (f.is_file() or (args.judge_names and f.is_dir())):
                raise ConfigError(f"--from-judgments {f}: no such file")
        if args.benchmark == "arena_hard":
            return _arena_hard_from_judgments(args)
        if args.benchmark != "mt_bench":
            raise ConfigError("--from-judgments is for mt_bench and arena_hard")
        return _mt_bench_from_judgments(args)
    if not args.model:
        raise ConfigError("give --model (or --from-annotations / --from-judgments)")
    import torch
    from pydantic import ValidationError

    from harness.config import VLLMConfig, format_validation_error
    from harness.generate import Sampling
    from harness.models import resolve_source
    from harness.prompts import Prompt
    from harness.under_test import choose_backend, open_model

    if args.benchmark == "open_llm":
        from harness.benchmarks import open_llm

        if args.tasks:  # lm-eval's own form, --tasks arc_challenge,gsm8k, too
            args.tasks = [t for arg in args.tasks for t in arg.split(",") if t]
        open_llm.selected_tasks(args.tasks, args.version or "v1")  # before loading the model
    elif args.benchmark == "alpaca_eval":
        alpaca_eval.check_annotator(args.annotator)
    from harness.config import SAFE_NAME

    name = args.name or Path(args.model.split(":")[-1]).name
    if not SAFE_NAME.match(name):  # it names files and folders: no path traversal
        raise ConfigError(f"--name {name!r} is not a safe name (letters, digits, '.', '_', '-')")
    path = resolve_source(args.model)
    out = args.out or Path("evals") / name / args.benchmark
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    choose_backend(args.generator)  # a missing vLLM is named before any work
    try:
        vllm = VLLMConfig(**_vllm_overrides(args))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "vllm flags")) from None
    if args.benchmark in ("mt_bench", "arena_hard"):
        return _judged_chat_benchmark(args, path, name, out, device, vllm)
    model = open_model(path, args.generator, dtype=args.dtype, device=device, batch_size=args.batch_size,
                       trust_remote_code=args.trust_remote_code, vllm=vllm, seed=args.seed,
                       progress=not args.no_progress)
    try:
        if args.benchmark == "open_llm":
            result = open_llm.evaluate(
                model, out, limit=args.limit, tasks=args.tasks, batch_size=args.batch_size,
                version=args.version or "v1", apply_chat_template=args.chat_template,
                provenance={"model": path, "dtype": args.dtype, "generator": model.provenance()})
            _print_metrics({k: v for k, v in result["metrics"].items() if k != "tasks"}, args.json)
        else:
            sampling = Sampling((args.seed,), args.temperature, args.top_p, args.max_new_tokens or 2048)

            def answer(instructions: list[str]) -> list[str]:
                prompts = [Prompt(f"alpaca_eval-{i:03d}", x) for i, x in enumerate(instructions)]
                return [g.responses[0] for g in model.sample(prompts, sampling)]

            result = alpaca_eval.evaluate(name, path, answer, sampling.as_dict(model.seed_rule), out,
                                          annotator=args.annotator, limit=args.limit,
                                          judge=args.judge or "embedded:smollm2-135m", dtype=args.dtype,
                                          provenance={"generator": model.provenance()})
            _print_metrics(result["metrics"], args.json)
    finally:
        model.close()
    print(f"results: {out / 'results.json'}", file=sys.stderr)
    return 0


def _mt_bench_from_judgments(args: argparse.Namespace) -> int:
    from harness.benchmarks import mt_bench

    rows = [row for f in args.from_judgments for row in mt_bench.read_judgments(f)]
    per_model = mt_bench.aggregate(rows, args.model)
    if args.json:
        _emit_json(per_model)
        return 0
    print(f"MT-Bench (single, {', '.join(map(str, args.from_judgments))}); scores 1-10, "
          "-1 ratings dropped")
    print(f"{'model':40s} {'turn 1':>7s} {'turn 2':>7s} {'average':>8s} {'n':>4s} {'parse fail':>10s}")
    for model, m in sorted(per_model.items(), key=lambda kv: -(kv[1]["score"] or 0)):
        cells = [f"{m[k]:7.4f}" if m[k] is not None else f"{'-':>7s}" for k in ("turn_1", "turn_2")]
        avg = f"{m['score']:8.4f}" if m["score"] is not None else f"{'-':>8s}"
        print(f"{model:40s} {cells[0]} {cells[1]} {avg} {m['n_judgments']:4d} {m['parse_failures']:10d}")
    return 0


def _check_version(args: argparse.Namespace) -> None:
    allowed = {"open_llm": ("v1", "v2"), "arena_hard": ("v0.1", "v2.0")}.get(args.benchmark, ())
    if args.version is not None and args.version not in allowed:
        raise ConfigError(f"--version {args.version} is not a version of {args.benchmark}"
                          + (f" (choose from {', '.join(allowed)})" if allowed else ""))
    if args.style_control and args.benchmark != "arena_hard":
        raise ConfigError("--style-control is for arena_hard")


def _arena_hard_from_judgments(args: argparse.Namespace) -> int:
    from harness.benchmarks import arena_hard

    name = args.version or "v0.1"
    if args.judge_names:
        return _arena_hard_judges(args, name)
    if args.style_control:
        raise ConfigError("--style-control needs the answers: evaluate with --model instead")
    rows = [row for f in args.from_judgments for row in arena_hard.read_judgments(f)]
    per_model = arena_hard.score(rows, name)
    if args.model:
        if args.model not in per_model:
            raise ConfigError(f"no judgments of model {args.model!r} (found: {', '.join(per_model)})")
        per_model = {args.model: per_model[args.model]}
    if args.json:
        _emit_json(per_model)
        return 0
    v = arena_hard.version(name)
    print(f"Arena-Hard {name} ({v.category} vs {v.baseline}); score = win rate vs the baseline (%), "
          f"CI {v.ci[0]:g}-{v.ci[1]:g} percentiles of 100 bootstraps")
    print(f"{'model':40s} {'score':>6s} {'CI':>16s} {'questions':>9s} {'invalid games':>13s}")
    for model, m in sorted(per_model.items(), key=lambda kv: -(kv[1]["score"] or -1)):
        if m["score"] is None:
            cells = f"{'-':>6s} {'-':>16s}"
        else:
            ci = f"(-{m['score'] - m['ci_lower']:.1f}, +{m['ci_upper'] - m['score']:.1f})"
            cells = f"{m['score']:6.1f} {ci:>16s}"
        print(f"{model:40s} {cells} {m['n_questions']:9d} {m['invalid_games']:13d}")
    return 0


def _arena_hard_judges(args: argparse.Namespace, name: str) -> int:
    """``--judge-names``: several judges' judgments pooled as the official show_result.py."""
    from harness.benchmarks import arena_hard

    control = arena_hard.control_name(True) if args.style_control else None
    result = arena_hard.score_judges(args.from_judgments, name, args.judge_names, control)
    if args.model:
        if args.model not in result["models"]:
            raise ConfigError(f"no judgments of model {args.model!r} (found: {', '.join(result['models'])})")
        result["models"] = {args.model: result["models"][args.model]}
    if args.json:
        _emit_json(result)
        return 0
    print(f"Arena-Hard {result['version']}; score = win rate vs the baseline (%)")
    print(f"{'model':40s} {'score':>6s} {'CI':>16s} {'judgments':>9s} {'invalid games':>13s}")
    for model, m in sorted(result["models"].items(), key=lambda kv: -(kv[1]["score"] or -1)):
        ci = f"(-{m['score'] - m['ci_lower']:.1f}, +{m['ci_upper'] - m['score']:.1f})" \
            if m["score"] is not None and m["ci_lower"] is not None else "-"
        cells = f"{m['score']:6.1f} {ci:>16s}" if m["score"] is not None else f"{'-':>6s} {'-':>16s}"
        print(f"{model:40s} {cells} {m['n_questions']:9d} {m['invalid_games']:13d}")
    return 0


def _judged_chat_benchmark(args: argparse.Namespace, path: str, name: str, out: Path, device: str,
                           vllm: VLLMConfig) -> int:
    """MT-Bench or Arena-Hard: the model under test answers chats, a judge grades them."""
    from harness.benchmarks import arena_hard, mt_bench
    from harness.judges import check_judge, load_judge_config
    from harness.under_test import open_model

    arena = args.benchmark == "arena_hard"
    judge = args.judge or (arena_hard.version(args.version or "v0.1").judge if arena
                           else mt_bench.OFFICIAL_JUDGE)
    # refuse a bad judge before loading the model (a dry run needs no key)
    (load_judge_config if args.dry_run else check_judge)(judge)
    loaded: list = []  # loaded on the first chunk to answer (a dry run or a finished one loads none)

    def chat(requests: list) -> dict[str, str]:
        if not loaded:
            loaded.append(open_model(path, args.generator, dtype=args.dtype, device=device,
                                     batch_size=args.batch_size, trust_remote_code=args.trust_remote_code,
                                     vllm=vllm, seed=args.seed, progress=not args.no_progress))
        return {rid: j.text for rid, j in loaded[0].chat(requests).judgments.items()}

    common = {"judge": judge, "limit": args.limit, "yes": args.yes, "dry_run": args.dry_run,
              "device": device, "provenance": {"model": path, "dtype": args.dtype}}
    try:
        if arena:
            result = arena_hard.evaluate(name, chat, out, bench_version=args.version or "v0.1",
                                         max_new_tokens=args.max_new_tokens or arena_hard.MAX_NEW_TOKENS,
                                         style_control=args.style_control, **common)
        else:
            result = mt_bench.evaluate(name, chat, out,
                                       max_new_tokens=args.max_new_tokens or mt_bench.MAX_NEW_TOKENS,
                                       **common)
    finally:
        for model in loaded:
            model.close()
    if not args.dry_run:
        metrics = dict(result["metrics"])
        categories = metrics.pop("categories", {})
        _print_metrics({**metrics, **{f"category/{k}": v for k, v in categories.items()}}, args.json)
        print(f"results: {out / 'results.json'}", file=sys.stderr)
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    load_plugins()
    if args.command == "run":
        return _cmd_run(args)
    if args.command == "eval":
        return _cmd_eval(args)
    commands = {"leaderboard": _cmd_leaderboard, "check": _cmd_check, "card": _cmd_card,
                "agreement": _cmd_agreement}
    return commands[args.command](args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "json", False):
            # stdout carries the JSON and nothing else: whatever is printed meanwhile (libraries
            # that log to stdout, such as DeepSpeed's logger when it is imported) goes to stderr
            _JSON_OUT.append(sys.stdout)
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    return _dispatch(args)
            finally:
                _JSON_OUT.pop()
        return _dispatch(args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished stages are kept; continue with --resume", file=sys.stderr)
        return 130
    return 1
