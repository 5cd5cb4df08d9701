"""Rank stage: a ranker maps (prompt, K responses) to K scores, higher = better.

Rankers are looked up by name (``--ranker``). This module ships the offline default that runs
on a CPU without the hub; PairRM, reward models and LLM judges plug in through :func:`register`.

``smollm-pmi``: the embedded SmolLM2-135M-Instruct scores a response by how much the
instruction explains it, the pointwise mutual information

    score(x, y) = log p(y | chat(x)) − log p(y | chat(""))

summed over the response tokens and EOS (``chat`` is the model's template with the assistant turn
opened; the empty user turn is the unconditional reference). It rewards responses that are
specific to the instruction and penalises generic text the model would write for any request.
See the README for its measured agreement with GPT-4-Turbo and its biases.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from tqdm.auto import tqdm

from harness.errors import ConfigError
from harness.generate import chat_prompt
from harness.logprobs import batched_logps


class Ranker(Protocol):
    name: str

    def score(self, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        """``scores[i][k]`` for candidate k of prompt i."""
        ...


_REGISTRY: dict[str, Callable[..., Ranker]] = {}


def register(name: str) -> Callable[[Callable[..., Ranker]], Callable[..., Ranker]]:
    def deco(factory: Callable[..., Ranker]) -> Callable[..., Ranker]:
        _REGISTRY[name] = factory
        return factory

    return deco


def check_ranker(name: str) -> None:
    """Fail early, before any work, on a ranker name that cannot be built."""
    if name == "pairrm":
        raise ConfigError(
            "ranker 'pairrm' (llm-blender) is not available in this version of the harness; "
            "use --ranker smollm-pmi"
        )
    if name not in _REGISTRY:
        raise ConfigError(f"unknown ranker {name!r}; available: {', '.join(sorted(_REGISTRY))}")


def get_ranker(name: str, **kwargs) -> Ranker:
    check_ranker(name)
    return _REGISTRY[name](**kwargs)


class PMIRanker:
    """Pointwise mutual information of response and instruction under a causal chat LM."""

    def __init__(self, model, tokenizer, name: str, batch_size: int = 16, progress: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        self.progress = progress

    def score(self, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        tok = self.tokenizer
        empty = tok(chat_prompt(tok, ""), add_special_tokens=False)["input_ids"]
        prefixes, uncond, responses = [], [], []
        for prompt, cands in zip(prompts, candidates, strict=True):
            prefix = tok(chat_prompt(tok, prompt), add_special_tokens=False)["input_ids"]
            for c in cands:
                r = tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                prefixes.append(prefix)
                uncond.append(empty)
                responses.append(r)
        self.model.eval()
        n = len(responses)
        bar = tqdm(total=2, desc=f"rank ({n} responses)", unit="pass", disable=not self.progress)
        cond = batched_logps(self.model, prefixes, responses, tok.pad_token_id, self.batch_size)
        bar.update(1)
        base = batched_logps(self.model, uncond, responses, tok.pad_token_id, self.batch_size)
        bar.update(1)
        bar.close()
        flat = [c[0] - b[0] for c, b in zip(cond, base, strict=True)]
        out, i = [], 0
        for cands in candidates:
            out.append(flat[i : i + len(cands)])
            i += len(cands)
        return out


@register("smollm-pmi")
def _smollm_pmi(device: str = "cpu", progress: bool = True, **_: object) -> Ranker:
    from harness.models import load_model, load_tokenizer, resolve_source

    path = resolve_source("embedded:smollm2-135m")
    return PMIRanker(load_model(path, "float32", device), load_tokenizer(path), "smollm-pmi",
                     progress=progress)
