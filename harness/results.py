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
from harness.errors import DataError

# benchmark -> [(metric, its standard-error field, label)]; higher is better for all of them.
HEADLINE: dict[str, list[tuple[str, str | None, str]]] = {
    "win_rate_vs_base": [("win_rate", "standard_error", "win rate vs base (%)")],
    "alpaca_eval": [
        ("length_controlled_winrate", "lc_standard_error", "AlpacaEval 2.0 LC (%)"),
        ("win_rate", "standard_error", "AlpacaEval 2.0 WR (%)"),
    ],
    "mt_bench": [
        ("score", "standard_error", "MT-Bench (1-10)"),
        ("turn_1", None, "MT-Bench turn 1"),
        ("turn_2", None, "MT-Bench turn 2"),
    ],
    "arena_hard": [("score", "standard_error", "Arena-Hard (%)")],
    "open_llm": [
        ("average", None, "Open LLM v1 avg (%)"),
        ("arc_challenge", "arc_challenge_stderr", "ARC-C 25-shot (%)"),
        ("hellaswag", "hellaswag_stderr", "HellaSwag 10-shot (%)"),
        ("mmlu", "mmlu_stderr", "MMLU 5-shot (%)"),
        ("truthfulqa_mc2", "truthfulqa_mc2_stderr", "TruthfulQA mc2 (%)"),
        ("winogrande", "winogrande_stderr", "Winogrande 5-shot (%)"),
        ("gsm8k", "gsm8k_stderr", "GSM8K 5-shot (%)"),
    ],
    "open_llm_v2": [
        ("average", None, "Open LLM v2 avg (normalised)"),
        ("ifeval", None, "IFEval (strict, %)"),
        ("bbh", None, "BBH (normalised)"),
        ("math_lvl5", None, "MATH lvl 5 (%)"),
        ("gpqa", None, "GPQA (normalised)"),
        ("musr", None, "MuSR (normalised)"),
        ("mmlu_pro", None, "MMLU-Pro (normalised)"),
    ],
}
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
    bench = record.get("benchmark")
    if bench not in HEADLINE:
        return []
    prov = record.get("provenance", {})
    key = protocol_key(bench, str(record.get("version")), prov)
    metrics = record.get("metrics", {})
    out = []
    for metric, se_field, _ in HEADLINE[bench]:
        value = metrics.get(metric)
        note = (metrics.get("lc_unavailable") if metric == "length_controlled_winrate"
                else (metrics.get("tasks", {}).get(metric) or {}).get("unavailable")
                if bench in ("open_llm", "open_llm_v2") else None)
        if bench in ("open_llm", "open_llm_v2") and metric == "average" and metrics.get("average_is_partial"):
            note = f"partial average: not all six {record.get('version')} tasks ran"
        if value is None and bench == "arena_hard":
            note = f"no valid verdict: {metrics.get('invalid_games')} games without a usable label"
        if value is None and bench == "mt_bench":
            note = f"no parseable rating: {metrics.get('parse_failures')} judgments without [[x]]"
        out.append(Cell(run, iteration, model, bench, metric,
                        None if value is None else float(value),
                        None if se_field is None or metrics.get(se_field) is None
                        else float(metrics[se_field]),
                        key, prov, note))
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
    for m, _, text in HEADLINE.get(benchmark, []):
        if m == metric:
            return text
    return f"{benchmark} {metric}"
