"""Report stage: ``leaderboard.md``/``.csv`` (one row per iteration of a run, with training
columns) and ``leaderboard.html`` (the cross-run leaderboard page of this run, with plots).

Each column is one benchmark under one provenance (judge, baseline, n, decoding, profile);
the provenance is printed under the table so no number stands without it.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from harness import evaluate
from harness.artifacts import read_json, read_jsonl, write_text_atomic
from harness.run_dir import RunDir


def _row(run: RunDir, t: int) -> dict[str, Any]:
    stages = run.meta.get("stages", {})
    train = stages.get(f"iter-{t}/train", {})
    row: dict[str, Any] = {
        "iteration": t,
        "model": "base" if t == 0 else f"SPPO Iter{t}",
        "checkpoint": run.meta.get("base_model_path", "") if t == 0 else str(run.checkpoint(t)),
        "win_rate_vs_base": None,
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
        row.update(win_rate_vs_base=m["win_rate"], win_rate_se=m["standard_error"],
                   mean_preference=m["mean_preference"], n=m["n_total"])
    path = run.eval_dir(t, ALPACA_EVAL) / "results.json"
    if path.exists():
        m = read_json(path)["metrics"]
        row.update({f"alpaca_eval_{k}": m.get(k) for k in ALPACA_EVAL_COLUMNS})
    return row


ALPACA_EVAL = "alpaca_eval"
ALPACA_EVAL_COLUMNS = ("win_rate", "standard_error", "length_controlled_winrate", "lc_standard_error",
                       "n_total", "avg_length")


def _alpaca_eval_table(run: RunDir, rows: list[dict[str, Any]]) -> list[str]:
    """AlpacaEval 2.0 rows under one provenance; a run never mixes annotators or limits."""
    have = [r for r in rows if r.get("alpaca_eval_n_total") is not None]
    if not have:
        return []
    provs = [read_json(run.eval_dir(r["iteration"], ALPACA_EVAL) / "results.json")["provenance"]
             for r in have]
    key = ("annotator", "judge", "baseline", "n_examples", "decoding", "alpaca_eval")
    lines = ["", "## AlpacaEval 2.0", "",
             "| model | win rate (%) | ± SE | LC win rate (%) | ± SE | n | avg length (chars) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in have:
        lines.append(
            f"| {r['model']} | {_fmt(r['alpaca_eval_win_rate'])} | {_fmt(r['alpaca_eval_standard_error'])} "
            f"| {_fmt(r['alpaca_eval_length_controlled_winrate'])} "
            f"| {_fmt(r['alpaca_eval_lc_standard_error'])} | {r['alpaca_eval_n_total']} "
            f"| {r['alpaca_eval_avg_length']} |")
    p = provs[0]
    if any({k: q.get(k) for k in key} != {k: p.get(k) for k in key} for q in provs):
        lines.append("\n**Warning:** these rows were evaluated under different settings; see each "
                     "iteration's eval/alpaca_eval/results.json before comparing them.")
    limit = f", first {p['limit']} instructions only (not comparable with the full set)" if p.get(
        "limit") else ""
    lines += ["", f"AlpacaEval {p.get('alpaca_eval')} (alpaca-eval package); annotator {p['annotator']}; "
                  f"judge `{p['judge']}`; baseline {p['baseline']}; n = {p['n_examples']}{limit}; "
                  f"decoding {json.dumps(p['decoding'])}; profile `{p.get('profile')}`."]
    m = read_json(run.eval_dir(have[0]["iteration"], ALPACA_EVAL) / "results.json")["metrics"]
    if m.get("lc_unavailable"):
        lines.append(f"LC unavailable: {m['lc_unavailable']}")
    return lines


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
    rows = [_row(run, t) for t in iters]

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
        wr = "50 (reference)" if r["iteration"] == 0 else _fmt(r["win_rate_vs_base"])
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
    lines += _alpaca_eval_table(run, rows)
    gens = [run.generations(t) for t in iters if t > 0 and run.generations(t).exists()]
    if gens:
        cut = sum(not f for p in gens for r in read_jsonl(p) for f in r["finished"])
        total = sum(len(r["finished"]) for p in gens for r in read_jsonl(p))
        lines.append(f"\nTraining samples cut at max_new_tokens: {cut} of {total}.")
    text = "\n".join(lines) + "\n"
    write_text_atomic(run.root / "leaderboard.md", text)
    if any(run.eval_dir(t, b).joinpath("results.json").exists() for t in iters
           for b in (evaluate.BENCHMARK, ALPACA_EVAL)):
        from harness import leaderboard

        page = leaderboard.render([run.root], "html", published=False, out_dir=run.root / "plots")
        write_text_atomic(run.root / "leaderboard.html", page)
    return text
