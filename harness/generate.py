"""Sampling primitives shared by the backends of :mod:`harness.under_test`: decoding settings,
the generation record, the chat prompt and where generation stops.

Prompts are formatted with the tokenizer's own chat template (``add_generation_prompt=True``);
generation stops at EOS.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from transformers import GenerationConfig, LogitsProcessor, PreTrainedTokenizerBase, TopPLogitsWarper

from harness.config import SamplingConfig

# Seed of sample k in generation batch b: independent of every other batch, so a batch can be
# regenerated alone and give the same text.
SEED_STRIDE = 1_000_003
TRANSFORMERS_SEED_RULE = f"seed_k + {SEED_STRIDE} * batch_index"


@dataclass(frozen=True)
class Sampling:
    """Decoding settings, recorded with every generation for provenance."""

    seeds: tuple[int, ...]
    temperature: float
    top_p: float
    max_new_tokens: int
    do_sample: bool = True

    @classmethod
    def from_config(cls, cfg: SamplingConfig) -> Sampling:
        return cls(tuple(cfg.seeds), cfg.temperature, cfg.top_p, cfg.max_new_tokens)

    def as_dict(self, seed_rule: str = TRANSFORMERS_SEED_RULE) -> dict:
        """The settings and the backend's ``seed_rule`` (how sample k of a prompt is seeded)."""
        d = asdict(self)
        d["seeds"] = list(self.seeds)
        d["seed_rule"] = seed_rule
        return d


@dataclass
class Generation:
    responses: list[str]
    num_tokens: list[int]
    finished: list[bool]  # True when the response ended with EOS, False when cut at the limit


def chat_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
    """The prompt as the model sees it: its chat template with the assistant turn opened."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )


def eos_token_ids(generation_config: GenerationConfig, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Where generation stops: the generation config's EOS ids, and the tokenizer's."""
    ids = generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


class NucleusWarper(LogitsProcessor):
    """Temperature then top-p filtering, equal to transformers' two warpers, but fast on CPU.

    ``TopPLogitsWarper`` sorts the whole vocabulary at every step (a quarter of SmolLM2's CPU
    generation time). Here only the ``probe`` most likely tokens are sorted (``topk``); when
    they hold at least ``top_p`` of the mass in every row, the nucleus lies inside them and the
    kept set is the same. Otherwise the batch falls back to ``TopPLogitsWarper``.
    """

    def __init__(self, temperature: float, top_p: float, probe: int = 256) -> None:
        self.temperature = temperature
        self.top_p = top_p
        self.probe = probe
        self.fallback = TopPLogitsWarper(top_p)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores / self.temperature
        if self.top_p >= 1.0:
            return scores
        top = scores.topk(min(self.probe, scores.size(-1)), dim=-1).values  # descending
        p = (top - scores.logsumexp(-1, keepdim=True)).exp()
        mass_above = p.cumsum(-1) - p  # mass of the tokens ranked strictly higher
        if bool((mass_above[:, -1] + p[:, -1] < self.top_p).any()):
            return self.fallback(input_ids, scores)
        # TopPLogitsWarper keeps a token iff the mass ranked above it is below top_p.
        n_keep = (mass_above < self.top_p).sum(-1, keepdim=True).clamp(min=1)
        threshold = top.gather(-1, n_keep - 1)
        return scores.masked_fill(scores < threshold, -float("inf"))
