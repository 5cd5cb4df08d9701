"""Metric cells read from run directories: one value, its uncertainty, and what makes it comparable.

Every ``iter-<t>/eval/<benchmark>/results.json`` yields one :class:`Cell` per headline metric.
Two cells may share a table column, or be compared by the regression gate, only when their
:attr:`Cell.key` is equal: the measurement protocol (benchmark and version, judge, baseline,
number of examples, subset limit, profile). Decoding settings belong to the model being measured,
not the protocol, so they are reported but do not split columns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.artifacts import read_json
from harness.benchmarks import get
from harness.errors import DataError

PROTOCOL_FIELDS = ("judge", "judge_dtype", "annotator", "baseline", "n_examples", "limit", "profile",
                   "prompts", "data", "apply_chat_template", "lm_eval", "tasks")


@dataclass(frozen=True)
class Cell:
    run: str
    iteration: int | None
    model: str
    benchmark: str
    metric: str
    value: float | None
    se: float | None
    key: str  # comparability key: equal keys measure the same way
    provenance: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    note: str | None = None  # e.g. why the value is missing

    @property
    def column(self) -> tuple[str, str]:
        return self.benchmark, self.metric


def protocol_key(benchmark: str, version: str, provenance: dict[str, Any]) -> str:
    proto = {"benchmark": benchmark, "version": version,
             **{k: provenance.get(k) for k in PROTOCOL_FIELDS}}
    return json.dumps(proto, sort_keys=True)


def describe_key(key: str) -> str:
    proto = json.loads(key)
    return "; ".join(f"{k} {v}" for k, v in proto.items() if v is not None)


def cells_from_results(run: str, iteration: int | None, model: str, record: dict[str, Any]) -> list[Cell]:
    bench = get(str(record.get("benchmark")))
    if bench is None:
        return []
    prov = record.get("provenance", {})
    version = str(record.get("version"))
    key = protocol_key(bench.name, version, prov)
    metrics = record.get("metrics", {})
    out = []
    for m in bench.metrics:
        value = metrics.get(m.name)
        se = None if m.se is None or metrics.get(m.se) is None else float(metrics[m.se])
        out.append(Cell(run, iteration, model, bench.name, m.name,
                        None if value is None else float(value), se, key, prov,
                        bench.note(metrics, m.name, version)))
    return out


def run_cells(root: Path) -> list[Cell]:
    """Every headline cell of a run directory, base (iteration 0) first."""
    if not (root / "run.json").is_file():
        raise DataError(f"{root}: not a run directory (no run.json)")
    cells = []
    iters = sorted(int(p.name.split("-", 1)[1]) for p in root.glob("iter-*")
                    if p.name.split("-", 1)[1].isdigit())
    for t in iters:
        model = "base" if t == 0 else f"SPPO Iter{t}"
        for path in sorted((root / f"iter-{t}" / "eval").glob("*/results.json")):
            cells += cells_from_results(root.name, t, model, read_json(path))
    return cells


def label(benchmark: str, metric: str) -> str:
    bench = get(benchmark)
    return bench.label(metric) if bench else f"{benchmark} {metric}"
