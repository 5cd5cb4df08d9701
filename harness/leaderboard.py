"""``harness leaderboard``: one comparable table across runs and published results.

Rows are checkpoints (base, Iter1, ... of each run; then published rows with their source).
Columns are (benchmark, metric, protocol): a metric measured under two protocols (another judge,
another n, a smoke subset) gets two columns, footnoted with what differs, so numbers that are not
comparable never share a column. Each run's iterations carry their delta against the run's base
in the same column, marked * when |Δ| > 1.96·√(se² + se_base²) (independent-error approximation).
Benchmarks whose official scoring fits all models at once (a style-controlled rating) refit
their cells jointly over all the runs shown (a registered benchmark's ``refit``); such a
column's protocol names the pool.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.benchmarks import Metric, registry
from harness.errors import DataError
from harness.results import Cell, describe_key, label, protocol_key, run_cells

PUBLISHED = Path(__file__).resolve().parent.parent / "leaderboards" / "published_sppo.csv"
NOT_HEADLINE = {"avg_length"}


@dataclass(frozen=True)
class Row:
    run: str
    model: str
    iteration: int | None
    source: str | None = None  # citation of a published row


def published_cells(path: Path = PUBLISHED) -> tuple[list[Cell], dict[str, str]]:
    """Cells of the published results file, and each published model's citation."""
    if not path.is_file():
        raise DataError(f"{path}: published results file not found")
    cells: dict[tuple[str, str, str, str], Cell] = {}
    sources: dict[str, str] = {}
    claimed = {pub: (b, metric) for b in registry().values() for pub, metric in b.published_metrics.items()}
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["metric"] in NOT_HEADLINE:
                continue
            # a benchmark the registry knows gets its official protocol; others stay as published
            bench, metric, version, proto = r["benchmark"], r["metric"], "as published", {}
            if (r["benchmark"], r["metric"]) in claimed:
                b, metric = claimed[r["benchmark"], r["metric"]]
                bench = b.name
                if b.published_protocol is not None:
                    version, proto = b.published_protocol(r)
            run = f"published ({r['source_kind']})"
            unc = r.get("uncertainty") or None
            cell = Cell(run, int(r["iteration"]) if r.get("iteration") else None, r["model"],
                        bench, metric, float(r["value"]), float(unc) if unc else None,
                        protocol_key(bench, version, proto),
                        {"source": r["source"], "locator": r["source_locator"]})
            # A source printing one number twice (e.g. a rounded copy in a later table): keep the first.
            cells.setdefault((run, r["model"], bench, metric), cell)
            sources.setdefault(f"{run}|{r['model']}", f"{r['source']} ({r['source_locator']})")
    return list(cells.values()), sources


@dataclass
class Table:
    rows: list[Row]
    columns: list[tuple[str, str, str]]  # (benchmark, metric, key)
    cells: dict[tuple[Row, tuple[str, str, str]], Cell]

    def footnote(self, col: tuple[str, str, str]) -> int:
        keys = list(dict.fromkeys(c[2] for c in self.columns))
        return keys.index(col[2]) + 1


def build(runs: list[Path], published: bool = False) -> Table:
    cells: list[Cell] = []
    for r in runs:
        cells += run_cells(r)
    for b in registry().values():
        if b.refit is not None:
            cells = b.refit(runs, cells)
    sources: dict[str, str] = {}
    if published:
        pub, sources = published_cells()
        cells += pub
    order = {name: i for i, name in enumerate(registry())}

    def metric_order(bench: str, metric: str) -> int:
        names = [m.name for m in b.metrics] if (b := registry().get(bench)) else []
        return names.index(metric) if metric in names else len(names)

    columns = sorted({(c.benchmark, c.metric, c.key) for c in cells},
                     key=lambda col: (order.get(col[0], len(order)), col[0], metric_order(col[0], col[1]),
                                      col[1], "smoke" in col[2], col[2]))
    rows = list(dict.fromkeys(Row(c.run, c.model, c.iteration, sources.get(f"{c.run}|{c.model}"))
                              for c in cells))
    table = {(Row(c.run, c.model, c.iteration, sources.get(f"{c.run}|{c.model}")),
              (c.benchmark, c.metric, c.key)): c for c in cells}
    return Table(rows, columns, table)


def _delta(t: Table, row: Row, col: tuple[str, str, str]) -> tuple[float, bool] | None:
    if row.source or not row.iteration:
        return None
    base = t.cells.get((next((r for r in t.rows if r.run == row.run and r.iteration == 0), row), col))
    cell = t.cells.get((row, col))
    if base is None or cell is None or base is cell or base.value is None or cell.value is None:
        return None
    d = cell.value - base.value
    sig = (base.se is not None and cell.se is not None
           and abs(d) > 1.96 * math.sqrt(base.se**2 + cell.se**2))
    return d, sig


def _cell_text(t: Table, row: Row, col: tuple[str, str, str]) -> str:
    c = t.cells.get((row, col))
    if c is None:
        return ""
    if c.value is None:
        return "n/a"
    text = f"{c.value:.2f}" + (f" ± {c.se:.2f}" if c.se is not None else "")
    d = _delta(t, row, col)
    if d is not None:
        text += f" ({d[0]:+.2f}{'*' if d[1] else ''})"
    return text


def _header(t: Table, col: tuple[str, str, str]) -> str:
    smoke = " smoke" if json.loads(col[2]).get("profile") == "smoke" else ""
    return f"{label(col[0], col[1])}{smoke} [{t.footnote(col)}]"


def _notes(t: Table) -> list[str]:
    keys = list(dict.fromkeys(c[2] for c in t.columns))
    out = [f"[{i + 1}] {describe_key(k)}" for i, k in enumerate(keys)]
    split = {(b, m) for b, m, _ in t.columns if sum((b, m) == (c[0], c[1]) for c in t.columns) > 1}
    for b, m in sorted(split):
        out.append(f"{label(b, m)} is split over several columns: their protocols differ (see notes), "
                   "so their numbers are not comparable.")
    missing = sorted({c.note for c in t.cells.values() if c.value is None and c.note})
    out += [f"n/a: {n}" for n in missing]
    out.append("Cells: value ± standard error (Δ vs the run's base; * = |Δ| > 1.96·√(se² + se_base²)).")
    return out


def to_markdown(t: Table) -> str:
    head = ["run", "model", *[_header(t, c) for c in t.columns]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * len(t.columns)]
    for r in t.rows:
        who = f"[{r.model}]({r.source.split(' ')[0]})" if r.source else r.model
        lines.append("| " + " | ".join([r.run, who, *[_cell_text(t, r, c) for c in t.columns]]) + " |")
    return "\n".join(lines + [""] + [f"- {n}" for n in _notes(t)]) + "\n"


def to_csv(t: Table) -> str:
    """Long format: one line per cell with its full protocol and provenance."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["run", "model", "iteration", "benchmark", "metric", "value", "se", "delta_vs_base",
                "significant", "protocol", "provenance"])
    for (row, col), c in t.cells.items():
        d = _delta(t, row, col)
        w.writerow([row.run, row.model, row.iteration, c.benchmark, c.metric, c.value, c.se,
                    None if d is None else d[0], None if d is None else d[1], c.key,
                    json.dumps(c.provenance, sort_keys=True, default=str)])
    return buf.getvalue()


def _metric(col: tuple[str, str, str]) -> Metric | None:
    b = registry().get(col[0])
    return next((m for m in b.metrics if m.name == col[1]), None) if b else None


def _series(t: Table, col: tuple[str, str, str]) -> dict[str, list[tuple[int, float, float]]]:
    """A column's (iteration, value, se) points per run, the base at 0 (at its value by
    definition where the metric has one, e.g. a win rate against the base)."""
    m = _metric(col)
    series: dict[str, list[tuple[int, float, float]]] = {}
    for (row, c), cell in t.cells.items():
        if c == col and not row.source and cell.value is not None and cell.iteration is not None:
            series.setdefault(row.run, []).append((cell.iteration, cell.value, cell.se or 0.0))
    if m is not None and m.base_value is not None:
        for points in series.values():
            if all(i != 0 for i, _, _ in points):
                points.append((0, m.base_value, 0.0))
    return {run: sorted(points) for run, points in sorted(series.items())}


def unplotted(t: Table) -> dict[tuple[str, str, str], str]:
    """The columns whose values carry no information across iterations, and why."""
    out = {}
    for col in t.columns:
        series = _series(t, col)
        if not any(len(points) > 1 for points in series.values()):
            out[col] = "fewer than two iterations with a value"
        elif len({v for points in series.values() for _, v, _ in points}) == 1:
            out[col] = "the same value at every iteration"
    return out


PLOT_NAME = re.compile(r"plot-\d+-[\w.-]+\.(png|svg)")  # the figures :func:`plots` writes


def plots(t: Table, out_dir: Path, skip: dict[tuple[str, str, str], str]) -> list[Path]:
    """One figure per benchmark (PNG and SVG) of the columns not in ``skip``: a panel per column,
    each run's value vs iteration with error bars on integer iterations, the base at 0 (with a
    metric's value by definition, e.g. 50 % for a win rate against the base, drawn as a
    reference line). Figures of an earlier rendering in ``out_dir`` are removed; no other file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for stale in out_dir.glob("plot-*"):
        if PLOT_NAME.fullmatch(stale.name):
            stale.unlink()
    by_bench: dict[str, list[tuple[str, str, str]]] = {}
    for col in t.columns:
        if col not in skip:
            by_bench.setdefault(col[0], []).append(col)
    made = []
    with plt.rc_context({"svg.fonttype": "none"}):  # the SVG's labels stay text (searchable)
        for i, (bench, cols) in enumerate(by_bench.items()):
            made += _figure(t, cols, out_dir / f"plot-{i + 1}-{bench}")
    return made


def _figure(t: Table, cols: list[tuple[str, str, str]], stem: Path) -> list[Path]:
    """One benchmark's figure, a panel per column, as ``stem``.png and .svg."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(cols), figsize=(4.6 * len(cols), 3.2), squeeze=False)
    last = 0
    for ax, col in zip(axes[0], cols, strict=True):
        for run, points in _series(t, col).items():
            its, values, ses = zip(*points, strict=True)
            ax.errorbar(its, values, yerr=ses, marker="o", capsize=3, label=run)
            last = max(last, *its)
        m = _metric(col)
        if m is not None and m.base_value is not None:
            ax.axhline(m.base_value, color="grey", linestyle="--", linewidth=1, label="base")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(-0.3, max(last, 1) + 0.3)
        ax.set_xlabel("SPPO iteration (0 = base)")
        ax.set_ylabel(label(col[0], col[1]))
        ax.set_title(_header(t, col), fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    made = []
    for ext in ("png", "svg"):
        path = stem.parent / f"{stem.name}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        made.append(path)
    plt.close(fig)
    return made


def to_html(t: Table, images: list[Path], skip: dict[tuple[str, str, str], str]) -> str:
    """One self-contained page: the table, the notes and the plots (inlined PNGs)."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in ["run", "model", *[_header(t, c) for c in t.columns]])
    body = []
    for r in t.rows:
        who = (f'<a href="{esc(r.source.split(" ")[0])}">{esc(r.model)}</a>' if r.source
               else esc(r.model))
        tds = "".join(f"<td>{esc(_cell_text(t, r, c))}</td>" for c in t.columns)
        body.append(f"<tr><td>{esc(r.run)}</td><td>{who}</td>{tds}</tr>")
    skipped = [f"not plotted: {_header(t, col)}: {why}" for col, why in skip.items()]
    notes = "".join(f"<li>{esc(n)}</li>" for n in _notes(t) + skipped)
    imgs = "".join(
        f'<figure><img alt="{esc(p.stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"></figure>'
        for p in images if p.suffix == ".png")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}"
             "td:nth-child(-n+2),th:nth-child(-n+2){text-align:left}figure{display:inline-block}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>SPPO leaderboard</title>"
            f"<style>{style}</style></head><body><h1>SPPO leaderboard</h1>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"<ul>{notes}</ul>{imgs}</body></html>\n")


def render(runs: list[Path], fmt: str, published: bool, out_dir: Path | None) -> str:
    """The leaderboard in ``fmt``; plots (and the html page) are written to ``out_dir``."""
    t = build(runs, published)
    if not t.columns:
        raise DataError("no results to tabulate in " + ", ".join(map(str, runs)))
    if fmt == "md":
        return to_markdown(t)
    if fmt == "csv":
        return to_csv(t)
    skip = unplotted(t)
    images = plots(t, out_dir or Path("leaderboard"), skip)
    return to_html(t, images, skip)


def cell_summary(t: Table) -> dict[str, Any]:
    """Machine-readable view for tests and tools: {run|model: {column header: text}}."""
    return {f"{r.run}|{r.model}": {_header(t, c): _cell_text(t, r, c) for c in t.columns}
            for r in t.rows}
