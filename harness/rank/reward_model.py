"""``reward:<model>``: a Hugging Face sequence-classification reward model as ranker.

Each (prompt, response) is rendered with the reward model's own chat template (user turn, then
assistant turn); a tokenizer without one gets the pair encoding ``tokenizer(prompt, response)``
(how e.g. OpenAssistant's DeBERTa reward models are used). Sequences are batched by length and
cut to the model's context; how many were cut is printed and kept in :attr:`details`.
Score = the model's single output logit.
"""

from __future__ import annotations

import sys

import torch
from tqdm.auto import tqdm

from harness.errors import ConfigError
from harness.rank import Ranker, register, split_flat


class RewardModelRanker:
    independent = True

    def __init__(self, model, tokenizer, name: str, batch_size: int = 8, max_length: int | None = None,
                 progress: bool = True) -> None:
        if getattr(model.config, "num_labels", 1) != 1:
            raise ConfigError(f"{name}: a reward model has one output; this one has "
                              f"{model.config.num_labels} labels")
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.batch_size, self.progress = batch_size, progress
        limits = [n for n in (max_length, getattr(model.config, "max_position_embeddings", None),
                              tokenizer.model_max_length) if n and n < 10**9]
        self.max_length = min(limits) if limits else None
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self.details: dict[str, int | None] = {"max_length": self.max_length}

    def encode(self, prompt: str, response: str) -> list[int]:
        tok = self.tokenizer
        if tok.chat_template:
            ids = tok.apply_chat_template(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
                tokenize=True, return_dict=True)["input_ids"]
        else:
            ids = tok(prompt, response)["input_ids"]
        return list(ids)

    @torch.inference_mode()
    def score(self, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        seqs = [self.encode(p, c) for p, cands in zip(prompts, candidates, strict=True) for c in cands]
        cut = 0
        if self.max_length:
            cut = sum(len(s) > self.max_length for s in seqs)
            seqs = [s[: self.max_length] for s in seqs]
        if cut:
            print(f"{self.name}: {cut} of {len(seqs)} sequences cut to {self.max_length} tokens",
                  file=sys.stderr)
        for key, n in (("sequences", len(seqs)), ("truncated", cut)):  # summed over calls
            self.details[key] = (self.details.get(key) or 0) + n
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        flat = [0.0] * len(seqs)
        pad, device = self.tokenizer.pad_token_id, self.model.device
        self.model.eval()
        for s in tqdm(range(0, len(order), self.batch_size), desc=f"rank ({self.name})",
                      disable=not self.progress):
            idx = order[s : s + self.batch_size]
            width = max(len(seqs[i]) for i in idx)
            ids = torch.tensor([seqs[i] + [pad] * (width - len(seqs[i])) for i in idx], device=device)
            mask = torch.tensor([[1] * len(seqs[i]) + [0] * (width - len(seqs[i])) for i in idx],
                                device=device)
            logits = self.model(input_ids=ids, attention_mask=mask).logits[:, 0].float()
            for j, i in enumerate(idx):
                flat[i] = float(logits[j])
        return split_flat(flat, candidates)


def _build(source: str, device: str = "cpu", dtype: str = "float32", progress: bool = True,
           batch_size: int = 8, trust_remote_code: bool = False, **_: object) -> Ranker:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from harness.models import DTYPES, resolve_source

    path = resolve_source(source)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"ranker reward:{source}: cannot load a sequence-classification model: "
                          f"{exc}") from None
    return RewardModelRanker(model.to(device), tok, f"reward:{source}", batch_size, progress=progress)


register("reward:")(_build)
