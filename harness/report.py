"""Report stage: ``leaderboard.md``/``.csv`` (one row per iteration of a run, with training
columns) and ``leaderboard.html`` (the cross-run leaderboard page of this run, with plots).

The training table carries the in-loop win rate against the base; every benchmark is tabulated by
:mod:`harness.leaderboard` (one column per protocol, provenance footnoted), so no number stands
without its provenance and there is one way to print a benchmark table.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from harness import evaluate
from harness.artifacts import read_json, read_jsonl, write_text_atomic
from harness.results import Cell, run_cells
from harness.run_dir import RunDir


def _row(run: RunDir, t: int, cells: list[Cell]) -> dict[str, Any]:
    stages = run.meta.get("stages", {})
    train = stages.get(f"iter-{t}/train", {})
    row: dict[str, Any] = {
        "iteration": t,
        "model": "base" if t == 0 else f"SPPO Iter{t}",
        "checkpoint": run.meta.get("base_model_path", "") if t == 0 else str(run.checkpoint(t)),
        evaluate.BENCHMARK: None,
        "win_rate_se": None,
        "mean_preference": None,
        "n": None,
        "final_loss": train.get("final_loss"),
        "chosen_logratio": (train.get("logratios_after") or {}).get("chosen"),
        "rejected_logratio": (train.get("logratios_after") or {}).get("rejected"),
        "mean_chosen_probs": stages.get(f"iter-{t}/probabilities", {}).get("mean_chosen_probs"),
    }
    path = run.eval_dir(t, evaluate.BENCHMARK) / "results.json"
    if t > 0 and path.exists():
        m = read_json(path)["metrics"]
        row.update({evaluate.BENCHMARK: m["win_rate"]}, win_rate_se=m["standard_error"],
                   mean_preference=m["mean_preference"], n=m["n_total"])
    for c in cells:
        if c.iteration == t and c.benchmark != evaluate.BENCHMARK:
            row[f"{c.benchmark}/{c.metric}"] = c.value
            row[f"{c.benchmark}/{c.metric}_se"] = c.se
    return row


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _provenance(run: RunDir, iters: list[int]) -> dict[str, Any] | None:
    for t in iters:
        path = run.eval_dir(t, evaluate.BENCHMARK) / "results.json"
        if path.exists():
            return read_json(path)["provenance"]
    return None


def write_leaderboard(run: RunDir) -> str:
    """Write the run's leaderboard files; return the markdown table."""
    n = int(run.meta.get("args", {}).get("iters", 0))
    iters = [t for t in range(n + 1) if t == 0 or run.done(f"iter-{t}/train")]
    cells = run_cells(run.root)
    rows = [_row(run, t, cells) for t in iters]

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(run.root / "leaderboard.csv", buf.getvalue())

    prov = _provenance(run, iters)
    lines = [
        f"# {run.root.name}",
        "",
        "| model | win rate vs base (%) | ± SE | mean pref. (%) | n | final loss "
        "| log π/π_ref chosen | log π/π_ref rejected |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        wr = "50 (reference)" if r["iteration"] == 0 else _fmt(r[evaluate.BENCHMARK])
        lines.append(
            f"| {r['model']} | {wr} | {_fmt(r['win_rate_se'])} | {_fmt(r['mean_preference'])} "
            f"| {_fmt(r['n'])} | {_fmt(r['final_loss'], 4)} | {_fmt(r['chosen_logratio'])} "
            f"| {_fmt(r['rejected_logratio'])} |"
        )
    if prov:
        lines += [
            "",
            f"Win rate vs base: benchmark `{evaluate.BENCHMARK}` v{evaluate.VERSION}; "
            f"judge (ranker) `{prov['judge']}`; baseline: {prov['baseline']}; "
            f"n = {prov['n_examples']} prompts from {prov['prompts']}; "
            f"profile `{prov['profile']}`; decoding {json.dumps(prov['decoding'])}; "
            f"harness {prov['git_sha']}; packages {json.dumps(prov['packages'])}.",
            "A win counts 1, a tie ½; SE is the standard error over prompts. The ranker judges "
            "its own training signal here: this column shows learning under the run's ranker, "
            "not quality as a human or GPT-4 would judge it.",
        ]
    benchmarks = sorted({c.benchmark for c in cells} - {evaluate.BENCHMARK})
    if benchmarks:
        from harness import leaderboard
        from harness.benchmarks import get

        titles = [b.title if (b := get(name)) else name for name in benchmarks]
        lines += ["", f"## Benchmarks: {', '.join(titles)}", "",
                  leaderboard.to_markdown(leaderboard.build([run.root]))]
    gens = [run.generations(t) for t in iters if t > 0 and run.generations(t).exists()]
    if gens:
        cut = sum(not f for p in gens for r in read_jsonl(p) for f in r["finished"])
        total = sum(len(r["finished"]) for p in gens for r in read_jsonl(p))
        lines.append(f"\nTraining samples cut at max_new_tokens: {cut} of {total}.")
    text = "\n".join(lines) + "\n"
    write_text_atomic(run.root / "leaderboard.md", text)
    if cells:
        from harness import leaderboard

        page = leaderboard.render([run.root], "html", published=False, out_dir=run.root / "plots")
        write_text_atomic(run.root / "leaderboard.html", page)
    return text
