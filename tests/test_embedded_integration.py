"""Integration on the embedded SmolLM2-135M-Instruct: conversion, and one small SPPO iteration."""

from pathlib import Path

import pytest

from harness.artifacts import read_json, read_jsonl
from harness.config import load_config
from harness.models import load_model, load_tokenizer, resolve_source
from harness.pipeline import RunOptions, SPPORun

pytestmark = pytest.mark.slow


def test_embedded_model_converts_to_a_trainable_checkpoint() -> None:
    path = Path(resolve_source("embedded:smollm2-135m"))
    assert (path / "model.safetensors").is_file()
    model = load_model(str(path))
    tok = load_tokenizer(str(path))
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert not getattr(model, "is_quantized", False)
    assert getattr(model.config, "quantization_config", None) is None
    assert tok.eos_token == "<|im_end|>"
    assert "<|im_start|>assistant" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)


def test_one_sppo_iteration_on_the_embedded_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import datafiles

    # Hermetic: no download of the AlpacaEval length-control files, whatever the network.
    monkeypatch.setattr(datafiles.urllib.request, "urlopen",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    cfg = load_config("smollm2-135m", "smoke", {
        "prompts": {"per_iteration": 4, "heldout_size": 4},
        "sampling": {"max_new_tokens": 16, "batch_size": 4},
        "training": {"per_device_batch_size": 4, "global_batch_size": 4, "epochs": 1},
        "evaluation": {"benchmarks": ["win_rate_vs_base", "alpaca_eval", "open_llm"],
                       "alpaca_eval": {"limit": 2, "best_of": 2},
                       "open_llm": {"tasks": ["truthfulqa_mc2"], "limit": 2}},
    })
    out = tmp_path / "run"
    SPPORun(cfg, RunOptions(iters=1, out=out, progress=False)).run()
    gens = read_jsonl(out / "iter-1" / "generations.jsonl")
    assert len(gens) == 4 and all(len(g["responses"]) == 5 for g in gens)
    # A real instruct model answers in words: most samples are non-empty and distinct.
    texts = [r for g in gens for r in g["responses"]]
    assert sum(bool(t.strip()) for t in texts) >= 18
    assert len(set(texts)) >= 15
    scores = read_jsonl(out / "iter-1" / "scores.jsonl")
    assert all(s["ranker"] == "smollm-judge" and len(set(s["scores"])) > 1 for s in scores)
    meta = read_json(out / "run.json")
    assert meta["stages"]["iter-1/train"]["state"] == "done"
    res = read_json(out / "iter-1" / "eval" / "win_rate_vs_base" / "results.json")
    assert res["metrics"]["n_total"] == 4 and res["provenance"]["profile"] == "smoke"
    # AlpacaEval for the base and the checkpoint, judged locally with the official prompt/parser.
    for t in (0, 1):
        ae = read_json(out / f"iter-{t}" / "eval" / "alpaca_eval" / "results.json")
        assert ae["metrics"]["n_total"] == 2 and ae["provenance"]["limit"].startswith("2 (alpaca_eval")
        assert ae["provenance"]["judge"] == "local:embedded:smollm2-135m"
        assert ae["metrics"]["length_controlled_winrate"] is None and ae["metrics"]["lc_unavailable"]
        outputs = read_json(out / f"iter-{t}" / "eval" / "alpaca_eval" / "model_outputs.json")
        assert [o["generator"] for o in outputs] == [["smollm2-135m", "smollm2-135m-sppo-iter1"][t]] * 2
        # best-of-2: two samples (seeds e, e+1), the run's ranker picks; its own version
        assert ae["version"] == "2.0 best-of-2 (smollm-judge)"
        assert ae["provenance"]["selection"]["ranker"] == "smollm-judge"
        assert len(ae["provenance"]["decoding"]["seeds"]) == 2
        picks = read_jsonl(out / f"iter-{t}" / "eval" / "alpaca_eval" / "best_of_n.jsonl")
        assert [p["candidates"][p["chosen"]] for p in picks] == [o["output"] for o in outputs]
        assert all(p["scores"][p["chosen"]] == max(p["scores"]) for p in picks)
    assert "AlpacaEval 2.0 WR (%)" in (out / "leaderboard.md").read_text()
    # Open LLM v1 through lm-eval on the in-memory checkpoint, for the base and the iteration.
    for t in (0, 1):
        ol = read_json(out / f"iter-{t}" / "eval" / "open_llm" / "results.json")
        assert ol["metrics"]["tasks"]["truthfulqa_mc2"]["n"] == 2
        assert 0 <= ol["metrics"]["truthfulqa_mc2"] <= 100 and ol["metrics"]["average_is_partial"]
        assert ol["provenance"]["iteration"] == t and ol["provenance"]["tasks"] == ["truthfulqa_mc2"]
    trained = load_model(str(out / "iter-1" / "checkpoint"))
    assert sum(p.numel() for p in trained.parameters()) == 134_515_008


def test_the_gguf_read_once_gives_what_fresh_reads_give(monkeypatch: pytest.MonkeyPatch) -> None:
    """The conversion's shared read (:func:`harness.models.gguf_parsed_once`): the tokenizer and
    config loaded through one reader equal those loaded with transformers' own reads, the file is
    read once, and gguf's functions are restored afterwards."""
    import importlib.util

    import gguf
    from transformers import AutoConfig, AutoTokenizer

    from harness.models import EMBEDDED, gguf_parsed_once

    spec = EMBEDDED["smollm2-135m"]
    folder = Path(importlib.util.find_spec(spec["package"]).origin).parent
    reads: list[str] = []

    class Counted(gguf.GGUFReader):
        def __init__(self, path, *args, **kwargs) -> None:
            reads.append(str(path))
            super().__init__(path, *args, **kwargs)

    monkeypatch.setattr(gguf, "GGUFReader", Counted)
    fresh_tok = AutoTokenizer.from_pretrained(folder, gguf_file=spec["gguf"])
    fresh_cfg = AutoConfig.from_pretrained(folder, gguf_file=spec["gguf"])
    assert len(reads) == 2  # transformers reads the file for each
    reads.clear()
    with gguf_parsed_once():
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=spec["gguf"])
        cfg = AutoConfig.from_pretrained(folder, gguf_file=spec["gguf"])
    assert len(reads) == 1
    assert gguf.GGUFReader is Counted and not hasattr(gguf.get_tensor_name_map, "cache_info")
    assert cfg.to_dict() == fresh_cfg.to_dict()
    assert tok.get_vocab() == fresh_tok.get_vocab() and tok.chat_template == fresh_tok.chat_template
    text = "SPPO: self-play, ünïcode and 123 tokens."
    assert tok(text)["input_ids"] == fresh_tok(text)["input_ids"]
