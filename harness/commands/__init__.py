"""The CLI's commands, one module each (``run``, ``eval`` with one module per benchmark,
``reporting``: leaderboard, check and card, ``agreement``), and what they share: the help
formatter, the common flags, and how results are printed."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel


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


def add_config_flags(p: argparse.ArgumentParser, model: type[BaseModel], section: str,
                     names: Iterable[str] | None = None, unset: bool = False, prefix: str = "") -> None:
    """One flag per key of a config model (``names``, default all): type, choices, default and
    help come from the model's field, so a flag never drifts from the config key it mirrors. With
    ``unset`` a flag left out is None (the config's value stands) and a boolean gets --no-<flag>."""
    for name in names or model.model_fields:
        field = model.model_fields[name]
        flag = "--" + name.replace("_", "-")
        ann, args = field.annotation, get_args(field.annotation)
        default = None if unset else field.default
        what = f"{prefix}{field.description or name.replace('_', ' ')}"
        if not unset:  # (the help formatter adds the default)
            help_ = f"{what} (config key {section}.{name})"
        else:  # (%(default).0s prints nothing: an unset flag's default is the config's)
            also = f"; {field.default} where it sets none" if field.default is not None else ""
            help_ = f"{what} (default: the config's {section}.{name}{also})%(default).0s"
        if ann is bool:
            action = argparse.BooleanOptionalAction if unset else "store_true"
            p.add_argument(flag, action=action, default=default, help=help_)
        elif get_origin(ann) is Literal:
            p.add_argument(flag, choices=list(args), default=default, help=help_)
        else:
            kind = next(t for t in (int, float, str) if ann is t or t in args)
            p.add_argument(flag, type=kind, default=default, help=help_,
                           **({"metavar": "N"} if kind in (int, float) else {}))


def add_dtype_flag(p: argparse.ArgumentParser) -> None:
    """--dtype, ``auto`` resolved on this machine as a config's dtype is (harness/precision.py)."""
    from harness.config import DTYPE_HELP
    from harness.precision import DTYPE_NAMES, resolve_dtype

    def dtype(value: str) -> str:
        if value not in DTYPE_NAMES:
            choices = ", ".join(DTYPE_NAMES)
            raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from {choices})")
        return resolve_dtype(value)

    p.add_argument("--dtype", type=dtype, default="auto", metavar="{" + ",".join(DTYPE_NAMES) + "}",
                   help=f"{DTYPE_HELP} (default: auto)")


def add_generator_flags(p: argparse.ArgumentParser) -> None:
    """--generator, and one flag per vLLM engine setting (vLLM's own flag names), from the config."""
    from harness.config import VLLMConfig

    p.add_argument("--generator", default="auto", choices=["auto", "transformers", "vllm"],
                   help="backend of the model under test; auto = vllm when installed with a GPU, "
                        "else transformers")
    add_config_flags(p, VLLMConfig, "vllm", unset=True, prefix="vLLM: ")


def flags_given(args: argparse.Namespace, model: type[BaseModel],
                names: Iterable[str] | None = None) -> dict[str, Any]:
    """The keys of ``model`` (``names``, default all) set by ``unset`` flags of
    :func:`add_config_flags`: the overrides of that config section."""
    return {k: getattr(args, k) for k in names or model.model_fields if getattr(args, k) is not None}


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
