"""Kill tests: a run is SIGKILLed inside a stage (at a crash point drawn at random), resumed, and
must end with the artifacts of an uninterrupted run with the same seed: the same bytes, nothing
duplicated, nothing lost, no temporary or partial file left."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import model_events
import pytest
import yaml
from conftest import tiny_plugin_env, tiny_run_config
from openai_server import FakeOpenAI, judge_config

# crash point -> (its stage, how many times the tiny run passes it); "<stage>/end" lies after the
# stage's work, before run.json records it done
POINTS = {"generate/chunk": ("iter-1/generate", 3), "rank/chunk": ("iter-1/rank", 3),
          "train/step": ("iter-1/train", 3), "iter-1/probabilities/end": ("iter-1/probabilities", 2),
          "iter-1/eval/win_rate_vs_base/end": ("iter-1/eval/win_rate_vs_base", 2)}
CHUNKED = {"generate/chunk": "generations.jsonl", "rank/chunk": "scores.jsonl"}
COMPARED = ("iter-1/generations.jsonl", "iter-1/scores.jsonl", "iter-1/preferences.jsonl",
            "iter-1/checkpoint/model.safetensors")


@pytest.fixture(scope="module")
def kill_config(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    # 6 prompts in generation batches of 2: 3 batches; ranking chunks of 2 prompts: 3 chunks;
    # 6 pairs in global batches of 2 over 1 epoch: 3 optimizer steps, the state saved after each
    cfg = tiny_run_config(tiny_model_dir, sampling={"batch_size": 2},
                          training={"global_batch_size": 2, "epochs": 1, "save_steps": 1},
                          prompts={"iterations": ["embedded"], "per_iteration": 6, "heldout_size": 2})
    path = tmp_path_factory.mktemp("kill") / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _harness(config: Path, out: Path, model_dir: Path, resume: bool = False,
             crash_at: str | None = None, cache: Path | None = None,
             eval_chunk: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **tiny_plugin_env(model_dir), "TINY_RANK_CHUNK": "2",
           **({"TINY_EVAL_CHUNK": str(eval_chunk)} if eval_chunk else {})}
    env.pop("SPPO_CRASH_AT", None)
    if crash_at:
        env["SPPO_CRASH_AT"] = crash_at
    if cache:
        env["SPPO_CACHE_DIR"] = str(cache)  # (the judgment cache: each run pays for itself)
    cmd = [sys.executable, "-m", "harness", "run", "--base", str(config), "--iters", "1",
           "--out", str(out), "--no-progress", "--yes", *(["--resume"] if resume else [])]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _files(root: Path) -> set[str]:
    skip = ("run.json", "leaderboard.", "plots/")
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and not str(p.relative_to(root)).startswith(skip)}


@pytest.fixture(scope="module")
def reference(kill_config: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    done = _harness(kill_config, out, tiny_model_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.parametrize("point", sorted(POINTS))
def test_killed_inside_a_stage_resumes_to_the_uninterrupted_result(
        point: str, reference: Path, kill_config: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    stage, passes = POINTS[point]
    n = random.Random(point).randint(1, passes - 1)  # a kill between two committed chunks
    out = tmp_path / "run"
    killed = _harness(kill_config, out, tiny_model_dir, crash_at=f"{point}:{n}")
    assert killed.returncode == -9, killed.stderr[-3000:]
    meta = json.loads((out / "run.json").read_text())
    assert meta["stages"][stage]["state"] == "running"  # killed inside the stage
    if point in CHUNKED:
        partial = out / "iter-1" / f"{CHUNKED[point]}.partial"
        rows = partial.read_text().splitlines()
        assert len(rows) == 2 * n and not (out / "iter-1" / CHUNKED[point]).exists()
    elif point == "train/step":
        assert json.loads((out / "iter-1" / "train_state" / "progress.json").read_text())["step"] == n
    dead = json.loads((out / ".lock").read_text())["pid"]
    resumed = _harness(kill_config, out, tiny_model_dir, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    if point == "train/step":  # (once: test_pipeline proves the lock rules; this, a real kill -9)
        # a preempted job's restart script needs only --resume: the dead process's lock is taken over
        assert f"taking over the lock of process {dead} on this host" in resumed.stderr
    for name in COMPARED:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    metrics = "iter-1/eval/win_rate_vs_base/results.json"  # (its provenance names the run folder)
    assert json.loads((out / metrics).read_text())["metrics"] == \
        json.loads((reference / metrics).read_text())["metrics"]
    assert _files(out) == _files(reference)  # nothing partial, temporary or duplicated is left
    stages = json.loads((out / "run.json").read_text())["stages"]
    if point in CHUNKED:
        assert stages[stage]["resumed_prompts"] == 2 * n  # the committed chunks were not redone
    elif point == "train/step":  # training went on from the saved step, with the uninterrupted losses
        assert stages[stage]["resumed_from_step"] == n
        assert stages[stage]["losses"] == json.loads((reference / "run.json").read_text())[
            "stages"][stage]["losses"]
        log = [json.loads(x) for x in (out / "iter-1" / "train_log.jsonl").read_text().splitlines()]
        ref_log = [json.loads(x) for x in (reference / "iter-1" / "train_log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log] == [1, 2, 3]
        assert [r["loss"] for r in log] == [r["loss"] for r in ref_log]
    assert all(s["state"] == "done" for s in stages.values())
    shutil.rmtree(out)


# benchmark stages -------------------------------------------------------------------------
# Iteration 0 passes these crash points first: MT-Bench answers (turn 1, turn 2: one chunk each),
# Arena-Hard answers (one chunk), then 16 MT-Bench judgments and 4 Arena-Hard ones, one at a time.
EVAL_POINTS = {
    "mt_bench answers": ("answer/chunk", 1, "iter-0/eval/mt_bench"),
    "arena_hard answers": ("answer/chunk", 3, "iter-0/eval/arena_hard"),
    "mt_bench judging": ("judge/judgment", random.Random(1).randint(1, 15), "iter-0/eval/mt_bench"),
    "arena_hard judging": ("judge/judgment", 16 + random.Random(2).randint(1, 3),
                           "iter-0/eval/arena_hard"),
}


@pytest.fixture(scope="module")
def judge_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(reply=model_events.fake_verdict) as srv:
        yield srv


@pytest.fixture(scope="module")
def eval_kill_config(kill_config: Path, judge_server: FakeOpenAI) -> Path:
    judge = judge_config(kill_config.parent, judge_server.url, "gpt-4", 64, (1, 1),
                         concurrency=1)  # one call in flight when killed
    run = yaml.safe_load(kill_config.read_text())
    run["training"]["save_steps"] = 0
    run["evaluation"] = {"benchmarks": ["mt_bench", "arena_hard"],
                         "mt_bench": {"judge": str(judge), "limit": 1, "max_new_tokens": 4},
                         "arena_hard": {"judge": str(judge), "limit": 2, "max_new_tokens": 4}}
    path = kill_config.parent / "tiny-eval.yaml"
    path.write_text(yaml.safe_dump(run))
    return path


CLOCK_KEYS = {"tstamp", "time_per_example", "preference_time_per_example", "preference_date",
              "seconds"}  # wall-clock readings, never equal


def _timeless(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _timeless(v) for k, v in obj.items() if k not in CLOCK_KEYS}
    return [_timeless(v) for v in obj] if isinstance(obj, list) else obj


def _close(a: object, b: object, rel: float = 1e-9) -> bool:
    """Equal, floats to ``rel`` (nested dicts and lists)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b, strict=True))
    return a == b


def _eval_files(root: Path) -> dict[str, object]:
    """Every benchmark file of the run: JSON without wall-clock readings, results.json's metrics
    (its provenance names the run folder), other text with the run folder's path masked."""
    out: dict[str, object] = {}
    for p in sorted(root.glob("iter-*/eval/**/*")):
        if not p.is_file():
            continue
        rel = str(p.relative_to(root))
        if p.suffix == ".jsonl":
            out[rel] = [_timeless(json.loads(x)) for x in p.read_text().splitlines()]
        elif p.name == "results.json":
            out[rel] = _timeless(json.loads(p.read_text())["metrics"])
        elif p.suffix == ".json":
            out[rel] = _timeless(json.loads(p.read_text()))
        else:
            out[rel] = p.read_bytes().replace(str(root).encode(), b"<run>")
    return out


@pytest.fixture(scope="module")
def eval_reference(eval_kill_config: Path, tiny_model_dir: Path, judge_server: FakeOpenAI,
                   tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    root = tmp_path_factory.mktemp("eval-ref")
    before = len(judge_server.requests)
    done = _harness(eval_kill_config, root / "run", tiny_model_dir, cache=root / "cache")
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "run", len(judge_server.requests) - before


@pytest.mark.parametrize("case", sorted(EVAL_POINTS))
def test_killed_inside_a_benchmark_resumes_without_paying_twice(
        case: str, eval_reference: tuple[Path, int], eval_kill_config: Path, tiny_model_dir: Path,
        judge_server: FakeOpenAI, tmp_path: Path) -> None:
    point, n, stage = EVAL_POINTS[case]
    reference, paid = eval_reference
    out, cache = tmp_path / "run", tmp_path / "cache"
    before = len(judge_server.requests)
    killed = _harness(eval_kill_config, out, tiny_model_dir, crash_at=f"{point}:{n}", cache=cache)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["stages"][stage]["state"] == "running"
    resumed = _harness(eval_kill_config, out, tiny_model_dir, resume=True, cache=cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(judge_server.requests) - before == paid  # no judge call was made twice
    if point == "answer/chunk":  # the committed chunk was reused, not answered again
        assert "answer(s) committed before are reused" in resumed.stderr
    assert _eval_files(out) == _eval_files(reference)
    assert _files(out) == _files(reference)  # nothing partial, temporary or duplicated is left
    assert all(s["state"] == "done" for s in json.loads((out / "run.json").read_text())["stages"].values())


# AlpacaEval (the embedded model judging: no paid call) and Open LLM (lm-eval on the tiny model),
# in chunks of 1: iteration 0 commits 2 chunks of AlpacaEval answers, 2 chunks of annotations, then
# 2 Open LLM tasks, one at a time.
LOCAL_EVAL_POINTS = {
    "alpaca_eval answers": ("answer/chunk:1", "iter-0/eval/alpaca_eval"),
    "alpaca_eval annotations": ("annotate/chunk:1", "iter-0/eval/alpaca_eval"),
    "open_llm tasks": ("open_llm/task:1", "iter-0/eval/open_llm"),
}


@pytest.fixture(scope="module")
def local_eval_config(kill_config: Path) -> Path:
    run = yaml.safe_load(kill_config.read_text())
    run["training"]["save_steps"] = 0
    run["evaluation"] = {
        "benchmarks": ["alpaca_eval", "open_llm"],
        "alpaca_eval": {"annotator": "local", "limit": 2, "decoding": {"max_new_tokens": 4}},
        "open_llm": {"tasks": ["truthfulqa_mc2", "winogrande"], "limit": 1, "batch_size": 2}}
    path = kill_config.parent / "tiny-local-eval.yaml"
    path.write_text(yaml.safe_dump(run))
    return path


@pytest.fixture(scope="module")
def local_eval_reference(local_eval_config: Path, tiny_model_dir: Path,
                         tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local-eval-ref") / "run"
    done = _harness(local_eval_config, out, tiny_model_dir, eval_chunk=1)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.parametrize("case", sorted(LOCAL_EVAL_POINTS))
def test_killed_inside_alpaca_eval_or_open_llm_resumes_with_committed_work_reused(
        case: str, local_eval_reference: Path, local_eval_config: Path, tiny_model_dir: Path,
        tmp_path: Path) -> None:
    point, stage = LOCAL_EVAL_POINTS[case]
    out = tmp_path / "run"
    killed = _harness(local_eval_config, out, tiny_model_dir, crash_at=point, eval_chunk=1)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["stages"][stage]["state"] == "running"
    alpaca, open_llm = out / "iter-0/eval/alpaca_eval", out / "iter-0/eval/open_llm"
    if case == "alpaca_eval answers":
        assert len((alpaca / "model_outputs.json.partial").read_text().splitlines()) == 1
        reused = "1 answer(s) committed before are reused"
    elif case == "alpaca_eval annotations":
        cache = alpaca / "annotations_cache.json"
        rows = json.loads(cache.read_text())
        assert len(rows) == 1 and not (alpaca / "annotations.json").exists()
        # marked, so that the resumed run shows which annotations it took from the cache
        cache.write_text(json.dumps([{**r, "preference_time_per_example": -1.0} for r in rows]))
        reused = None
    else:
        assert [json.loads(x)["task"] for x in
                (open_llm / "results.json.partial").read_text().splitlines()] == ["truthfulqa_mc2"]
        reused = "1 task(s) committed before are reused: truthfulqa_mc2"
    resumed = _harness(local_eval_config, out, tiny_model_dir, resume=True, eval_chunk=1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    if reused:
        assert reused in resumed.stderr
    else:
        times = [a["preference_time_per_example"]
                 for a in json.loads((alpaca / "annotations.json").read_text())]
        assert times[:1] == [-1.0] and min(times[1:]) > 0  # chunk 1 reused, chunk 2 judged
    got, want = _eval_files(out), _eval_files(local_eval_reference)
    if reused:
        assert got == want
    else:  # alpaca_eval's cache keeps 10 significant digits (pandas' to_json), so annotations
        # taken from it, and the win rates, match the uninterrupted ones to about 1e-10
        assert _close(got, want), (got, want)
    assert _files(out) == _files(local_eval_reference)  # nothing partial, temporary or duplicated
    assert all(s["state"] == "done" for s in json.loads((out / "run.json").read_text())["stages"].values())


def test_answers_are_committed_in_chunks_and_reused(tmp_path: Path) -> None:
    from harness.benchmarks.answers import answer_in_chunks
    from harness.judges.base import Decoding, JudgeRequest

    asked: list[list[str]] = []

    def chat(requests: list[JudgeRequest]) -> dict[str, str]:
        asked.append([r.id for r in requests])
        return {r.id: f"{r.messages[0]['content']}!" for r in requests}

    reqs = [JudgeRequest(f"q{i}", ({"role": "user", "content": f"say {i}"},), Decoding(0.0, 8))
            for i in range(5)]
    path = tmp_path / "answers.jsonl"
    assert answer_in_chunks(reqs, chat, path, chunk=2) == {f"q{i}": f"say {i}!" for i in range(5)}
    assert asked == [["q0", "q1"], ["q2", "q3"], ["q4"]]
    partial = tmp_path / "answers.jsonl.partial"
    assert len(partial.read_text().splitlines()) == 5
    asked.clear()
    lines = partial.read_text().splitlines()
    # q3's row torn by a crash (a torn row is always the last); q4's row kept, but q4 is asked
    # with other decoding below, so its saved reply no longer answers it
    partial.write_text("\n".join([*lines[:3], lines[4]]) + "\n" + lines[3][:9])
    longer = [*reqs[:4], JudgeRequest("q4", reqs[4].messages, Decoding(0.0, 16))]
    got = answer_in_chunks(longer, chat, path, chunk=2)
    assert asked == [["q2", "q3"], ["q4"]]  # the torn chunk, and a changed request, again
    assert got["q0"] == "say 0!" and len(got) == 5


def test_a_partial_file_torn_by_a_crash_keeps_its_whole_rows(tmp_path: Path) -> None:
    from harness.artifacts import append_jsonl, read_partial_jsonl
    from harness.errors import DataError

    path = tmp_path / "scores.jsonl.partial"
    append_jsonl(path, [{"prompt_id": "a", "scores": [1.0]}, {"prompt_id": "b\u2028", "scores": [2.0]}])
    with open(path, "a") as f:
        f.write('{"prompt_id": "c", "sco')  # the process died mid-append
    assert [r["prompt_id"] for r in read_partial_jsonl(path)] == ["a", "b\u2028"]
    append_jsonl(path, [{"prompt_id": "c", "scores": [3.0]}])  # the next chunk starts cleanly
    assert [r["prompt_id"] for r in read_partial_jsonl(path)] == ["a", "b\u2028", "c"]
    path.write_text('{"prompt_id": "a"}\nnot json\n')
    with pytest.raises(DataError, match=r"scores.jsonl.partial:2: corrupt partial file"):
        read_partial_jsonl(path)
    assert read_partial_jsonl(tmp_path / "none") == []


def test_a_full_disk_is_named_and_nothing_committed_is_lost(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from harness import artifacts
    from harness.errors import RunStateError

    with pytest.raises(RunStateError, match=r"/dev/full: cannot write \(No space left on device\)"):
        artifacts.append_jsonl(Path("/dev/full"), [{"a": 1}])
    target = tmp_path / "scores.jsonl"
    artifacts.write_jsonl(target, [{"v": 1}])

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(artifacts.os, "fsync", full)
    with pytest.raises(RunStateError, match=r"scores.jsonl: cannot write .* resume with --resume"):
        artifacts.write_jsonl(target, [{"v": 2}])
    monkeypatch.undo()
    assert artifacts.read_jsonl(target) == [{"v": 1}]  # the committed version is intact
    assert [p.name for p in tmp_path.iterdir()] == ["scores.jsonl"]  # no temporary file left
