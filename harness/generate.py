"""Generate stage: K seeded responses per prompt from the current policy.

Backends share one interface, :class:`Generator`: ``transformers`` (CPU/GPU, batched with left
padding) and ``vllm`` (GPU, used when vLLM is installed and CUDA is present). Prompts are
formatted with the tokenizer's own chat template (``add_generation_prompt=True``); generation
stops at EOS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

import torch
from tqdm.auto import tqdm
from transformers import (
    LogitsProcessor,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TopPLogitsWarper,
    set_seed,
)

from harness.config import SamplingConfig
from harness.prompts import Prompt

# Seed of sample k in generation batch b: independent of every other batch, so a batch can be
# regenerated alone and give the same text.
SEED_STRIDE = 1_000_003


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

    def as_dict(self) -> dict:
        d = asdict(self)
        d["seeds"] = list(self.seeds)
        d["seed_rule"] = f"seed_k + {SEED_STRIDE} * batch_index"
        return d


@dataclass
class Generation:
    responses: list[str]
    num_tokens: list[int]
    finished: list[bool]  # True when the response ended with EOS, False when cut at the limit


class Generator(Protocol):
    name: str

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[Generation]:
        """One :class:`Generation` per prompt, holding ``len(sampling.seeds)`` responses."""
        ...


def chat_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
    """The prompt as the model sees it: its chat template with the assistant turn opened."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )


def eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    ids = model.generation_config.eos_token_id
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


class TransformersGenerator:
    """``model.generate`` on batches of prompts sorted by length, left-padded."""

    name = "transformers"

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 16,
        progress: bool = True,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.progress = progress

    @torch.inference_mode()
    def generate(self, prompts: list[Prompt], sampling: Sampling,
                 done: dict[str, Generation] | None = None,
                 on_batch: Callable[[list[tuple[Prompt, Generation]]], None] | None = None,
                 ) -> list[Generation]:
        """As :meth:`Generator.generate`; batches whose prompts are all in ``done`` (by prompt id,
        from an interrupted run) are taken from it, and ``on_batch`` receives each new batch.
        Batches and their seeds do not depend on ``done``, so a resumed run samples the same."""
        tok = self.tokenizer
        texts = [chat_prompt(tok, p.prompt) for p in prompts]
        encoded = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        eos = eos_token_ids(self.model, tok)
        k = len(sampling.seeds)
        out: list[Generation | None] = [None] * len(prompts)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        bar = tqdm(total=len(batches) * k, desc="generate", unit="pass", disable=not self.progress)
        self.model.eval()
        for b, idx in enumerate(batches):
            if done and all(prompts[i].prompt_id in done for i in idx):
                for i in idx:
                    out[i] = done[prompts[i].prompt_id]
                bar.update(k)
                continue
            width = max(len(encoded[i]) for i in idx)
            pad = tok.pad_token_id
            ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in idx])
            mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in idx])
            ids, mask = ids.to(self.model.device), mask.to(self.model.device)
            per_prompt: list[list[tuple[str, int, bool]]] = [[] for _ in idx]
            for seed in sampling.seeds:
                set_seed(seed + SEED_STRIDE * b)
                seqs = self.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    do_sample=sampling.do_sample,
                    # temperature and top_p are applied by NucleusWarper
                    temperature=1.0,
                    top_p=1.0,
                    top_k=0,
                    logits_processor=[NucleusWarper(sampling.temperature, sampling.top_p)],
                    max_new_tokens=sampling.max_new_tokens,
                    eos_token_id=eos,
                    pad_token_id=pad,
                )
                for row, new in enumerate(seqs[:, width:].tolist()):
                    n, finished = len(new), False
                    for j, t in enumerate(new):
                        if t in eos:
                            n, finished = j, True
                            break
                    text = tok.decode(new[:n], skip_special_tokens=True).strip()
                    per_prompt[row].append((text, n, finished))
                bar.update(1)
            for row, i in enumerate(idx):
                texts_, ns, fin = zip(*per_prompt[row], strict=True)
                out[i] = Generation(list(texts_), list(ns), list(fin))
            if on_batch is not None:
                on_batch([(prompts[i], out[i]) for i in idx])  # type: ignore[misc]
        bar.close()
        assert all(g is not None and len(g.responses) == k for g in out)
        return out  # type: ignore[return-value]


class VLLMGenerator:
    """vLLM offline engine (GPU). One request per (prompt, seed), seeded per request."""

    name = "vllm"

    def __init__(self, model_path: str, tokenizer: PreTrainedTokenizerBase, dtype: str) -> None:
        from vllm import LLM

        self.tokenizer = tokenizer
        self.llm = LLM(model=model_path, dtype=dtype, tensor_parallel_size=torch.cuda.device_count())

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[Generation]:
        from vllm import SamplingParams

        texts = [chat_prompt(self.tokenizer, p.prompt) for p in prompts]
        reqs, params = [], []
        for t in texts:
            for seed in sampling.seeds:
                reqs.append(t)
                params.append(SamplingParams(
                    temperature=sampling.temperature, top_p=sampling.top_p, seed=seed,
                    max_tokens=sampling.max_new_tokens,
                ))
        results = self.llm.generate(reqs, params)
        k = len(sampling.seeds)
        out = []
        for i in range(len(prompts)):
            outs = [r.outputs[0] for r in results[i * k : (i + 1) * k]]
            out.append(Generation(
                [o.text.strip() for o in outs],
                [len(o.token_ids) for o in outs],
                [o.finish_reason == "stop" for o in outs],
            ))
        return out


def vllm_available() -> bool:
    import importlib.util

    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None
