"""The bad-input catalogue: every case goes through the CLI and must give a non-zero exit, one
``error:`` line naming the problem and where it is, and leave no partial artifact behind.

Most cases fail before any model is loaded; the few that need one use the tiny test model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import tiny_plugin_env

from harness.cli import main

TINY = {
    "name": "tiny",
    "sampling": {"k": 2, "seeds": [0, 1], "max_new_tokens": 4, "batch_size": 4,
                 "dtype": "float32"},
    "training": {"learning_rate": 1e-3, "global_batch_size": 4, "per_device_batch_size": 2,
                 "max_length": 64, "max_prompt_length": 48, "dtype": "float32"},
    "prompts": {"iterations": ["embedded"], "per_iteration": 4, "heldout_size": 2},
    "evaluation": {"benchmarks": ["win_rate_vs_base"]},
    "ranker": "smollm-judge",
}


@dataclass
class Case:
    name: str
    # (tmp dir, tiny model dir) -> argv; may write files and set the environment.
    argv: Callable[[Path, Path, pytest.MonkeyPatch], list[str]]
    message: str  # a regular expression the error line must match


def _cfg(tmp: Path, model: Path, **edits) -> str:
    cfg = json.loads(json.dumps({**TINY, "model": {"source": str(model)}}))
    for dotted, value in edits.items():
        node = cfg
        *path, last = dotted.split(".")
        for key in path:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    p = tmp / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


def _run(tmp: Path, model: Path, *extra: str, **edits) -> list[str]:
    return ["run", "--base", _cfg(tmp, model, **edits), "--iters", "1", "--out", str(tmp / "run"),
            "--no-progress", *extra]


def _file(tmp: Path, name: str, data: bytes) -> str:
    p = tmp / name
    p.write_bytes(data)
    return str(p)


def _prompts(tmp: Path, model: Path, data: bytes, name: str = "p.jsonl") -> list[str]:
    return _run(tmp, model, "--prompts", _file(tmp, name, data))


def _existing_run(tmp: Path, model: Path, run_json: str) -> None:
    (tmp / "run").mkdir()
    (tmp / "run" / "run.json").write_text(run_json)


GOOD_ROWS = b"".join(json.dumps({"prompt": f"Say {w}."}).encode() + b"\n"
                     for w in ("hi", "yes", "no", "ok", "bye"))

CASES = [
    # configuration
    Case("malformed YAML", lambda t, m, e: ["run", "--base", _file(t, "c.yaml", b"model: [x\n")],
         r"c\.yaml.*malformed YAML"),
    Case("unknown base model", lambda t, m, e: ["run", "--base", "gpt-17"],
         r"unknown base .*gpt-17.*smollm2-135m"),
    Case("unknown config key", lambda t, m, e: _run(t, m, **{"training.lerning_rate": 1}),
         r"training\.lerning_rate: unknown key"),
    Case("wrong type", lambda t, m, e: _run(t, m, **{"training.epochs": "many"}),
         r"training\.epochs"),
    Case("K < 2", lambda t, m, e: _run(t, m, **{"sampling.k": 1, "sampling.seeds": [0]}),
         r"sampling\.k"),
    Case("seeds do not match K", lambda t, m, e: _run(t, m, **{"sampling.k": 3}),
         r"seeds has 2 entries but k = 3"),
    Case("prompt limit not below length limit",
         lambda t, m, e: _run(t, m, **{"training.max_prompt_length": 64}),
         r"max_prompt_length must be smaller than max_length"),
    Case("unknown loss", lambda t, m, e: _run(t, m, **{"training.loss": "magic"}),
         r"training\.loss"),
    Case("unknown trainer", lambda t, m, e: _run(t, m, "--trainer", "deepmagic"),
         r"unknown trainer 'deepmagic'.*native, trl"),
    Case("unknown ranker", lambda t, m, e: _run(t, m, "--ranker", "oracle"),
         r"unknown ranker 'oracle'"),
    Case("PairRM directory missing", lambda t, m, e: _run(t, m, "--ranker", "pairrm:/no/such/pairrm"),
         r"ranker pairrm:/no/such/pairrm: no such directory"),
    Case("judge ranker without its API key",
         lambda t, m, e: (e.delenv("OPENAI_API_KEY", raising=False),
                          _run(t, m, "--ranker", "judge:gpt-4o-mini"))[1],
         r"set the environment variable OPENAI_API_KEY"),
    Case("unknown judge", lambda t, m, e: _run(t, m, "--ranker", "judge:oracle-9000"),
         r"unknown judge 'oracle-9000'"),
    Case("zero iterations", lambda t, m, e: ["run", "--base", _cfg(t, m), "--iters", "0"],
         r"--iters must be at least 1"),
    Case("missing model path", lambda t, m, e: _run(t, t / "no-such-model"),
         r"no-such-model': no such checkpoint directory"),
    Case("plugin that does not import",
         lambda t, m, e: (e.setenv("SPPO_PLUGINS", "no_such_plugin_mod"), _run(t, m))[1],
         r"SPPO_PLUGINS: cannot import 'no_such_plugin_mod'"),
    # prompts
    Case("empty prompt file", lambda t, m, e: _prompts(t, m, b""), r"p\.jsonl: no prompts"),
    Case("non-UTF-8 prompt file", lambda t, m, e: _prompts(t, m, b'{"prompt": "caf\xe9"}\n'),
         r"p\.jsonl.*UTF-8"),
    Case("truncated JSONL (crash mid-line)",
         lambda t, m, e: _prompts(t, m, GOOD_ROWS + b'{"prompt": "Say th'), r"p\.jsonl:6: invalid JSON"),
    Case("prompt column missing", lambda t, m, e: _prompts(t, m, b'{"text": "hi"}\n'),
         r"p\.jsonl: row 0: missing or empty 'prompt' field"),
    Case("duplicate prompt ids",
         lambda t, m, e: _prompts(t, m, b'{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n'),
         r"p\.jsonl.*duplicate.*'a'"),
    Case("missing prompt file", lambda t, m, e: _run(t, m, "--prompts", str(t / "nope.jsonl")),
         r"nope\.jsonl"),
    Case("prompt longer than the limit",
         lambda t, m, e: _prompts(t, m, json.dumps({"prompt": "word " * 200}).encode() + b"\n"
                                  + GOOD_ROWS),
         r"more than training\.max_prompt_length=48"),
    # distributed launch
    Case("zero processes", lambda t, m, e: _run(t, m, "--launcher", "accelerate",
                                                "--num-processes", "0"),
         r"--num-processes must be at least 1"),
    Case("batch not divisible by processes",
         lambda t, m, e: _run(t, m, "--launcher", "accelerate", "--num-processes", "3"),
         r"global_batch_size \(4\) must be a multiple of per_device_batch_size × --num-processes"),
    Case("unknown accelerate config",
         lambda t, m, e: _run(t, m, "--launcher", "accelerate", "--accelerate-config", "zero9"),
         r"accelerate config 'zero9'"),
    # run directories
    Case("existing run without --resume",
         lambda t, m, e: (_existing_run(t, m, "{}"), _run(t, m))[1],
         r"already holds a run; pass --resume"),
    Case("corrupt run.json on resume",
         lambda t, m, e: (_existing_run(t, m, '{"config": {"na'), _run(t, m, "--resume"))[1],
         r"run\.json"),
    # benchmarks and reporting
    Case("unknown benchmark in the config",
         lambda t, m, e: _run(t, m, **{"evaluation.benchmarks": ["win_rate_vs_base", "alpacaeval"]}),
         r"evaluation\.benchmarks: unknown benchmark\(s\) \['alpacaeval'\]"),
    Case("settings of a benchmark that does not exist",
         lambda t, m, e: _run(t, m, **{"evaluation.mtbench": {"limit": 1}}),
         r"evaluation\.mtbench: unknown key: no registered benchmark of that name has settings"),
    Case("a benchmark setting out of range",
         lambda t, m, e: _run(t, m, **{"evaluation.mt_bench.limit": 0}),
         r"evaluation\.mt_bench: limit: Input should be greater than or equal to 1"),
    Case("a benchmark setting that does not exist",
         lambda t, m, e: _run(t, m, **{"evaluation.arena_hard.judges": "gpt-4"}),
         r"evaluation\.arena_hard: judges: unknown key"),
    Case("Open LLM task of the other version in the config",
         lambda t, m, e: _run(t, m, **{"evaluation.benchmarks": ["open_llm"],
                                       "evaluation.open_llm.tasks": ["ifeval"]}),
         r"ifeval"),
    Case("unknown Open LLM task",
         lambda t, m, e: ["eval", "open_llm", "--model", str(m), "--tasks", "hellaswagg"],
         r"hellaswagg"),
    Case("unknown AlpacaEval annotator",
         lambda t, m, e: ["eval", "alpaca_eval", "--model", str(m), "--annotator", "gpt-9"],
         r"gpt-9"),
    Case("missing API key for the official annotator",
         lambda t, m, e: (e.delenv("OPENAI_API_KEY", raising=False),
                          ["eval", "alpaca_eval", "--model", str(m)])[1],
         r"OPENAI_API_KEY"),
    Case("gate without its baseline",
         lambda t, m, e: (_existing_run(t, m, "{}"),
                          ["check", str(t / "run"), "--baseline", str(t / "b.json")])[1],
         r"b\.json"),
    Case("leaderboard of a directory that is no run",
         lambda t, m, e: ["leaderboard", str(t)], r"run\.json"),
    Case("run directory from an incompatible version",
         lambda t, m, e: (_existing_run(t, m, '{"format": 99}'),
                          ["card", str(t / "run"), "--iter", "1"])[1],
         r"run\.json: run format 99, this harness reads format 1"),
    Case("checksum mismatch on benchmark data",
         lambda t, m, e: (_tampered_mirror(t, e, "mt_bench/question.jsonl"),
                          ["eval", "mt_bench", "--model", str(m), "--limit", "1", "--dry-run",
                           "--out", str(t / "eval"), "--no-progress"])[1],
         r"sha256 mismatch for mt_bench/question\.jsonl"),
    Case("judgment file with a row that cannot be read",
         lambda t, m, e: ["eval", "mt_bench", "--from-judgments",
                          _file(t, "j.jsonl", b'{"question_id": 81, "model": "m", "judgment": "?"}\n')],
         r"j\.jsonl:1: a single-mode judgment row needs \['score', 'turn'\]"),
    Case("model name that escapes the output folder",
         lambda t, m, e: ["eval", "mt_bench", "--model", str(m), "--name", "../../escaped", "--dry-run",
                          "--out", str(t / "eval")],
         r"--name '\.\./\.\./escaped' is not a safe name"),
]


def _tampered_mirror(tmp: Path, env: pytest.MonkeyPatch, relpath: str) -> None:
    """A data mirror whose copy of ``relpath`` has one byte changed."""
    from harness import datafiles

    original = datafiles.fetch(relpath).read_bytes()
    copy = tmp / "mirror" / relpath
    copy.parent.mkdir(parents=True)
    copy.write_bytes(original.replace(b"a", b"e", 1))
    env.setenv("SPPO_DATA_DIR", str(tmp / "mirror"))


# A finished one-iteration run, copied, its stages from one on marked not done and one of its
# files damaged, then resumed: the damage must be named before any stage builds on it.
STAGES = ("iter-1/generate", "iter-1/rank", "iter-1/probabilities", "iter-1/train")


@dataclass
class Damage:
    name: str
    redo_from: str  # the first stage run again on resume
    file: str  # in iter-1/
    damage: Callable[[list[dict]], list[dict] | bytes]  # its rows -> new rows or raw bytes
    message: str


def _set(row: dict, **kv) -> dict:
    return {**row, **kv}


RESUME_CASES = [
    Damage("empty responses", "iter-1/rank", "generations.jsonl",
           lambda rows: [_set(rows[0], responses=[]), *rows[1:]],
           r"generations\.jsonl:1: prompt .*: expected k = 2 responses \(strings\), found \[\]"),
    Damage("NaN ranker score", "iter-1/probabilities", "scores.jsonl",
           lambda rows: ("".join(json.dumps(_set(r, scores=[r["scores"][0], float("nan")])) + "\n"
                                 for r in rows)).encode(),
           r"scores\.jsonl: prompt .*: score 1 is nan, expected a finite number"),
    Damage("missing ranker scores", "iter-1/probabilities", "scores.jsonl", lambda rows: rows[:-1],
           r"scores\.jsonl: no scores for prompt"),
    Damage("fewer scores than responses", "iter-1/probabilities", "scores.jsonl",
           lambda rows: [_set(rows[0], scores=rows[0]["scores"][:1]), *rows[1:]],
           r"scores\.jsonl: prompt .*: 2 responses but 1 scores"),
    Damage("scores file torn by a crash", "iter-1/probabilities", "scores.jsonl",
           lambda rows: (json.dumps(rows[0]) + "\n" + json.dumps(rows[1])[:15]).encode(),
           r"scores\.jsonl:2: invalid JSON"),
    Damage("probability file inconsistent with its scores", "iter-1/train", "preferences.jsonl",
           lambda rows: [*rows[:-1], _set(rows[-1], chosen_probs=0.99)],
           r"preferences\.jsonl:4: prompt .*: chosen_probs is 0\.99, but its scores give"),
    Damage("probability file missing a prompt", "iter-1/train", "preferences.jsonl",
           lambda rows: rows[1:], r"preferences\.jsonl: its prompts are not the 4 generated"),
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("finished")
    cfg = root / "cfg.yaml"
    training = {**TINY["training"], "max_length": 256, "max_prompt_length": 192}
    cfg.write_text(yaml.safe_dump({**TINY, "model": {"source": str(tiny_model_dir)}, "ranker": "tiny-pmi",
                                   "training": training, "evaluation": {"benchmarks": []}}))
    with pytest.MonkeyPatch.context() as env:
        for k, v in tiny_plugin_env(tiny_model_dir).items():  # the tiny model as ranker
            env.setenv(k, v)
        assert main(["run", "--base", str(cfg), "--iters", "1", "--out", str(root / "run"),
                     "--no-progress"]) == 0
    return cfg, root / "run"


def _fails_named(argv: list[str], message: str, tmp: Path, capsys: pytest.CaptureFixture) -> None:
    before = {p for p in tmp.rglob("*")}
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert rc != 0, err
    assert len(lines) == 1, err
    assert re.search(message, lines[0]), lines[0]
    # Nothing half-written: no new files beyond a run.json recording the failed stage.
    new = {p for p in tmp.rglob("*") if p.is_file()} - before
    assert {p.name for p in new} <= {"run.json"}, sorted(map(str, new))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_named(case: Case, tmp_path: Path, tiny_model_dir: Path, fresh_cache: Path,
                            monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    _fails_named(case.argv(tmp_path, tiny_model_dir, monkeypatch), case.message, tmp_path, capsys)


@pytest.mark.parametrize("case", RESUME_CASES, ids=[c.name for c in RESUME_CASES])
def test_damaged_run_is_named_on_resume(case: Damage, finished_run: tuple[Path, Path], tmp_path: Path,
                                        tiny_plugin: None, capsys: pytest.CaptureFixture) -> None:
    import shutil

    cfg, run = finished_run
    out = shutil.copytree(run, tmp_path / "run")
    meta = json.loads((out / "run.json").read_text())
    for stage in STAGES[STAGES.index(case.redo_from):]:
        del meta["stages"][stage]
    (out / "run.json").write_text(json.dumps(meta))
    path = out / "iter-1" / case.file
    damaged = case.damage([json.loads(x) for x in path.read_text().splitlines()])
    data = damaged if isinstance(damaged, bytes) else "".join(json.dumps(r) + "\n" for r in damaged).encode()
    path.write_bytes(data)
    _fails_named(["run", "--base", str(cfg), "--iters", "1", "--out", str(out), "--no-progress",
                  "--resume"], case.message, tmp_path, capsys)
    assert path.read_bytes() == data  # the evidence is left as it was found

