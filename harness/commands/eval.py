"""``harness eval <benchmark>``: one model (or published judgments) on one benchmark, outside a run.

Each registered benchmark with a ``cli`` module gets a sub-command: the module adds its own flags
(``add_arguments``) and runs it (``run``); the flags every benchmark shares, and loading the model
under test, are here.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.commands import (
    HelpFormatter,
    add_dtype_flag,
    add_environment_flags,
    add_generator_flags,
    apply_environment,
)
from harness.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    from harness.benchmarks import registry

    p = sub.add_parser("eval", help="evaluate one model (or re-score published judgments) on a benchmark",
                       description="Evaluate a checkpoint or hub model on a benchmark, outside any run.",
                       formatter_class=HelpFormatter)
    benchmarks = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for b in registry().values():
        if b.cli is None:
            continue
        module = importlib.import_module(b.cli)
        bp = benchmarks.add_parser(b.name, help=module.HELP, description=module.HELP,
                                   formatter_class=HelpFormatter)
        module.add_arguments(bp)
        add_model_flags(bp)
        bp.set_defaults(eval_cli=module)


def run(args: argparse.Namespace) -> int:
    apply_environment(args)
    return args.eval_cli.run(args)


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """What every benchmark's evaluation shares: the model, where results go, how it runs."""
    p.add_argument("--model", help="checkpoint directory, hub id, embedded:smollm2-135m, or a base "
                                   "config's name for its model (re-scoring published files: the "
                                   "model name to report)")
    p.add_argument("--name", default=None, help="model name in outputs (default: from --model)")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: evals/<name>/<benchmark>)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--yes", action="store_true", help="accept a paid judge's estimated cost")
    p.add_argument("--seed", type=int, default=0)
    add_dtype_flag(p)
    p.add_argument("--batch-size", type=int, default=16, help="generation batch size")
    p.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    add_generator_flags(p)
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow the model's own code from the hub (off unless asked)")
    add_environment_flags(p)


@dataclass(frozen=True)
class Target:
    """The model to evaluate and where its results go."""

    name: str
    path: str
    out: Path
    device: str
    vllm: Any  # VLLMConfig


def target(args: argparse.Namespace) -> Target:
    """``--model`` resolved (a bad name, backend or vLLM setting refused before any work)."""
    import torch
    from pydantic import ValidationError

    from harness.commands import flags_given
    from harness.config import SAFE_NAME, VLLMConfig, format_validation_error
    from harness.models import resolve_source
    from harness.under_test import choose_backend

    if not args.model:
        raise ConfigError("give --model (or a published file to re-score, see --help)")
    name = args.name or Path(args.model.split(":")[-1]).name
    if not SAFE_NAME.match(name):  # it names files and folders: no path traversal
        raise ConfigError(f"--name {name!r} is not a safe name (letters, digits, '.', '_', '-')")
    path = resolve_source(_base_model(args.model))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    choose_backend(args.generator)  # a missing vLLM is named before any work
    try:
        vllm = VLLMConfig(**flags_given(args, VLLMConfig))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "vllm flags")) from None
    return Target(name, path, args.out or Path("evals") / name / args.benchmark, device, vllm)


def _base_model(model: str) -> str:
    """A base config's name (``smollm2-135m``, ``mistral-7b``) stands for its ``model.source``
    unless a directory of that name exists."""
    from harness.config import MODEL_CONFIG_DIR, SAFE_NAME, load_config

    if Path(model).exists() or not SAFE_NAME.match(model) or \
            not (MODEL_CONFIG_DIR / f"{model}.yaml").is_file():
        return model
    source = load_config(model).model.source
    print(f"--model {model}: the base config's model, {source}", file=sys.stderr)
    return source


def open_under_test(args: argparse.Namespace, t: Target) -> Any:
    from harness.under_test import open_model

    return open_model(t.path, args.generator, dtype=args.dtype, device=t.device, batch_size=args.batch_size,
                      trust_remote_code=args.trust_remote_code, vllm=t.vllm, seed=args.seed,
                      progress=not args.no_progress)


class LazyChat:
    """The model under test answering chat requests, loaded on the first chunk to answer (a dry
    run, or one whose answers are all saved, loads nothing); :meth:`close` frees it."""

    def __init__(self, args: argparse.Namespace, t: Target) -> None:
        self.args, self.target, self.model = args, t, None

    def __call__(self, requests: list[Any]) -> dict[str, str]:
        if self.model is None:
            self.model = open_under_test(self.args, self.target)
        return {rid: j.text for rid, j in self.model.chat(requests).judgments.items()}

    def close(self) -> None:
        if self.model is not None:
            self.model.close()
            self.model = None


def print_judged(result: dict[str, Any], out: Path, as_json: bool) -> None:
    """A judged benchmark's metrics, per-category ones flattened."""
    import sys

    from harness.commands import print_metrics

    metrics = dict(result["metrics"])
    categories = metrics.pop("categories", {})
    print_metrics({**metrics, **{f"category/{k}": v for k, v in categories.items()}}, as_json)
    print(f"results: {out / 'results.json'}", file=sys.stderr)


def run_judged(args: argparse.Namespace, judge: str,
               evaluate: Callable[[Target, LazyChat], dict[str, Any]]) -> int:
    """A judged benchmark (MT-Bench, Arena-Hard): the judge checked before the model is loaded
    (a dry run needs no key), ``evaluate(target, chat)`` run, its metrics printed."""
    from harness.judges import check_judge, load_judge_config

    t = target(args)
    (load_judge_config if args.dry_run else check_judge)(judge)
    chat = LazyChat(args, t)
    try:
        result = evaluate(t, chat)
    finally:
        chat.close()
    if not args.dry_run:
        print_judged(result, t.out, args.json)
    return 0


def existing_files(paths: list[Path], folders: bool = False) -> list[Path]:
    for f in paths:
        if not (f.is_file() or (folders and f.is_dir())):
            raise ConfigError(f"--from-judgments {f}: no such file")
    return paths
