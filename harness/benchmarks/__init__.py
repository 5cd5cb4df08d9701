"""Benchmarks run on every checkpoint, each through its official tool: ``alpaca_eval``.

A benchmark writes ``iter-<t>/eval/<name>/results.json``: ``{benchmark, version, metrics,
provenance}``, and keeps its intermediate files (answers, judgments) beside it for resumption.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any


def _arena_hard_style_pool(runs: list[Path], cells: list[Any]) -> list[Any]:
    from harness.benchmarks.arena_hard import pool_style_control

    return pool_style_control(runs, cells)


# Scorings the official tools fit over every model at once: ``refit(runs, cells) -> cells``,
# applied by ``harness leaderboard`` to the cells of all the runs it shows.
CROSS_RUN_REFITS: list[Callable[[list[Path], list[Any]], list[Any]]] = [_arena_hard_style_pool]
