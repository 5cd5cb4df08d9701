"""A benchmark from a plug-in (``tests/plugin_benchmark.py``): registered, it runs as a stage of
``harness run`` for the base and each checkpoint and as ``harness eval``, and its cells reach the
leaderboard and the gate, with no harness file naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import tiny_plugin_env, tiny_run_config

from harness import benchmarks as bench_registry
from harness import gate, leaderboard
from harness.artifacts import read_json
from harness.benchmarks import registry
from harness.cli import main
from harness.plugins import load_plugins

HARNESS = Path(__file__).resolve().parents[1] / "harness"


@pytest.fixture
def plugin_run(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for k, v in tiny_plugin_env(tiny_model_dir, "tiny_plugin,plugin_benchmark").items():
        monkeypatch.setenv(k, v)
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    cfg = tiny_run_config(tiny_model_dir, sampling={"k": 2, "seeds": [0, 1]},
                          prompts={"iterations": ["embedded"], "per_iteration": 4, "heldout_size": 2},
                          evaluation={"benchmarks": ["win_rate_vs_base", "answer_words"],
                                      "answer_words": {"instructions": 2}})  # its own settings
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["run", "--base", str(path), "--iters", "1", "--out", str(out), "--no-progress"]) == 0
    return out


def test_a_plugin_benchmark_runs_and_is_tabulated_and_gated(plugin_run: Path, tmp_path: Path) -> None:
    load_plugins()
    assert "answer_words" in registry() and not any(
        "answer_words" in p.read_text() for p in HARNESS.rglob("*.py"))  # no harness file names it
    meta = read_json(plugin_run / "run.json")
    for t in (0, 1):
        assert meta["stages"][f"iter-{t}/eval/answer_words"]["state"] == "done"
        result = read_json(plugin_run / f"iter-{t}" / "eval" / "answer_words" / "results.json")
        assert result["provenance"]["iteration"] == t and len(result["metrics"]["answers"]) == 2
    table = leaderboard.build([plugin_run])
    (col,) = [c for c in table.columns if c[0] == "answer_words"]
    values = {r.iteration: table.cells[r, col].value for r in table.rows if (r, col) in table.cells}
    assert set(values) == {0, 1}
    assert "answer words (mean)" in leaderboard.to_markdown(table)
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps(gate.make_baseline(plugin_run)))
    ids = [m["id"] for m in json.loads(baseline.read_text())["metrics"]]
    assert "iter-1/answer_words/mean_words" in ids
    assert gate.check(plugin_run, baseline, out_dir=tmp_path / "gate")[0]
    moved = json.loads(baseline.read_text())  # the plug-in's number moved far beyond its noise
    for m in moved["metrics"]:
        if m["id"] == "iter-1/answer_words/mean_words":
            m["value"] += 100.0
    baseline.write_text(json.dumps(moved))
    assert not gate.check(plugin_run, baseline, out_dir=tmp_path / "gate2")[0]


def test_a_plugin_benchmark_has_its_eval_command(tmp_path: Path, tiny_model_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("SPPO_PLUGINS", "plugin_benchmark")
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    out = tmp_path / "eval"
    assert main(["eval", "answer_words", "--model", str(tiny_model_dir), "--dtype", "float32",
                 "--max-new-tokens", "4", "--out", str(out), "--json", "--no-progress"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    result = read_json(out / "results.json")
    assert result["benchmark"] == "answer_words" and len(result["metrics"]["answers"]) == 3
    assert metrics["mean_words"] == result["metrics"]["mean_words"]
    assert all(len(a.split()) <= 4 for a in result["metrics"]["answers"])  # (4 new tokens at most)


def test_an_unknown_benchmark_is_refused_before_any_work(tmp_path: Path, tiny_model_dir: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    cfg = {"name": "tiny", "model": {"source": str(tiny_model_dir)},
           "prompts": {"iterations": ["embedded"], "per_iteration": 4, "heldout_size": 2},
           "evaluation": {"benchmarks": ["win_rate_vs_base", "no_such_bench"]}, "ranker": "smollm-judge"}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", "--base", str(path), "--iters", "1", "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 2
    assert "evaluation.benchmarks: unknown benchmark(s) ['no_such_bench']" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_plugin_benchmarks_settings_are_its_own(tmp_path: Path, tiny_model_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    """Its config model checks ``evaluation.answer_words`` before any work, and a run stores it
    in full; without the plug-in loaded the section is an unknown key."""
    cfg = tiny_run_config(tiny_model_dir, evaluation={"benchmarks": ["answer_words"],
                                                      "answer_words": {"instructions": 9}})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    argv = ["run", "--base", str(path), "--iters", "1", "--out", str(tmp_path / "run"), "--no-progress"]
    monkeypatch.setenv("SPPO_PLUGINS", "plugin_benchmark")
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    assert main(argv) == 2
    assert "evaluation.answer_words: instructions: Input should be less than or equal to 3" in \
        capsys.readouterr().err
    monkeypatch.delenv("SPPO_PLUGINS")
    registry_without_plugin = {k: v for k, v in bench_registry._REGISTRY.items() if k != "answer_words"}
    monkeypatch.setattr(bench_registry, "_REGISTRY", registry_without_plugin)
    cfg["evaluation"]["benchmarks"] = []
    path.write_text(yaml.safe_dump(cfg))
    assert main(argv) == 2
    assert "evaluation.answer_words: unknown key: no registered benchmark of that name has settings" in \
        capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_documented_plugin_example_runs(tmp_path: Path, tiny_model_dir: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/benchmarks/README.md's example, executed as written: it registers a benchmark with
    settings, and its stage answers the configured number of instructions with the model."""
    from types import SimpleNamespace

    from harness.config import EvaluationConfig
    from harness.generate import Sampling
    from harness.models import load_model, load_tokenizer
    from harness.under_test.hf import TransformersModel

    doc = (HARNESS.parent / "docs" / "benchmarks" / "README.md").read_text()
    code = doc.split("## Adding a benchmark", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.setattr(bench_registry, "_REGISTRY", {k: v for k, v in bench_registry._REGISTRY.items()
                                                      if k != "answer_words"})
    exec(compile(code, "docs/benchmarks/README.md", "exec"), {"__name__": "doc_example"})
    bench = registry()["answer_words"]
    assert bench.config is not None and bench.config().instructions == 3
    model = TransformersModel(load_model(str(tiny_model_dir), "float32"), load_tokenizer(str(tiny_model_dir)),
                              progress=False)
    config = SimpleNamespace(evaluation=EvaluationConfig(answer_words={"instructions": 2}))
    ctx = SimpleNamespace(config=config, model=lambda t: model, sampling=lambda: Sampling((0,), 1.0, 1.0, 4),
                          eval_dir=lambda t, name: tmp_path / name, provenance=lambda t: {"iteration": t})
    assert bench.stage(ctx, 0)["mean_words"] >= 0
    result = read_json(tmp_path / "answer_words" / "results.json")
    assert result["provenance"] == {"iteration": 0, "n_examples": 2}
    assert result["metrics"]["mean_words_se"] is not None
