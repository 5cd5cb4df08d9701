"""Benchmarks: one registry, in the spirit of lm-evaluation-harness's task registry.

A benchmark is one module that registers a :class:`Benchmark`: its name (the results folder
``iter-<t>/eval/<name>/`` and the run stage ``eval/<name>``), its headline metrics, the protocol
of its published numbers, why a metric can have no value, and, when it runs inside ``harness
run``, its pre-flight check and its stage. Results, report, leaderboard and gate loop over the
registry; none of them names a benchmark. A plug-in (``SPPO_PLUGINS``) registers its own.

A benchmark writes ``results.json``: ``{benchmark, version, metrics, provenance}``, and keeps its
intermediate files (answers, judgments) beside it for resumption.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from harness.config import validate_section
from harness.errors import ConfigError

# The built-in benchmarks' modules, imported when the registry is first read; their order is the
# order of stages in a run and of columns in tables.
BUILTIN = ("harness.evaluate", "harness.benchmarks.alpaca_eval", "harness.benchmarks.mt_bench",
           "harness.benchmarks.arena_hard", "harness.benchmarks.open_llm")


@dataclass(frozen=True)
class Metric:
    name: str  # key in results.json's metrics
    se: str | None  # the key of its standard error, if it has one
    label: str  # column heading
    base_value: float | None = None  # the base model's value by definition (a win rate against it)


class StageContext(Protocol):
    """What a benchmark's stage gets from the run (:class:`harness.pipeline.SPPORun`)."""

    config: Any  # the run's RunConfig
    yes: bool  # paid judges accepted (--yes)
    device: str

    def policy_path(self, t: int) -> str: ...

    def model_name(self, t: int) -> str: ...

    def model(self, t: int) -> Any: ...  # the model under test, loaded once per checkpoint

    def release(self) -> None: ...  # free the model under test

    def ranker(self) -> Any: ...  # the run's ranker

    def eval_dir(self, t: int, benchmark: str) -> Path: ...

    def sampling(self, override: Any = None) -> Any: ...  # one sample per prompt, the run's decoding

    def provenance(self, t: int) -> dict[str, Any]: ...  # what every result records of the model


def _no_note(metrics: dict[str, Any], metric: str, version: str) -> str | None:
    return None


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    metrics: tuple[Metric, ...]
    # why ``metric`` has no value (or is not the full measurement), from the result's metrics
    note: Callable[[dict[str, Any], str, str], str | None] = _no_note
    # published numbers (leaderboards/published_sppo.csv): (its benchmark, its metric) -> metric,
    # and the version and protocol fields they were measured under, given the published row
    published_metrics: dict[tuple[str, str], str] = field(default_factory=dict)
    published_protocol: Callable[[dict[str, str]], tuple[str, dict[str, Any]]] | None = None
    # inside ``harness run``: a check before any work, and the stage of iteration t (0: the base)
    preflight: Callable[[Any], None] | None = None
    stage: Callable[[StageContext, int], dict[str, Any]] | None = None
    # a scoring the official tool fits over every model at once: refit(runs, cells) -> cells,
    # applied by ``harness leaderboard`` to the cells of all the runs it shows
    refit: Callable[[list[Path], list[Any]], list[Any]] | None = None
    # ``harness eval <name>``: a module with HELP, add_arguments(parser) and run(args) -> int
    cli: str | None = None
    # its settings, ``evaluation.<name>`` in a run config (a harness.config.Section)
    config: type[BaseModel] | None = None

    def label(self, metric: str) -> str:
        return next((m.label for m in self.metrics if m.name == metric), f"{self.name} {metric}")


_REGISTRY: dict[str, tuple[int, Benchmark]] = {}  # name -> (place, benchmark)


def register(benchmark: Benchmark) -> Benchmark:
    """Add ``benchmark`` to the registry (a name registered twice is refused). A built-in takes
    its module's place in :data:`BUILTIN`, whatever the import order; a plug-in comes after."""
    if benchmark.name in _REGISTRY and _REGISTRY[benchmark.name][1] is not benchmark:
        raise ConfigError(f"benchmark {benchmark.name!r} is registered twice")
    module = sys._getframe(1).f_globals.get("__name__", "")
    place = BUILTIN.index(module) if module in BUILTIN else len(BUILTIN)
    _REGISTRY[benchmark.name] = (place, benchmark)
    return benchmark


def registry() -> dict[str, Benchmark]:
    """Every registered benchmark by name, built-ins first, in run and table order."""
    for module in BUILTIN:
        importlib.import_module(module)
    ordered = sorted(_REGISTRY.values(), key=lambda entry: entry[0])  # stable: registration order
    return {b.name: b for _, b in ordered}


def get(name: str) -> Benchmark | None:
    return registry().get(name)


def runnable(names: list[str]) -> list[Benchmark]:
    """The benchmarks with a stage that a run's ``evaluation.benchmarks`` names, in registry
    order; an unknown name is refused."""
    known = registry()
    if unknown := [n for n in names if n not in known]:
        raise ConfigError(f"evaluation.benchmarks: unknown benchmark(s) {unknown}; choose from "
                          f"{list(known)}")
    return [b for b in known.values() if b.name in names and b.stage is not None]


def settings(config: Any, name: str) -> Any:
    """Benchmark ``name``'s settings in the run config ``config``: ``evaluation.<name>`` validated
    by the model the benchmark registers (its defaults where the config says nothing)."""
    b = get(name)
    if b is None or b.config is None:
        raise ConfigError(f"evaluation.{name}: no registered benchmark {name!r} has settings")
    return validate_section(b.config, config.evaluation.section(name), f"evaluation.{name}")


def check_settings(config: Any) -> None:
    """Every ``evaluation.<name>`` section of ``config`` belongs to a registered benchmark with
    settings and is valid (whether or not ``evaluation.benchmarks`` runs it)."""
    with_settings = [n for n, b in registry().items() if b.config is not None]
    for name in config.evaluation.model_extra or {}:
        if name not in with_settings:
            raise ConfigError(f"evaluation.{name}: unknown key: no registered benchmark of that name "
                              f"has settings (those that do: {', '.join(with_settings)})")
        settings(config, name)


def config_snapshot(config: Any) -> dict[str, Any]:
    """``config`` as a run stores it (``run.json``): every registered benchmark's settings in
    full, defaults included, so a resumed run compares like with like."""
    snapshot = config.model_dump(mode="json")
    snapshot["evaluation"] = {"benchmarks": list(config.evaluation.benchmarks), **{
        n: settings(config, n).model_dump(mode="json") for n, b in registry().items() if b.config}}
    return snapshot
