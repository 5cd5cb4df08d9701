"""The SPPO loop end to end on a tiny random model: artifact contract, resume, determinism."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import tiny_plugin_env, tiny_run_config

from harness.artifacts import read_json, read_jsonl
from harness.config import load_config
from harness.errors import RunStateError
from harness.pipeline import RunOptions, SPPORun
from harness.plugins import load_plugins

SECRET = "sk-test-NEVER-WRITE-ME-4242"
SECRET_VARS = ("OPENAI_API_KEY", "HF_TOKEN", "ANTHROPIC_API_KEY")


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Path]:
    # The ranker is a plugin so that the processes of --launcher accelerate stages have it too.
    env = pytest.MonkeyPatch()
    for k, v in tiny_plugin_env(tiny_model_dir).items():
        env.setenv(k, v)
    for var in SECRET_VARS:  # recognisable secrets that must never reach an artifact
        env.setenv(var, SECRET)
    load_plugins()
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_run_config(tiny_model_dir)))
    yield path
    env.undo()


def _run(config_path: Path, out: Path, resume: bool = False, iters: int = 2) -> SPPORun:
    run = SPPORun(load_config(str(config_path)),
                  RunOptions(iters=iters, out=out, resume=resume, progress=False))
    run.run()
    return run


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")
            if p.is_file() and p.name != "run.json"}


SCORED: list[tuple[list[str], list[list[str]]]] = []  # the finished run's ranker calls


@pytest.fixture(scope="module")
def finished_run(tiny_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from harness.rank.embedded import PMIRanker

    score = PMIRanker.score

    def spy(self: PMIRanker, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        SCORED.append((prompts, candidates))
        return score(self, prompts, candidates)

    out = tmp_path_factory.mktemp("runs") / "tiny-sppo"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(PMIRanker, "score", spy)
        _run(tiny_config, out)
    return out


def test_artifact_contract(finished_run: Path) -> None:
    root = finished_run
    meta = read_json(root / "run.json")
    assert meta["format"] == 1 and meta["config"]["name"] == "tiny"
    assert {"torch", "transformers", "python"} <= set(meta["packages"])
    assert meta["git_sha"]
    stages = [f"iter-{t}/{s}" for t in (1, 2) for s in
              ("generate", "rank", "probabilities", "train", "eval/win_rate_vs_base")]
    assert all(meta["stages"][s]["state"] == "done" for s in stages)
    train_prompts: list[set[str]] = []
    for t in (1, 2):
        d = root / f"iter-{t}"
        gens = read_jsonl(d / "generations.jsonl")
        assert len(gens) == 5
        for g in gens:
            assert {"prompt_id", "prompt", "responses", "generator", "sampling"} <= set(g)
            assert len(g["responses"]) == 3 and g["sampling"]["seeds"] == [0, 50, 100]
        scores = read_jsonl(d / "scores.jsonl")
        assert [s["prompt_id"] for s in scores] == [g["prompt_id"] for g in gens]
        assert all(len(s["scores"]) == 3 and s["ranker"] == "tiny-pmi" for s in scores)
        prefs = read_jsonl(d / "preferences.jsonl")
        for p, s, g in zip(prefs, scores, gens, strict=True):
            assert {"prompt_id", "prompt", "chosen", "rejected", "chosen_probs",
                    "chosen_probs_win", "chosen_probs_lose", "probability"} <= set(p)
            best = max(range(3), key=lambda i: (s["scores"][i], -i))
            assert p["chosen"] == g["responses"][best]
            assert len(p["probability"]) == 3
        ckpt = d / "checkpoint"
        assert (ckpt / "model.safetensors").is_file() and (ckpt / "config.json").is_file()
        assert (ckpt / "tokenizer_config.json").is_file()
        log = read_jsonl(d / "train_log.jsonl")
        assert len(log) == 2 and {"step", "loss", "lr", "grad_norm"} <= set(log[0])
        res = read_json(d / "eval" / "win_rate_vs_base" / "results.json")
        m, prov = res["metrics"], res["provenance"]
        assert m["n_total"] == 4 and m["n_wins"] + m["n_losses"] + m["n_ties"] == 4
        assert 0 <= m["win_rate"] <= 100 and m["standard_error"] >= 0
        assert {"judge", "baseline", "n_examples", "decoding", "profile", "packages"} <= set(prov)
        train_prompts.append({g["prompt_id"] for g in gens})
    heldout = {r["prompt_id"] for r in
               read_jsonl(root / "iter-0" / "eval" / "win_rate_vs_base" / "generations.jsonl")}
    assert not train_prompts[0] & train_prompts[1]  # disjoint iterations
    assert not (train_prompts[0] | train_prompts[1]) & heldout  # never train on held-out prompts
    # iteration 2 samples from iteration 1's checkpoint
    assert read_jsonl(root / "iter-2" / "generations.jsonl")[0]["generator"]["model"].endswith(
        "iter-1/checkpoint")
    table = (root / "leaderboard.md").read_text()
    assert "SPPO Iter1" in table and "SPPO Iter2" in table and "tiny-pmi" in table
    csv_lines = (root / "leaderboard.csv").read_text().splitlines()
    assert len(csv_lines) == 4  # header, base, Iter1, Iter2
    page = (root / "leaderboard.html").read_text()
    assert "SPPO Iter2" in page
    # a figure when the win rate moved; with the same value at both iterations the page says why not
    rates = {read_json(root / f"iter-{t}" / "eval" / "win_rate_vs_base" / "results.json")
             ["metrics"]["win_rate"] for t in (1, 2)}
    assert ("data:image/png;base64," in page) == (len(rates) > 1)
    unplotted = "not plotted: win rate vs base (%) [1]: the same value at every iteration"
    assert (unplotted in page) == (len(rates) == 1)
    assert not list(root.rglob(".*tmp-*"))  # no temporary leftovers
    assert not (root / ".lock").exists()


def test_an_independent_ranker_scores_the_base_once(finished_run: Path) -> None:
    """tiny-pmi scores each response on its own: the base's held-out answers are scored once, alone,
    and both iterations' win rates compare with those same scores."""
    base = read_jsonl(finished_run / "iter-0" / "eval" / "win_rate_vs_base" / "generations.jsonl")
    heldout = [b["prompt"] for b in base]
    calls = [c for p, c in SCORED if p == heldout]
    assert len(calls) == 3  # the base, then each iteration's checkpoint
    news = [read_jsonl(finished_run / f"iter-{t}" / "eval" / "win_rate_vs_base" / "generations.jsonl")
            for t in (1, 2)]
    assert calls == [[[r["response"]] for r in rows] for rows in (base, *news)]
    saved = read_json(finished_run / "iter-0" / "eval" / "win_rate_vs_base" / "base_scores.json")
    assert saved["ranker"] == "tiny-pmi" and saved["prompt_ids"] == [b["prompt_id"] for b in base]
    for t in (1, 2):
        rows = read_jsonl(finished_run / f"iter-{t}" / "eval" / "win_rate_vs_base" / "scores.jsonl")
        assert [r["base_score"] for r in rows] == saved["scores"]


def test_resume_of_finished_run_does_no_work(finished_run: Path, tiny_config: Path) -> None:
    before = _mtimes(finished_run)
    stages_before = read_json(finished_run / "run.json")["stages"]
    _run(tiny_config, finished_run, resume=True)
    after = _mtimes(finished_run)
    changed = {k for k in before if before[k] != after.get(k)
               and not k.startswith(("leaderboard.", "plots/"))}  # the report is rewritten
    assert changed == set()
    assert read_json(finished_run / "run.json")["stages"] == stages_before


def test_interrupted_stage_is_redone_alone(finished_run: Path, tiny_config: Path, tmp_path: Path) -> None:
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run, run_dir)
    meta = read_json(run_dir / "run.json")
    # A crash inside iteration 2's rank stage: state "running", no committed artifact.
    meta["stages"]["iter-2/rank"] = {"state": "running"}
    for later in ("probabilities", "train", "eval/win_rate_vs_base"):
        del meta["stages"][f"iter-2/{later}"]
    (run_dir / "run.json").write_text(json.dumps(meta))
    (run_dir / "iter-2" / "scores.jsonl").unlink()
    before = _mtimes(run_dir)
    _run(tiny_config, run_dir, resume=True)
    after = _mtimes(run_dir)
    redone = {k for k in before if before[k] != after[k]}
    assert "iter-2/generations.jsonl" not in redone and "iter-1/scores.jsonl" not in redone
    assert not any(k.startswith("iter-1/") for k in redone)
    # Deterministic stages reproduce the same bytes.
    assert (run_dir / "iter-2" / "scores.jsonl").read_bytes() == (
        finished_run / "iter-2" / "scores.jsonl").read_bytes()
    assert (run_dir / "iter-2" / "preferences.jsonl").read_bytes() == (
        finished_run / "iter-2" / "preferences.jsonl").read_bytes()


def test_same_seed_same_generations(finished_run: Path, tiny_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    _run(tiny_config, out, iters=1)
    for name in ("generations.jsonl", "scores.jsonl", "preferences.jsonl"):
        assert (out / "iter-1" / name).read_bytes() == (finished_run / "iter-1" / name).read_bytes()


def test_existing_run_without_resume_and_changed_config_are_refused(
    finished_run: Path, tiny_config: Path, tmp_path: Path
) -> None:
    with pytest.raises(RunStateError, match="--resume"):
        _run(tiny_config, finished_run)
    changed = tmp_path / "changed.yaml"
    cfg = yaml.safe_load(tiny_config.read_text())
    cfg["training"]["learning_rate"] = 0.5
    changed.write_text(yaml.safe_dump(cfg))
    with pytest.raises(RunStateError, match=r"training.learning_rate: 0.001 -> 0.5"):
        _run(changed, finished_run, resume=True)
    # a benchmark's settings are stored in full (defaults too), so changing one is seen as well
    stored = json.loads((finished_run / "run.json").read_text())["config"]["evaluation"]
    assert stored["mt_bench"] == {"judge": "gpt-4", "limit": None, "max_new_tokens": 1024}
    assert {"alpaca_eval", "arena_hard", "open_llm"} <= set(stored)
    cfg = yaml.safe_load(tiny_config.read_text())
    cfg["evaluation"] = {"mt_bench": {"max_new_tokens": 8}}  # (mt_bench does not even run here)
    changed.write_text(yaml.safe_dump(cfg))
    with pytest.raises(RunStateError, match=r"evaluation.mt_bench.max_new_tokens: 1024 -> 8"):
        _run(changed, finished_run, resume=True)


def test_live_lock_is_refused_and_a_dead_process_lock_taken_over(tmp_path: Path) -> None:
    """A preempted job's restart is just --resume: a lock whose process is gone from this host
    (or from before its last boot) is taken over with a message; a live one is refused; one from
    another host, or of the older pid-only format, needs --break-lock."""
    from harness.run_dir import RunDir, _holder

    rd, lock = RunDir(tmp_path), tmp_path / ".lock"
    me, said = _holder(), []
    lock.write_text(json.dumps(me))  # this very process: alive
    with pytest.raises(RunStateError, match=f"in use by process {os.getpid()}"), rd.lock(say=said.append):
        pass
    for held, why in (({**me, "pid": 999999999}, "which is no longer running"),
                      ({**me, "boot_id": "an-earlier-boot"}, "from before this host's last boot")):
        lock.write_text(json.dumps(held))
        with rd.lock(say=said.append):
            assert json.loads(lock.read_text()) == me  # now ours
        assert said.pop() == f"taking over the lock of process {held['pid']} on this host, {why}"
        assert not lock.exists()
    for held, where in (({**me, "host": "node-7", "pid": 999999999}, "host node-7"),
                        (999999999, "an unknown host (an older lock format)")):
        lock.write_text(json.dumps(held))
        refused = pytest.raises(RunStateError, match=f"on {re.escape(where)}.*--break-lock")
        with refused, rd.lock(say=said.append):
            pass
        assert lock.exists() and not said  # refused: nothing taken
        with rd.lock(break_lock=True, say=said.append):
            assert json.loads(lock.read_text()) == me
        assert said.pop().startswith("breaking the lock of process 999999999")


def test_accelerate_launcher_trains_in_separate_processes(tiny_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "launched"
    run = SPPORun(load_config(str(tiny_config)),
                  RunOptions(iters=1, out=out, progress=False, launcher="accelerate",
                             num_processes=2))
    run.run()
    stages = read_json(out / "run.json")["stages"]
    info = stages["iter-1/train"]
    assert info["state"] == "done" and info["processes"] == 2
    assert stages["iter-1/generate"]["processes"] == stages["iter-1/rank"]["processes"] == 2
    gens = read_jsonl(out / "iter-1" / "generations.jsonl")
    assert all(g["generator"]["processes"] == 2 and len(g["responses"]) == 3 for g in gens)
    # The sharded scores are the in-process ranker's, in prompt order.
    from harness.rank import get_ranker

    want = get_ranker("tiny-pmi").score([g["prompt"] for g in gens], [g["responses"] for g in gens])
    got = [r["scores"] for r in read_jsonl(out / "iter-1" / "scores.jsonl")]
    assert [len(r) for r in got] == [len(r) for r in want]
    # Other batch shapes reorder float sums (~1e-5 here); a misordered gather is off by ~1e-2.
    flat = [[x for row in rows for x in row] for rows in (got, want)]
    assert flat[0] == pytest.approx(flat[1], abs=5e-4)
    assert (out / "iter-1" / "checkpoint" / "model.safetensors").exists()
    log = read_jsonl(out / "iter-1" / "train_log.jsonl")
    assert [r["step"] for r in log] == list(range(1, info["steps"] + 1))
    assert [r["loss"] for r in log] == pytest.approx(info["losses"], rel=1e-5)


def test_no_secret_reaches_any_artifact(tiny_config: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose MT-Bench judge is an endpoint that needs the key: the key is sent with every
    request, and no file of the run holds it."""
    from openai_server import FakeOpenAI

    monkeypatch.setenv("SPPO_CACHE_DIR", str(tmp_path / "cache"))  # every judgment asked for
    with FakeOpenAI(reply=lambda messages: "Fine. Rating: [[6]]") as server:
        judge = tmp_path / "judge.yaml"
        judge.write_text(yaml.safe_dump({"model": "gpt-4", "base_url": server.url,
                                         "api_key_env": SECRET_VARS[0], "max_tokens": 16}))
        cfg = yaml.safe_load(tiny_config.read_text())
        cfg["evaluation"] = {"benchmarks": ["mt_bench"],
                             "mt_bench": {"judge": str(judge), "limit": 1, "max_new_tokens": 4}}
        path = tmp_path / "tiny.yaml"
        path.write_text(yaml.safe_dump(cfg))
        out = tmp_path / "run"
        _run(path, out, iters=1)
    # base and iteration 1, 8 questions x 2 turns each (equal requests are asked once)
    assert 16 <= len(server.requests) <= 32
    assert set(server.authorizations) == {f"Bearer {SECRET}"}
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 10
    leaked = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert not leaked
