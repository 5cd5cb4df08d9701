"""``python -m harness``: the command-line entry point; each command lives in
:mod:`harness.commands`."""

from __future__ import annotations

import argparse
import contextlib
import sys

from harness.allocator import keep_large_blocks
from harness.commands import JSON_OUT, agreement, reporting
from harness.commands import eval as eval_command
from harness.commands import run as run_command
from harness.errors import HarnessError
from harness.plugins import load_plugins


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness",
        description="sppo-harness: Self-Play Preference Optimization with honest evaluation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_command.add_parser(sub)
    eval_command.add_parser(sub)
    reporting.add_parsers(sub)
    agreement.add_parser(sub)
    return parser


COMMANDS = {"run": run_command.run, "eval": eval_command.run, "agreement": agreement.run,
            **reporting.COMMANDS}


def main(argv: list[str] | None = None) -> int:
    keep_large_blocks()
    try:
        load_plugins()  # before the parser: a plug-in's benchmark gets its `eval` sub-command
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "json", False):
            # stdout carries the JSON and nothing else: whatever is printed meanwhile (libraries
            # that log to stdout, such as DeepSpeed's logger when it is imported) goes to stderr
            JSON_OUT.append(sys.stdout)
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    return COMMANDS[args.command](args)
            finally:
                JSON_OUT.pop()
        return COMMANDS[args.command](args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished stages are kept; continue with --resume", file=sys.stderr)
        return 130
    return 1
