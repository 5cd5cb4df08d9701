"""Sampling primitives shared by the backends of :mod:`harness.under_test`: decoding settings,
the generation record, the chat prompt and where generation stops.

Prompts are formatted with the tokenizer's own chat template (``add_generation_prompt=True``);
generation stops at EOS.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import torch
from transformers import GenerationConfig, LogitsProcessor, PreTrainedTokenizerBase, TopPLogitsWarper

from harness.config import SamplingConfig

# Sample k of a prompt draws its random numbers from its own generator, seeded from the prompt and
# seed_k alone: a sample does not depend on its batch, its row or the other samples.
TRANSFORMERS_SEED_RULE = ("per sample: torch.Generator seeded by sha256(prompt_id, seed_k), one uniform "
                          "draw per token, inverted through the warped distribution's CDF")


def sample_seed(prompt_id: str, seed: int) -> int:
    """The seed of one sample's generator (63 bits of sha256 of the prompt id and seed_k)."""
    digest = hashlib.sha256(f"{prompt_id}\0{seed}".encode()).hexdigest()
    return int(digest[:16], 16) & (2**63 - 1)


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
    generation time). Here only the ``probe`` most likely tokens of a row are sorted (``topk``);
    when they hold at least ``top_p`` of its mass, the row's nucleus lies inside them and the kept
    set is the same. A row whose nucleus is larger goes through ``TopPLogitsWarper``, alone.
    """

    def __init__(self, temperature: float, top_p: float, probe: int = 256) -> None:
        self.temperature = temperature
        self.top_p = top_p
        self.probe = probe
        self.fallback = TopPLogitsWarper(top_p)

    def nucleus(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each row's ``probe`` most likely (temperature-scaled) scores, descending, those outside
        the nucleus set to -inf, and their token ids; and which rows' nuclei reach beyond the
        probe (for those rows the first two say nothing)."""
        top, ids = scores.topk(min(self.probe, scores.size(-1)), dim=-1)  # descending
        p = (top - scores.logsumexp(-1, keepdim=True)).exp()
        mass_above = p.cumsum(-1) - p  # mass of the tokens ranked strictly higher
        wide = mass_above[:, -1] + p[:, -1] < self.top_p
        # TopPLogitsWarper keeps a token iff the mass ranked above it is below top_p.
        n_keep = (mass_above < self.top_p).sum(-1, keepdim=True).clamp(min=1)
        kept = torch.arange(top.size(-1), device=top.device) < n_keep
        return top.masked_fill(~kept, -float("inf")), ids, wide

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores / self.temperature
        if self.top_p >= 1.0:
            return scores
        values, ids, wide = self.nucleus(scores)
        out = torch.full_like(scores, -float("inf")).scatter_(-1, ids, values)
        if bool(wide.any()):
            out[wide] = self.fallback(input_ids, scores[wide])
        return out


class NucleusSampler(NucleusWarper):
    """:class:`NucleusWarper`'s distribution, sampled in each row from the row's own generator;
    it returns scores that make greedy decoding pick the drawn token.

    One uniform number u per row and step is inverted through the row's CDF over its kept tokens
    (most likely first, float64): the first token whose cumulative probability exceeds u, so a
    dropped token (probability 0) is never drawn. A draw depends on its row's logits and generator
    alone, not on the batch around it (a row whose nucleus is beyond the probe is sorted alone).
    """

    def __init__(self, temperature: float, top_p: float, seeds: list[int], probe: int = 256) -> None:
        super().__init__(temperature, top_p, probe)
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.size(0) != len(self.generators):
            raise ValueError(f"{scores.size(0)} rows for {len(self.generators)} generators")
        scores = scores / self.temperature
        u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators])
        u = u.to(scores.device)
        if self.top_p >= 1.0:  # every token: the whole vocabulary, sorted
            token = _draw(*scores.sort(dim=-1, descending=True, stable=True), u)
        else:
            values, ids, wide = self.nucleus(scores)
            token = torch.empty((scores.size(0), 1), dtype=torch.long, device=scores.device)
            inside = ~wide
            if bool(inside.any()):
                token[inside] = _draw(values[inside], ids[inside], u[inside])
            if bool(wide.any()):  # a nucleus beyond the probe: those rows' whole vocabulary, sorted
                warped = self.fallback(input_ids, scores[wide])
                token[wide] = _draw(*warped.sort(dim=-1, descending=True, stable=True), u[wide])
        return scores.fill_(-float("inf")).scatter_(-1, token, 0.0)


def _draw(values: torch.Tensor, ids: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per row, the token whose cumulative probability (``values`` most likely first, float64)
    first exceeds ``u`` × the total: [rows, 1] token ids."""
    cdf = values.double().softmax(-1).cumsum(-1)
    total = cdf[:, -1:]
    # kept below the total, so a kept token's cumulative probability exceeds it even when u·total
    # rounds up
    below = torch.nextafter(total, total.new_zeros(()))
    target = torch.minimum(u.unsqueeze(-1) * total, below)
    return ids.gather(-1, torch.searchsorted(cdf, target, side="right"))


class RowTemperature(LogitsProcessor):
    """Each row's own temperature where transformers' ``TemperatureLogitsWarper`` applies one to
    the batch (the same place in the chain: after the processors, before top-k and top-p); a row at
    temperature 0 keeps only its most likely token, so sampling it is greedy decoding. Requests
    that differ only in temperature then share one ``generate`` call: a small batch's decoding
    step costs about what a step of one row does."""

    def __init__(self, temperatures: list[float]) -> None:
        if any(t < 0 for t in temperatures):
            raise ValueError(f"temperatures must be >= 0, got {temperatures}")
        self.temperatures = torch.tensor(temperatures, dtype=torch.float32)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.size(0) != len(self.temperatures):
            raise ValueError(f"{scores.size(0)} rows for {len(self.temperatures)} temperatures")
        t = self.temperatures.to(scores.device)
        greedy = (t == 0)[:, None]
        scaled = scores / torch.where(greedy, 1.0, t[:, None])
        if not bool(greedy.any()):
            return scaled
        best = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, scores.argmax(-1, keepdim=True), True)
        return scaled.masked_fill(greedy & ~best, -float("inf"))
