"""One model under test per checkpoint (the transformers backend; tests/test_vllm.py does vLLM).

A whole run on the tiny model through every benchmark builds exactly one model under test for
the base and for each iteration's checkpoint, and closes it before training; ``harness eval``
builds exactly one. Judges (the embedded local judge, a fake OpenAI endpoint) are other models
and are counted apart.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import model_events
import pytest
import yaml
from conftest import tiny_run_config
from openai_server import FakeOpenAI, judge_config

from harness.cli import main
from harness.under_test.hf import TransformersModel

BENCHMARKS = ["win_rate_vs_base", "alpaca_eval", "mt_bench", "arena_hard", "open_llm"]


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    return model_events.record(monkeypatch, TransformersModel)


@pytest.fixture
def judge(tmp_path: Path) -> Any:
    with FakeOpenAI(reply=model_events.fake_verdict) as srv:
        yield judge_config(tmp_path, srv.url, "gpt-4", 64, (1, 1))


def test_a_run_builds_one_model_per_checkpoint(tiny_model_dir: Path, tmp_path: Path, judge: Path,
                                               events: list[tuple[str, str]]) -> None:
    cfg = tiny_run_config(
        tiny_model_dir, sampling={"max_new_tokens": 4}, ranker="smollm-judge",
        prompts={"per_iteration": 4, "heldout_size": 2},
        evaluation={"benchmarks": BENCHMARKS,
                    "alpaca_eval": {"annotator": "local", "limit": 1},
                    "mt_bench": {"judge": str(judge), "limit": 1, "max_new_tokens": 4},
                    "arena_hard": {"judge": str(judge), "limit": 1, "max_new_tokens": 4},
                    "open_llm": {"limit": 1, "tasks": ["arc_challenge"], "batch_size": 2}})
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["run", "--base", str(config), "--iters", "2", "--out", str(out), "--no-progress",
                 "--generator", "transformers", "--yes"]) == 0
    checkpoints = [str(tiny_model_dir), *(str(out / f"iter-{t}" / "checkpoint") for t in (1, 2))]
    for t in range(3):  # every benchmark ran on every checkpoint
        for bench in BENCHMARKS[1:]:
            assert (out / f"iter-{t}" / "eval" / bench / "results.json").is_file(), (t, bench)
    model_events.assert_one_per_checkpoint(events, checkpoints)
    judges = {p for kind, p in events if kind == "open"} - set(checkpoints)  # the local AlpacaEval judge
    # loaded once per checkpoint's evaluation and closed before each training
    assert judges and all(sum(e == ("open", p) for e in events) == 3 for p in judges), events
    loaded: set[str] = set()
    for kind, path in events:
        if path in judges and kind in ("open", "close"):
            (loaded.add if kind == "open" else loaded.discard)(path)
        assert not (kind == "train" and loaded), f"training started with judge {loaded} loaded: {events}"


@pytest.mark.parametrize("bench", ["open_llm", "mt_bench", "alpaca_eval"])
def test_eval_builds_one_model(bench: str, tiny_model_dir: Path, long_context_judge: Path,
                               tmp_path: Path, judge: Path, events: list[tuple[str, str]]) -> None:
    from harness.judges.local import release_local_judges

    release_local_judges()  # (an earlier test may have loaded the same judge)
    model = str(long_context_judge) if bench == "alpaca_eval" else str(tiny_model_dir)
    args = {"open_llm": ["--tasks", "arc_challenge", "winogrande", "--limit", "1"],
            "mt_bench": ["--judge", str(judge), "--limit", "1", "--max-new-tokens", "4", "--yes"],
            "alpaca_eval": ["--annotator", "local", "--judge", model, "--limit", "2",
                            "--max-new-tokens", "4"]}[bench]
    assert main(["eval", bench, "--model", model, "--out", str(tmp_path / "out"), "--no-progress",
                 "--generator", "transformers", "--dtype", "float32", "--batch-size", "2", *args]) == 0
    opened = Counter(p for kind, p in events if kind == "open")
    # alpaca_eval's local judge is the same checkpoint here, loaded once as the judge
    assert opened[model] == (2 if bench == "alpaca_eval" else 1), events
    assert ("close", model) in events


def test_vllm_without_vllm_is_named(tiny_model_dir: Path, tmp_path: Path, capsys,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.under_test as under_test

    monkeypatch.setattr(under_test, "vllm_installed", lambda: False)  # as where vLLM is absent
    assert main(["eval", "open_llm", "--model", str(tiny_model_dir), "--generator", "vllm",
                 "--out", str(tmp_path / "o")]) == 2
    assert "vLLM is not installed" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_vllm_answers_with_the_top_k_and_top_p_transformers_samples_with(tiny_model_dir) -> None:
    # FastChat answers MT-Bench with generate(do_sample, temperature, max_new_tokens): the model's
    # generation config, or transformers' defaults, supply top-k and top-p. vLLM's own defaults
    # (no top-k) would sample from the whole vocabulary, so the vLLM backend passes these.
    from transformers import AutoModelForCausalLM, GenerationConfig
    from transformers.generation.logits_process import TopKLogitsWarper

    from harness.under_test.vllm_backend import model_sampling_defaults

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config, _ = model._prepare_generation_config(None, do_sample=True, temperature=0.7)
    assert model_sampling_defaults(model.generation_config) == (config.top_k, config.top_p) == (50, 1.0)
    warpers = model._get_logits_processor(generation_config=config, input_ids_seq_length=4,
                                          encoder_input_ids=None, prefix_allowed_tokens_fn=None,
                                          logits_processor=[])
    assert [w.top_k for w in warpers if isinstance(w, TopKLogitsWarper)] == [50]
    assert model_sampling_defaults(GenerationConfig(top_k=20, top_p=0.8)) == (20, 0.8)
    assert model_sampling_defaults(GenerationConfig(top_k=0)) == (-1, 1.0)  # 0: no top-k
