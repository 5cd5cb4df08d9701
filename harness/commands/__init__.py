"""The CLI's commands, one module each (``run``, ``eval`` with one module per benchmark,
``reporting``: leaderboard, check and card, ``agreement``), and what they share: the help
formatter, the common flags, and how results are printed."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown once: not where the help already states its default, nor for unset flags."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        return super()._get_help_string(action)


def add_environment_flags(p: argparse.ArgumentParser, what: str = "benchmark files") -> None:
    """--data-dir and --no-progress (see :func:`apply_environment`)."""
    p.add_argument("--data-dir", type=Path, default=None,
                   help=f"local mirror of {what} (env SPPO_DATA_DIR); without it files are fetched "
                        "from their official sources and checked by their checksums")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def apply_environment(args: argparse.Namespace) -> None:
    """--data-dir and --no-progress, shared by every command."""
    if args.data_dir is not None:
        os.environ["SPPO_DATA_DIR"] = str(args.data_dir)
    if os.environ.get("SPPO_DATA_DIR"):  # absolute, so later stages may change directory safely
        os.environ["SPPO_DATA_DIR"] = str(Path(os.environ["SPPO_DATA_DIR"]).resolve())
    if args.no_progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def add_generator_flags(p: argparse.ArgumentParser) -> None:
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


def vllm_overrides(args: argparse.Namespace) -> dict[str, Any]:
    from harness.config import VLLMConfig

    return {k: getattr(args, k) for k in VLLMConfig.model_fields if getattr(args, k) is not None}


JSON_OUT: list[Any] = []  # where --json output goes, while stdout is sent to stderr


def emit_json(value: Any) -> None:
    import json

    print(json.dumps(value), file=JSON_OUT[-1] if JSON_OUT else sys.stdout)


def print_metrics(metrics: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(metrics)
        return
    for k, v in metrics.items():
        print(f"{k:28s} {v:.6g}" if isinstance(v, float) else f"{k:28s} {v}")
