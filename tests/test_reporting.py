"""Leaderboard comparability, the regression gate, published rows, model cards, and the HTML page
as a person sees it in headless Chromium.

Runs are built in the test from results.json records in the run-directory contract, so every
rule is checked on known numbers. Chromium (Debian's ``chromium``) is driven over the DevTools
protocol: the page is loaded from disk, the rendered cells are read, every image must decode, console
errors and uncaught exceptions are collected, and a screenshot is saved. A missing browser fails
the test (the README's setup command and ``.ci/run`` install it).
"""

from __future__ import annotations

import base64
import copy
import csv
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from harness import gate, leaderboard
from harness.artifacts import write_json
from harness.cli import main
from harness.config import load_config
from harness.run_dir import RunDir

WR_PROV = {"judge": "smollm-judge", "judge_dtype": "bfloat16", "baseline": "base policy (x)",
           "n_examples": 64, "profile": "smoke", "prompts": "embedded (held out, last 64)",
           "decoding": {"temperature": 0.7}}
AE_PROV = {"annotator": "weighted_alpaca_eval_gpt4_turbo prompt and parser, local judge",
           "judge": "local:embedded:smollm2-135m", "baseline": "gpt4_1106_preview", "n_examples": 16,
           "limit": 16, "profile": "smoke", "decoding": {"temperature": 0.7}}


def _wr(value: float, se: float, **prov) -> dict:
    return {"benchmark": "win_rate_vs_base", "version": "1",
            "metrics": {"win_rate": value, "standard_error": se, "n_total": 64},
            "provenance": {**WR_PROV, **prov}}


def _ae(value: float, se: float, **prov) -> dict:
    return {"benchmark": "alpaca_eval", "version": "2.0",
            "metrics": {"win_rate": value, "standard_error": se, "length_controlled_winrate": None,
                        "lc_standard_error": None, "lc_unavailable": "hub files not reachable",
                        "n_total": 16},
            "provenance": {**AE_PROV, **prov}}


def make_run(root: Path, results: dict[int, list[dict]]) -> Path:
    rd = RunDir(root)
    rd.create(load_config("smollm2-135m", "smoke").model_dump(mode="json"), {"iters": 2, "seed": 0})
    for t, records in results.items():
        for rec in records:
            write_json(rd.eval_dir(t, rec["benchmark"]) / "results.json", rec)
    return root


@pytest.fixture
def run_a(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run-a", {0: [_ae(40.0, 5.0)], 1: [_wr(60.0, 5.0), _ae(48.0, 5.0)],
                                          2: [_wr(70.0, 5.0), _ae(55.0, 5.0)]})


# leaderboard ----------------------------------------------------------------------------------
def test_same_protocol_shares_a_column_and_deltas_are_marked(run_a: Path, tmp_path: Path) -> None:
    run_b = make_run(tmp_path / "run-b", {0: [_ae(40.0, 1.0)], 1: [_wr(52.0, 5.0), _ae(45.0, 1.0)]})
    t = leaderboard.build([run_a, run_b])
    assert [c[:2] for c in t.columns] == [("win_rate_vs_base", "win_rate"),
                                          ("alpaca_eval", "length_controlled_winrate"),
                                          ("alpaca_eval", "win_rate")]
    cells = leaderboard.cell_summary(t)
    ae_col = next(h for h in cells["run-a|base"] if h.startswith("AlpacaEval 2.0 WR"))
    assert cells["run-a|SPPO Iter2"][ae_col] == "55.00 ± 5.00 (+15.00*)"  # 15 > 1.96·√50 = 13.9
    assert cells["run-a|SPPO Iter1"][ae_col] == "48.00 ± 5.00 (+8.00)"
    assert cells["run-b|SPPO Iter1"][ae_col] == "45.00 ± 1.00 (+5.00*)"
    lc_col = next(h for h in cells["run-a|base"] if "LC" in h)
    assert cells["run-a|base"][lc_col] == "n/a"
    md = leaderboard.to_markdown(t)
    assert "n/a: hub files not reachable" in md and "split" not in md


@pytest.mark.parametrize(("change", "differs"), [
    ({"judge": "local:other-judge"}, "judge"),
    ({"n_examples": 805, "limit": None, "profile": "full"}, "profile"),
    ({"baseline": "gpt-4-0314"}, "baseline"),
])
def test_different_protocols_never_share_a_column(run_a: Path, tmp_path: Path, change: dict,
                                                  differs: str) -> None:
    run_b = make_run(tmp_path / "run-b", {0: [_ae(40.0, 1.0, **change)]})
    t = leaderboard.build([run_a, run_b])
    ae_cols = [c for c in t.columns if c[:2] == ("alpaca_eval", "win_rate")]
    assert len(ae_cols) == 2
    a_col, b_col = sorted(ae_cols, key=lambda c: json.loads(c[2])[differs] != AE_PROV.get(differs))
    rows = {(r.run, r.model): r for r in t.rows}
    assert (rows["run-b", "base"], a_col) not in t.cells and (rows["run-a", "base"], b_col) not in t.cells
    md = leaderboard.to_markdown(t)
    assert "AlpacaEval 2.0 WR (%) is split over several columns" in md
    if differs == "profile":  # a smoke number never sits beside a full one unmarked
        assert md.count("AlpacaEval 2.0 WR (%) smoke [") == 1


ARENA_FIXTURE = Path(__file__).parent / "fixtures" / "arena_hard" / "arena-hard-v0.1"


def _arena_style_run(root: Path, models: dict[int, str]) -> Path:
    """A run whose checkpoints were evaluated with Arena-Hard v0.1 style control, each fitted on
    its own judgments (as ``arena_hard.evaluate`` writes them), from the fixture's judgments."""
    from harness.artifacts import read_jsonl, write_jsonl
    from harness.benchmarks import arena_hard as ah

    rd = RunDir(root)
    rd.create(load_config("smollm2-135m", "smoke").model_dump(mode="json"), {"iters": 2, "seed": 0})
    for t, fixture_model in models.items():
        name, out = f"{root.name}-{t}", rd.eval_dir(t, ah.NAME)
        judgments = ARENA_FIXTURE / "model_judgment" / "gpt-4-1106-preview" / f"{fixture_model}.jsonl"
        judged = [{**r, "model": name} for r in read_jsonl(judgments)]
        answers = [{**r, "model_id": name}
                   for r in read_jsonl(ARENA_FIXTURE / "model_answer" / f"{fixture_model}.jsonl")]
        write_jsonl(out / "model_judgment" / "gpt-4-1106-preview" / f"{name}.jsonl", judged)
        write_jsonl(out / "model_answer" / f"{name}.jsonl", answers)
        per_model, info = ah.pooled_style_scores([(judged, ah.answer_features(answers, len))], "v0.1")
        info |= {"judgments": f"model_judgment/gpt-4-1106-preview/{name}.jsonl",
                 "answers": f"model_answer/{name}.jsonl", "published": []}
        write_json(out / "results.json", {
            "benchmark": "arena_hard", "version": ah.style_version("v0.1", info), "metrics": per_model[name],
            "provenance": {"judge": "openai:gpt-4-1106-preview", "baseline": "gpt-4-0314", "n_examples": 40,
                           "limit": 40, "profile": "full", "style_control": info}})
    return root


def test_arena_hard_style_control_is_refitted_jointly_over_all_runs(tmp_path: Path) -> None:
    from harness.benchmarks import arena_hard as ah

    run_a = _arena_style_run(tmp_path / "run-a", {0: "llama-3-8b-instruct", 1: "llama-3-8b-sppo-iter1"})
    run_b = _arena_style_run(tmp_path / "run-b", {0: "llama-3-8b-sppo-iter2", 1: "llama-3-8b-sppo-iter3"})
    alone = leaderboard.build([run_a])
    t = leaderboard.build([run_a, run_b])
    arena = [c for c in t.columns if c[0] == "arena_hard"]
    assert len(arena) == 1  # one joint fit: one column, whichever run a checkpoint is from
    version = json.loads(arena[0][2])["version"]
    assert version.startswith("arena-hard-v0.1 style-control pooled over 4 models [")
    assert "pooled over 4 models" in leaderboard.to_markdown(t)
    # the same numbers as the joint fit of the four judgment sets (which test_arena_hard checks
    # against the official 2024 script)
    rows, features = ah.load_pool([ARENA_FIXTURE / "model_judgment" / "gpt-4-1106-preview"], "v0.1")
    want, _ = ah.pooled_style_scores([(rows, features)], "v0.1")
    got = {(r.run, r.iteration): t.cells[(r, arena[0])] for r in t.rows if (r, arena[0]) in t.cells}
    which = {("run-a", 0): "llama-3-8b-instruct", ("run-a", 1): "llama-3-8b-sppo-iter1",
             ("run-b", 0): "llama-3-8b-sppo-iter2", ("run-b", 1): "llama-3-8b-sppo-iter3"}
    for (run, it), model in which.items():
        assert got[(run, it)].value == want[model]["score"]
        assert got[(run, it)].se == want[model]["standard_error"]
        assert got[(run, it)].provenance["style_control"]["models"] == [
            "run-a.iter0", "run-a.iter1", "run-b.iter0", "run-b.iter1"]
    # one run alone is its own pool: another column, never mixed with the joint one
    (alone_col,) = [c for c in alone.columns if c[0] == "arena_hard"]
    assert "pooled over 2 models" in json.loads(alone_col[2])["version"] and alone_col != arena[0]


def test_published_rows_are_traceable_to_their_sources() -> None:
    with open(leaderboard.PUBLISHED, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 8
    for r in rows:
        assert r["source"].startswith(("https://github.com/", "https://arxiv.org/",
                                       "https://huggingface.co/", "https://pypi.org/")), r
        assert r["source_locator"] and r["quote"], r
        assert r["value"] in r["quote"], f"value {r['value']} not in its quoted source text {r['quote']!r}"
        float(r["value"])
    cells, sources = leaderboard.published_cells()
    assert cells and all(v for v in sources.values())
    # The SPPO headline (README of uclaml/SPPO): Mistral-7B LC 17.11 → Iter3 28.53.
    lc = {(c.run, c.model): c.value for c in cells if c.metric == "length_controlled_winrate"}
    assert lc["published (repo_readme)", "mistralai/Mistral-7B-Instruct-v0.2"] == 17.11
    assert lc["published (repo_readme)", "UCLA-AGI/Mistral7B-PairRM-SPPO-Iter3"] == 28.53


def test_published_alpaca_eval_rows_share_the_official_protocol_only(run_a: Path) -> None:
    t = leaderboard.build([run_a], published=True)
    pub_cols = {c for (r, c) in t.cells if r.source and c[0] == "alpaca_eval"}
    run_cols = {c for (r, c) in t.cells if not r.source and c[0] == "alpaca_eval"}
    assert pub_cols and not pub_cols & run_cols  # local-judge smoke numbers never beside GPT-4's
    for col in pub_cols:
        proto = json.loads(col[2])
        assert proto["annotator"] == "weighted_alpaca_eval_gpt4_turbo" and proto["n_examples"] == 805


def test_html_page_is_self_contained_with_plots(run_a: Path, tmp_path: Path) -> None:
    out = tmp_path / "lb" / "leaderboard.html"
    assert main(["leaderboard", str(run_a), "--format", "html", "--out", str(out)]) == 0
    page = out.read_text()
    assert page.count("<img ") >= 2 and "data:image/png;base64," in page
    assert "55.00 ± 5.00 (+15.00*)" in page and "http" not in page.split("<body>")[1].split("<ul>")[0]
    # one figure per benchmark with a value at two iterations or more; AlpacaEval's LC has none
    assert sorted(p.name for p in out.parent.glob("plot-*")) == [
        "plot-1-win_rate_vs_base.png", "plot-1-win_rate_vs_base.svg",
        "plot-2-alpaca_eval.png", "plot-2-alpaca_eval.svg"]
    assert "not plotted: AlpacaEval 2.0 LC (%) smoke [2]: fewer than two iterations with a value" in page
    svg = (out.parent / "plot-1-win_rate_vs_base.svg").read_text()
    ticks = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert {"0", "1", "2"} <= set(ticks) and not {"0.5", "1.5", "0.0"} & set(ticks)  # integer iterations
    # the win rate's base: 50 % by definition, a point at iteration 0 and a reference line
    col = next(c for c in leaderboard.build([run_a]).columns if c[0] == "win_rate_vs_base")
    assert leaderboard._series(leaderboard.build([run_a]), col) == {
        "run-a": [(0, 50.0, 0.0), (1, 60.0, 5.0), (2, 70.0, 5.0)]}


def test_a_metric_without_information_gets_no_plot(tmp_path: Path) -> None:
    flat = make_run(tmp_path / "flat", {0: [_ae(40.0, 5.0)], 1: [_wr(60.0, 5.0), _ae(40.0, 5.0)],
                                        2: [_wr(70.0, 5.0), _ae(40.0, 5.0)]})
    out = tmp_path / "lb" / "leaderboard.html"
    out.parent.mkdir()
    for name in ("plot-2-alpaca_eval.png", "plot-notes.txt"):  # an earlier figure; the user's file
        (out.parent / name).write_text("x")
    import matplotlib

    before = matplotlib.rcParams["svg.fonttype"]
    assert main(["leaderboard", str(flat), "--format", "html", "--out", str(out)]) == 0
    assert matplotlib.rcParams["svg.fonttype"] == before  # the caller's settings are left alone
    assert sorted(p.name for p in out.parent.glob("plot-*.png")) == ["plot-1-win_rate_vs_base.png"]
    assert (out.parent / "plot-notes.txt").read_text() == "x"
    assert "AlpacaEval 2.0 WR (%) smoke [2]: the same value at every iteration" in out.read_text()


# regression gate --------------------------------------------------------------------------------
def _variant(run: Path, dest: Path, edit) -> Path:
    shutil.copytree(run, dest)
    for path in dest.glob("iter-*/eval/*/results.json"):
        rec = json.loads(path.read_text())
        edit(rec)
        path.write_text(json.dumps(rec))
    return dest


def _check(run: Path, baseline: Path, tmp_path: Path) -> tuple[int, dict]:
    code = main(["check", str(run), "--baseline", str(baseline), "--report", str(tmp_path / "rep")])
    return code, json.loads((tmp_path / "rep" / "check.json").read_text())


@pytest.fixture
def baseline(run_a: Path, tmp_path: Path) -> Path:
    path = tmp_path / "baseline.json"
    assert main(["check", str(run_a), "--baseline", str(path), "--write-baseline"]) == 0
    return path


def _shift(by: float):
    def edit(rec: dict) -> None:
        if rec["benchmark"] == "win_rate_vs_base":
            rec["metrics"]["win_rate"] += by
    return edit


def test_gate_passes_noise_within_tolerance(run_a: Path, baseline: Path, tmp_path: Path) -> None:
    # σ of the difference = √(5² + 5²) ≈ 7.07; a drop of 0.5σ is noise.
    code, rep = _check(_variant(run_a, tmp_path / "noisy", _shift(-3.5)), baseline, tmp_path)
    assert code == 0 and rep["passed"]
    assert {r["id"] for r in rep["metrics"] if r["verdict"] == "pass"} == {
        "iter-1/win_rate_vs_base/win_rate", "iter-2/win_rate_vs_base/win_rate",
        "iter-0/alpaca_eval/win_rate", "iter-1/alpaca_eval/win_rate", "iter-2/alpaca_eval/win_rate"}
    # LC had no value (hub files missing): reported as such, never gated, never a silent pass.
    lc = [r for r in rep["metrics"] if r["id"].endswith("length_controlled_winrate")]
    assert len(lc) == 3 and all(r["verdict"] == "n/a" and "hub files" in r["reason"] for r in lc)


def test_gate_fails_a_planted_regression(run_a: Path, baseline: Path, tmp_path: Path) -> None:
    code, rep = _check(_variant(run_a, tmp_path / "worse", _shift(-15.0)), baseline, tmp_path)
    assert code == 1 and not rep["passed"]
    failed = {r["id"]: r for r in rep["metrics"] if r["verdict"] == "fail"}
    assert set(failed) == {"iter-1/win_rate_vs_base/win_rate", "iter-2/win_rate_vs_base/win_rate"}
    assert failed["iter-2/win_rate_vs_base/win_rate"]["delta"] == pytest.approx(-15.0)
    assert "regressed" in failed["iter-2/win_rate_vs_base/win_rate"]["reason"]
    assert "FAIL" in (tmp_path / "rep" / "check.md").read_text()


def test_gate_fails_when_provenance_changes(run_a: Path, baseline: Path, tmp_path: Path) -> None:
    def new_judge(rec: dict) -> None:
        rec["provenance"]["judge"] = "smollm-pmi"

    code, rep = _check(_variant(run_a, tmp_path / "judge", new_judge), baseline, tmp_path)
    assert code == 1
    reasons = [r["reason"] for r in rep["metrics"] if r["verdict"] == "fail"]
    assert len(reasons) == 5 and all(r.startswith("not comparable: judge:") for r in reasons)


def test_gate_compares_a_judge_that_differs_only_in_its_dtype(run_a: Path, baseline: Path,
                                                              tmp_path: Path) -> None:
    """``dtype: auto`` lets the machine pick bf16 or float32: a judge that differs from the
    baseline's only there is compared (the tolerance decides, the row says so); any other change
    of judge is still not comparable."""
    def in_fp32(shift: float):
        def edit(rec: dict) -> None:
            prov = rec["provenance"]
            if "judge_dtype" in prov:
                prov["judge_dtype"] = "float32"
            else:  # the dtype inside a local judge's id, as MT-Bench and Arena-Hard record it
                prov["judge"] = "local:embedded:smollm2-135m:float32:constrained"
            _shift(shift)(rec)
        return edit

    base = json.loads(baseline.read_text())
    for m in base["metrics"]:
        if m["id"].split("/")[1] == "alpaca_eval":
            m["protocol"]["judge"] = "local:embedded:smollm2-135m:bfloat16:constrained"
    baseline.write_text(json.dumps(base))
    code, rep = _check(_variant(run_a, tmp_path / "fp32", in_fp32(-3.5)), baseline, tmp_path)
    gated = [r for r in rep["metrics"] if r["verdict"] != "n/a"]
    assert code == 0 and len(gated) == 5
    assert all(r["verdict"] == "pass" and r["reason"] == "within tolerance (judged in float32, the "
               "baseline in bfloat16)" for r in gated)
    code, rep = _check(_variant(run_a, tmp_path / "fp32-worse", in_fp32(-15.0)), baseline, tmp_path)
    assert code == 1 and {r["id"] for r in rep["metrics"] if r["verdict"] == "fail"} == {
        "iter-1/win_rate_vs_base/win_rate", "iter-2/win_rate_vs_base/win_rate"}
    assert gate.split_dtype({"judge": "local:other:float32:constrained", "n_examples": 8}) == (
        {"judge": "local:other:constrained", "n_examples": 8}, "float32")


def test_gate_fails_when_a_metric_is_missing(run_a: Path, baseline: Path, tmp_path: Path) -> None:
    dest = _variant(run_a, tmp_path / "short", lambda rec: None)
    shutil.rmtree(dest / "iter-2")
    code, rep = _check(dest, baseline, tmp_path)
    missing = [r["id"] for r in rep["metrics"] if r["reason"] == "missing from the run"]
    assert code == 1 and sorted(missing) == ["iter-2/alpaca_eval/win_rate",
                                             "iter-2/win_rate_vs_base/win_rate"]


# model card ------------------------------------------------------------------------------------
def test_card_holds_metadata_results_and_the_alpaca_eval_config(
    run_a: Path, tiny_model_dir: Path
) -> None:
    shutil.copytree(tiny_model_dir, run_a / "iter-1" / "checkpoint")
    assert main(["card", str(run_a), "--iter", "1"]) == 0
    text = (run_a / "iter-1" / "checkpoint" / "README.md").read_text()
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["license"] == "apache-2.0"
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    assert {m["type"]: m["value"] for m in metrics} == {"win_rate_vs_base/win_rate": 60.0,
                                                        "alpaca_eval/win_rate": 48.0}
    assert all("judge" in m["name"] and "profile smoke" in m["name"] for m in metrics)
    assert "Smoke profile" in text and "lr 1e-05" in text
    folder = run_a / "iter-1" / "checkpoint" / "models_configs" / "smollm2-135m-sppo-iter1"
    cfg = yaml.safe_load((folder / "configs.yaml").read_text())["smollm2-135m-sppo-iter1"]
    assert cfg["completions_kwargs"]["max_new_tokens"] == 64
    assert "{instruction}" in (folder / "prompt.txt").read_text()
    assert "OPENAI" not in text and "sk-" not in text
    with pytest.raises(SystemExit):
        main(["card", str(run_a)])  # --iter is required
    assert main(["card", str(run_a), "--iter", "2"]) == 2  # no checkpoint there


def test_a_baseline_keeps_its_numbers_when_the_run_changes(run_a: Path) -> None:
    """The baseline holds copies of the run's numbers: a later change to the run is seen as a
    change against it, not carried into it."""
    base = gate.make_baseline(run_a)
    kept = copy.deepcopy(base)
    path = run_a / "iter-2" / "eval" / "alpaca_eval" / "results.json"
    record = json.loads(path.read_text())
    record["metrics"]["win_rate"] -= 30.0
    path.write_text(json.dumps(record))
    rows = {r["id"]: r for r in gate.compare(run_a, base)}
    assert base == kept
    assert rows["iter-2/alpaca_eval/win_rate"]["delta"] == pytest.approx(-30.0)
    assert rows["iter-2/alpaca_eval/win_rate"]["verdict"] == "fail"


def test_the_check_says_whether_delta_0_is_expected_on_this_machine(run_a: Path, tmp_path: Path) -> None:
    """The baseline records its run's machine; the report says whether this run was made on that
    type of machine (where a behaviour-keeping change gives Δ = 0) and, if not, what differs."""
    base = gate.make_baseline(run_a)
    assert base["machine"] == gate.numerics_machine(run_a)
    assert base["machine"]["cpu_capability"] and base["machine"]["torch"]
    same = gate.machine_note(base, run_a)
    assert same.startswith("Made on the baseline's type of machine")
    other = copy.deepcopy(base)
    elsewhere = "AVX2" if base["machine"]["cpu_capability"] != "AVX2" else "AVX512"  # not this one
    other["machine"]["cpu_capability"] = elsewhere
    note = gate.machine_note(other, run_a)
    assert "another type of machine" in note and f"cpu_capability: {elsewhere!r} →" in note
    other["machine"] = {**base["machine"], "cpu": None, "cpu_flags": None}  # an older run.json
    assert "baseline's run does not record its machine's cpu, cpu_flags" in gate.machine_note(other, run_a)
    del other["machine"]
    assert "baseline's run does not record its machine's cpu" in gate.machine_note(other, run_a)
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(base))
    ok, report = gate.check(run_a, path, out_dir=tmp_path / "gate")
    assert ok and same in report.read_text()
    meta = json.loads((run_a / "run.json").read_text())
    meta["machine"] = {"platform": "Linux", "cpus": 2}  # a run made before machines were recorded
    (run_a / "run.json").write_text(json.dumps(meta))
    assert "run under check does not record its machine's cpu" in gate.machine_note(base, run_a)


# the page in a browser ----------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class DevTools:
    """The smallest DevTools-protocol client the test needs (one page target)."""

    def __init__(self, ws_url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            if time.monotonic() > end:
                raise TimeoutError(event)
            self.events.append(json.loads(self.ws.recv()))


@pytest.fixture
def browser(tmp_path: Path):
    if CHROMIUM is None:
        pytest.fail("headless Chromium is needed to check the HTML page: apt-get install chromium "
                    "(the README's setup command does)")
    profile = tmp_path / "chromium-profile"
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        end = time.monotonic() + 60
        while not port_file.exists() or len(port_file.read_text().split()) < 2:
            if time.monotonic() > end or proc.poll() is not None:
                pytest.fail("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        yield tools
        tools.ws.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_leaderboard_page_renders_in_chromium(browser: DevTools, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run-a", {0: [_ae(40.0, 5.0)], 1: [_wr(60.0, 5.0), _ae(48.0, 5.0)],
                                         2: [_wr(70.0, 5.0), _ae(55.0, 5.0)]})
    page = tmp_path / "site" / "leaderboard.html"
    assert main(["leaderboard", str(run), "--published", "--format", "html", "--out", str(page)]) == 0

    for domain in ("Page", "Runtime", "Log"):
        browser.call(f"{domain}.enable")
    browser.call("Page.navigate", url=page.resolve().as_uri())
    browser.wait_for("Page.loadEventFired")
    seen = browser.call("Runtime.evaluate", returnByValue=True, expression="""({
        cells: [...document.querySelectorAll('td')].map(td => td.innerText),
        headers: [...document.querySelectorAll('th')].map(th => th.innerText),
        images: [...document.images].map(i => ({done: i.complete, width: i.naturalWidth})),
        title: document.title})""")["result"]["value"]
    shot = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    (tmp_path / "leaderboard.png").write_bytes(base64.b64decode(shot["data"]))

    assert seen["title"] == "SPPO leaderboard"
    assert "55.00 ± 5.00 (+15.00*)" in seen["cells"] and "SPPO Iter2" in seen["cells"]
    assert "UCLA-AGI/Mistral7B-PairRM-SPPO-Iter3" in seen["cells"]  # a published row
    assert any(h.startswith("AlpacaEval 2.0 WR (%) smoke") for h in seen["headers"])
    assert len(seen["images"]) >= 2 and all(i["done"] and i["width"] > 0 for i in seen["images"])
    errors = [e for e in browser.events
              if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert errors == []
    assert (tmp_path / "leaderboard.png").stat().st_size > 10_000
