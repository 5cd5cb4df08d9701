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
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_named(case: Case, tmp_path: Path, tiny_model_dir: Path,
                            monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    argv = case.argv(tmp_path, tiny_model_dir, monkeypatch)
    before = {p for p in tmp_path.rglob("*")}
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert rc != 0, err
    assert len(lines) == 1, err
    assert re.search(case.message, lines[0]), lines[0]
    # Nothing half-written: no new files beyond a run.json recording the failed stage.
    new = {p for p in tmp_path.rglob("*") if p.is_file()} - before
    assert {p.name for p in new} <= {"run.json"}, sorted(map(str, new))


def test_the_catalogue_is_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30
