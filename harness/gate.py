"""``harness check``: the regression gate of a run against a committed baseline file.

Each gated metric passes when ``new ≥ baseline − k·σ``, with σ = √(se_baseline² + se_new²) from
the stored standard errors (higher is better for every headline metric). A metric whose protocol
(judge, baseline, n, limit, profile, benchmark version) differs from the baseline's is not
comparable and fails with the differing fields named: a silent pass would hide a changed judge.
A metric missing from the run fails too.

The report also says whether the run was made on the baseline's type of machine (CPU,
instruction set, threads, GPU, torch, compute dtype): only there does a change that keeps
behaviour give Δ = 0, since CPU kernels round bf16 and float sums differently across instruction
sets and thread counts. That never changes a verdict; the tolerance does. The compute dtype is
such a machine property, not part of the protocol here: under ``dtype: auto`` the machine picks
it (bf16 where it multiplies bf16 natively, else float32), so a judge that differs from the
baseline's only in its dtype is compared, and the row says so. Tables keep the two apart.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

from harness.artifacts import read_json, write_json, write_text_atomic
from harness.errors import DataError
from harness.precision import DTYPE_NAMES
from harness.provenance import git_sha
from harness.results import Cell, label, run_cells

BASELINE_FORMAT = 1


def _id(cell: Cell) -> str:
    return f"iter-{cell.iteration}/{cell.benchmark}/{cell.metric}"


NUMERICS = ("cpu", "cpu_flags", "cpu_capability", "torch_threads", "gpu", "torch", "dtype")


def numerics_machine(run: Path) -> dict[str, Any]:
    """What of the machine a run recorded decides its numbers' last bits (:data:`NUMERICS`;
    ``dtype``: the compute dtype its sampling and evaluation resolved to)."""
    meta = read_json(run / "run.json")
    found = {**meta.get("machine", {}), "torch": meta.get("packages", {}).get("torch"),
             "dtype": meta.get("config", {}).get("sampling", {}).get("dtype")}
    return {k: found.get(k) for k in NUMERICS}


def split_dtype(protocol: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A metric's protocol less its compute dtype (``judge_dtype``, or the dtype segment of a
    local judge's id such as ``local:embedded:smollm2-135m:float32:constrained``), and that dtype."""
    rest = dict(protocol)
    dtype = rest.pop("judge_dtype", None)
    if isinstance(judge := rest.get("judge"), str):
        parts = judge.split(":")
        named = [p for p in parts if p in DTYPE_NAMES]
        rest["judge"] = ":".join(p for p in parts if p not in DTYPE_NAMES)
        dtype = dtype or (named[0] if named else None)
    return rest, dtype


def machine_note(baseline: dict[str, Any], run: Path) -> str:
    """Whether ``run`` was made on the baseline's type of machine, and what that means for Δ."""
    ours = numerics_machine(run)
    theirs = {k: v for k, v in (baseline.get("machine") or {}).items() if v is not None}
    both = [k for k in theirs if ours.get(k) is not None]
    if diff := _differences({k: theirs[k] for k in both}, {k: ours[k] for k in both}):
        return ("Made on another type of machine than the baseline (" + "; ".join(diff) + "): CPU "
                "kernels and compute dtypes round differently across these, so a Δ ≠ 0 here is no "
                "sign of changed behaviour; the tolerance decides.")
    for whose, record in (("baseline's run", theirs), ("run under check", ours)):
        if unrecorded := [k for k in NUMERICS if k != "gpu" and record.get(k) is None]:
            return (f"The {whose} does not record its machine's {', '.join(unrecorded)}, so "
                    "whether Δ = 0 is to be expected here is unknown.")
    return ("Made on the baseline's type of machine (" + ", ".join(
        f"{k} {v}" for k, v in ours.items() if v is not None) + "): a change that keeps "
            "behaviour gives Δ = 0 on every metric here.")


def make_baseline(run: Path) -> dict[str, Any]:
    """The gated metrics of a run (those with a value and a standard error), and its machine."""
    cells = [c for c in run_cells(run) if c.value is not None and c.se is not None]
    if not cells:
        raise DataError(f"{run}: no metric with a value and a standard error to gate")
    return {
        "format": BASELINE_FORMAT,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "from_run": run.name,
        "run_git_sha": read_json(run / "run.json").get("git_sha"),
        "written_by_git_sha": git_sha(),
        "machine": numerics_machine(run),
        "metrics": [{"id": _id(c), "value": c.value, "se": c.se, "protocol": json.loads(c.key)}
                    for c in cells],
    }


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]


def compare(run: Path, baseline: dict[str, Any], k: float = 2.0) -> list[dict[str, Any]]:
    """One row per baseline metric (and per new, ungated one): values, delta, tolerance, verdict."""
    if baseline.get("format") != BASELINE_FORMAT:
        raise DataError(f"baseline format {baseline.get('format')!r} is not {BASELINE_FORMAT}")
    cells = {_id(c): c for c in run_cells(run)}
    rows = []
    for entry in baseline["metrics"]:
        row: dict[str, Any] = {"id": entry["id"], "baseline": entry["value"], "baseline_se": entry["se"],
                               "new": None, "new_se": None, "delta": None, "tolerance": None}
        cell = cells.pop(entry["id"], None)
        if cell is None:
            rows.append({**row, "verdict": "fail", "reason": "missing from the run"})
            continue
        row.update(new=cell.value, new_se=cell.se)
        (protocol, old_dtype), (new_protocol, new_dtype) = (
            split_dtype(entry["protocol"]), split_dtype(json.loads(cell.key)))
        diff = _differences(protocol, new_protocol)
        if diff:
            rows.append({**row, "verdict": "fail", "reason": "not comparable: " + "; ".join(diff)})
            continue
        if cell.value is None or cell.se is None:
            rows.append({**row, "verdict": "fail",
                         "reason": f"no value or standard error in the run ({cell.note or 'absent'})"})
            continue
        tol = k * math.sqrt(entry["se"] ** 2 + cell.se**2)
        delta = cell.value - entry["value"]
        row.update(delta=delta, tolerance=tol)
        dtypes = (f" (judged in {new_dtype}, the baseline in {old_dtype})"
                  if new_dtype != old_dtype else "")
        if delta < -tol:
            reason = f"regressed by {-delta:.3g} > {k:g}σ = {tol:.3g}"
            rows.append({**row, "verdict": "fail", "reason": reason + dtypes})
        else:
            rows.append({**row, "verdict": "pass", "reason": ("within tolerance" if delta <= tol
                         else "improved beyond tolerance") + dtypes})
    for cid, cell in sorted(cells.items()):
        absent = cell.value is None or cell.se is None
        rows.append({"id": cid, "baseline": None, "baseline_se": None, "new": cell.value,
                     "new_se": cell.se, "delta": None, "tolerance": None,
                     "verdict": "n/a" if absent else "new",
                     "reason": f"no value ({cell.note})" if absent and cell.note
                     else "no value or standard error" if absent else "not in the baseline (not gated)"})
    return rows


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def write_report(rows: list[dict[str, Any]], out_dir: Path, run: Path, baseline_path: Path,
                 k: float, machine: str = "") -> bool:
    ok = all(r["verdict"] != "fail" for r in rows)
    write_json(out_dir / "check.json", {"run": str(run), "baseline": str(baseline_path), "k": k,
                                        "passed": ok, "machine": machine, "metrics": rows})
    lines = [f"# Regression check: {'PASS' if ok else 'FAIL'}", "",
             f"Run `{run}` against `{baseline_path}`; tolerance {k:g}σ, σ = √(se_baseline² + se_new²).",
             *(["", machine] if machine else []),
             "", "| metric | baseline | new | delta | tolerance | verdict | why |",
             "|---|---:|---:|---:|---:|---|---|"]
    for r in rows:
        it, bench, metric = r["id"].split("/")
        name = f"{it} {label(bench, metric)}"
        base = f"{_fmt(r['baseline'])} ± {_fmt(r['baseline_se'])}" if r["baseline"] is not None else "—"
        new = f"{_fmt(r['new'])} ± {_fmt(r['new_se'])}" if r["new"] is not None else "—"
        lines.append(f"| {name} | {base} | {new} | {_fmt(r['delta'])} | {_fmt(r['tolerance'])} "
                     f"| {r['verdict']} | {r['reason']} |")
    write_text_atomic(out_dir / "check.md", "\n".join(lines) + "\n")
    return ok


def check(run: Path, baseline_path: Path, k: float = 2.0, out_dir: Path | None = None) -> tuple[bool, Path]:
    if not baseline_path.is_file():
        raise DataError(f"{baseline_path}: baseline file not found (write one with --write-baseline)")
    baseline = read_json(baseline_path)
    rows = compare(run, baseline, k)
    out = out_dir or run
    return write_report(rows, out, run, baseline_path, k, machine_note(baseline, run)), out / "check.md"
