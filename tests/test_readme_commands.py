"""The README's commands that CI's smoke run does not run, run here, taken from README.md itself.

- The paper's recipe on GPUs (``run --base mistral-7b --iters 3``) needs the hub and a GPU; with
  ``--dry-run`` (the README's line before it) it runs its pre-flight checks and prints its plan,
  which must say what the README says the recipe is, and without ``OPENAI_API_KEY`` it must
  refuse before any work.
- "Evaluating one checkpoint": the four lines as written, the official annotator and judges
  reached through the official clients at a fake OpenAI server (``OPENAI_BASE_URL``,
  ``OPENAI_CLIENT_CONFIG_PATH``), a tiny checkpoint at ``runs/x/iter-3/checkpoint``, and small
  limits appended (the only change to each line); the constrained-judge line likewise.
- ``leaderboard`` and ``card`` verbatim over two small runs in ``runs/a`` and ``runs/b``;
  ``agreement --ranker smollm-judge ...`` verbatim.

The fresh-machine command, the smoke run and ``check`` (with ``runs/ci-smoke`` for ``runs/a``)
are CI's own steps (``.ci/run``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from openai_server import FakeOpenAI, last_content
from test_readme import README, _harness_lines

KEY = "sk-readme-test-0123456789"


def _readme_line(*words: str, exact: bool = False) -> list[str]:
    """The one README command whose argv (after ``python -m harness``) starts with ``words`` (is
    ``words``, if ``exact``)."""
    found = [argv for argv in (shlex.split(x)[3:] for x in _harness_lines())
             if (argv == list(words) if exact else argv[:len(words)] == list(words))]
    assert len(found) == 1, (words, found)
    return found[0]


def _harness(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return subprocess.run([sys.executable, "-m", "harness", *argv], cwd=cwd, env={**base, **env},
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)


def test_the_gpu_recipe_plans_what_the_readme_says(tmp_path: Path) -> None:
    recipe = ("run", "--base", "mistral-7b", "--iters", "3")
    argv, dry = _readme_line(*recipe, exact=True), _readme_line(*recipe, "--dry-run", exact=True)
    refused = _harness(argv, tmp_path, {})
    assert refused.returncode == 2 and "set OPENAI_API_KEY" in refused.stderr, refused.stderr[-2000:]
    planned = _harness(dry, tmp_path, {"OPENAI_API_KEY": KEY})
    assert planned.returncode == 0, planned.stderr[-3000:]
    assert list(tmp_path.iterdir()) == [], "a dry run wrote files"
    plan = planned.stdout
    assert KEY not in plan + planned.stderr
    # the README's description of the recipe, as the plan states it
    prose = README.read_text()
    for claim in ("Mistral-7B-Instruct-v0.2", "UCLA-AGI/data-mistral-7b-instruct-sppo-iter{1,2,3}",
                  "K = 5 samples", "0/50/100/150/200", "T 0.7", "top-p 0.9", "2048 new tokens",
                  "RMSprop at lr 5e-7", "β = 0.001", "global batch 64", "one epoch", "bf16"):
        assert claim in prose, f"the README no longer says {claim!r}; update this test with it"
    assert "base model: mistralai/Mistral-7B-Instruct-v0.2, bfloat16" in plan
    stages = re.findall(r"^  (iter-\d+/\S+)\s+\[to run\] (.*)$", plan, re.M)
    names = [s for s, _ in stages]
    evals = ["eval/win_rate_vs_base", "eval/alpaca_eval", "eval/mt_bench", "eval/arena_hard",
             "eval/open_llm"]
    assert names == [f"iter-0/{e}" for e in evals] + [
        f"iter-{t}/{s}" for t in (1, 2, 3) for s in ("generate", "rank", "probabilities", "train", *evals)]
    detail = dict(stages)
    for t in (1, 2, 3):
        assert (f"5 samples per prompt of hf:UCLA-AGI/data-mistral-7b-instruct-sppo-iter{t}:prompt "
                "from ") in detail[f"iter-{t}/generate"]
        assert ("seeds [0, 50, 100, 150, 200], temperature 0.7, top_p 0.9, max_new_tokens 2048"
                in detail[f"iter-{t}/generate"])
        assert detail[f"iter-{t}/rank"] == "ranker pairrm"
        train = detail[f"iter-{t}/train"]
        assert train.startswith(f"trainer native, reference iter-{t - 1}: loss sppo, layout official")
        for setting in ("optimizer rmsprop", "learning_rate 5e-07", "beta 0.001",
                        "global_batch_size 64", "epochs 1.0", "dtype bfloat16"):
            assert setting in train, (setting, train)
        assert "annotator weighted_alpaca_eval_gpt4_turbo" in detail[f"iter-{t}/eval/alpaca_eval"]
        assert "judge gpt-4" in detail[f"iter-{t}/eval/mt_bench"]
        assert "version v0.1" in detail[f"iter-{t}/eval/arena_hard"]


def _official_judges(messages: list[dict]) -> str | dict:
    """MT-Bench's GPT-4 rates 7, Arena-Hard's judge says A>B; AlpacaEval's annotator answers one
    token, 'm', with 'M' second among its log-probabilities."""
    everything = " ".join(str(m.get("content")) for m in messages)
    if "[[rating]]" in everything:
        return "The answer is fine. Rating: [[7]]"
    if "[[A>>B]]" in everything:
        return "My final verdict is: [[A>B]]"
    assert "Output (a)" in last_content({"messages": messages}) or "model_identifier" in everything
    return {"content": "m", "top_logprobs": [[("m", -0.25), ("M", -1.5)]]}


@pytest.fixture
def checkpoint_dir(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A working folder holding the README's ``runs/x/iter-3/checkpoint`` (the tiny model)."""
    ckpt = tmp_path / "runs" / "x" / "iter-3" / "checkpoint"
    ckpt.parent.mkdir(parents=True)
    ckpt.symlink_to(tiny_model_dir, target_is_directory=True)
    return tmp_path


LIMITS = {"alpaca_eval": ["--limit", "2", "--max-new-tokens", "8"],
          "mt_bench": ["--limit", "1", "--max-new-tokens", "8"],
          "arena_hard": ["--limit", "1", "--max-new-tokens", "8"],
          "open_llm": ["--limit", "1"]}


@pytest.mark.parametrize("bench", sorted(LIMITS))
def test_evaluating_one_checkpoint_runs_as_written(bench: str, checkpoint_dir: Path) -> None:
    argv = _readme_line("eval", bench, "--model", "runs/x/iter-3/checkpoint")
    with FakeOpenAI(reply=_official_judges) as server:
        clients = checkpoint_dir / "clients.yaml"
        clients.write_text(yaml.safe_dump({"default": [{"api_key": KEY, "base_url": server.url}]}))
        env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.url,
               "OPENAI_CLIENT_CONFIG_PATH": str(clients),
               "SPPO_CACHE_DIR": str(checkpoint_dir / "cache")}
        done = _harness([*argv, *LIMITS[bench], "--json", "--no-progress"], checkpoint_dir, env)
        assert done.returncode == 0, done.stderr[-3000:]
        requests = list(server.requests)
    metrics = json.loads(done.stdout)
    results = [p for p in checkpoint_dir.rglob("results.json") if "cache" not in p.parts]
    assert len(results) == 1, results
    stored = json.loads(results[0].read_text())["metrics"]
    shared = sorted(metrics.keys() & stored.keys())  # --json prints what is stored, flattened
    assert len(shared) >= 3 and all(stored[k] == metrics[k] for k in shared), shared
    assert KEY not in results[0].read_text() + done.stderr
    models = {r.get("model") for r in requests}
    if bench == "mt_bench":  # FastChat's single grading by GPT-4: every rating parsed, 7
        assert models == {"gpt-4"} and len(requests) == 16  # 8 questions x 2 turns at --limit 1
        assert metrics["score"] == pytest.approx(7.0) and metrics["parse_failures"] == 0
    elif bench == "arena_hard":  # v0.1's judge, both orders; A>B in each is one win, one loss
        assert models == {"gpt-4-1106-preview"} and len(requests) == 2
        assert metrics["score"] == pytest.approx(50.0)
    elif bench == "alpaca_eval":  # alpaca_eval's own client: one token, top-5 log-probabilities
        assert models == {"gpt-4-1106-preview"} and len(requests) == 2
        assert all(r["max_tokens"] == 1 and r["top_logprobs"] == 5 for r in requests)
        prefs = [float(a["preference"]) for a in json.loads(
            next(checkpoint_dir.rglob("annotations.json")).read_text())]
        assert len(prefs) == 2 and all(1.0 < p < 2.0 for p in prefs)
        assert metrics["win_rate"] == pytest.approx(100 * sum(p - 1 for p in prefs) / 2)
    else:  # lm-eval, the v1 suite; no judge
        assert requests == []
        assert {"arc_challenge", "mmlu", "truthfulqa_mc2", "winogrande", "gsm8k"} <= set(metrics)


def test_agreement_runs_as_written(tmp_path: Path) -> None:
    argv = _readme_line("agreement")
    done = _harness([*argv, "--json", "--no-progress"], tmp_path,
                    {"SPPO_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout)
    assert got["n"] == int(argv[argv.index("--limit") + 1]) and got["ranker"].startswith("smollm-judge")
    lo, hi = got["agreement_ci95"]
    assert 0 <= lo <= got["agreement"] <= hi <= 1


def test_the_constrained_judge_line_runs_as_written(tmp_path: Path) -> None:
    """``eval mt_bench --model embedded:smollm2-135m --judge smollm2-135m-constrained --limit 1``,
    answers cut to 8 new tokens: every one of the 16 judgments is an official rating."""
    argv = _readme_line("eval", "mt_bench", "--model", "embedded:smollm2-135m")
    done = _harness([*argv, "--max-new-tokens", "8", "--json", "--no-progress"], tmp_path,
                    {"SPPO_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout)
    assert metrics["parse_failures"] == 0 and 1.0 <= metrics["score"] <= 10.0
    judgments = [json.loads(x) for f in tmp_path.rglob("model_judgment/*.jsonl")
                 for x in f.read_text().splitlines()]
    assert len(judgments) == 16 and all(re.search(r"\[\[\d+\]\]", j["judgment"]) for j in judgments)


def test_the_reporting_lines_run_as_written(tmp_path: Path, tiny_model_dir: Path) -> None:
    """``leaderboard runs/a runs/b --published`` and ``card runs/a --iter 2`` over two small runs
    (``check``'s line is CI's gate, with runs/ci-smoke for runs/a)."""
    from test_reporting import _ae, _wr, make_run

    make_run(tmp_path / "runs" / "a", {0: [_ae(40.0, 5.0)], 1: [_wr(60.0, 5.0), _ae(48.0, 5.0)],
                                       2: [_wr(70.0, 5.0), _ae(55.0, 5.0)]})
    make_run(tmp_path / "runs" / "b", {0: [_ae(40.0, 5.0)], 1: [_wr(52.0, 5.0), _ae(45.0, 5.0)]})
    shutil.copytree(tiny_model_dir, tmp_path / "runs" / "a" / "iter-2" / "checkpoint")
    env = {"SPPO_CACHE_DIR": str(tmp_path / "cache")}
    table = _harness(_readme_line("leaderboard"), tmp_path, env)
    assert table.returncode == 0, table.stderr[-3000:]
    for row in ("a", "b", "SPPO Iter2", "55.00"):
        assert row in table.stdout, row
    assert re.search(r"published", table.stdout, re.I), table.stdout[-2000:]
    card = _harness(_readme_line("card"), tmp_path, env)
    assert card.returncode == 0, card.stderr[-3000:]
    text = (tmp_path / "runs" / "a" / "iter-2" / "checkpoint" / "README.md").read_text()
    assert "55.0" in text and "model-index" in text
