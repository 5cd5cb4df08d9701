"""A transformers chat model as an in-process judge: generated verdicts (:meth:`LocalJudge.complete`,
the same interface as an endpoint) and log-probability verdicts (:meth:`LocalJudge.verdicts`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import set_seed

from harness.errors import ConfigError, DataError
from harness.generate import eos_token_ids
from harness.judges.base import JudgeBatch, JudgeRequest, Judgment
from harness.logprobs import next_token_logprobs
from harness.models import default_device, load_model, load_tokenizer, resolve_source

DEFAULT_JUDGE = "embedded:smollm2-135m"


@dataclass
class Verdict:
    """Log-probabilities of the judge's first answer token."""

    verdict_logprobs: dict[str, float]  # each asked-for verdict token
    top_logprobs: list[tuple[str, float]]  # the judge's most likely first tokens
    prompt_tokens: int


class LocalJudge:
    def __init__(self, source: str = DEFAULT_JUDGE, dtype: str = "bfloat16", device: str | None = None,
                 batch_size: int = 4, progress: bool = False) -> None:
        self.source = source
        path = resolve_source(source)
        self.tokenizer = load_tokenizer(path)
        self.model = load_model(path, dtype, device or default_device())
        self.dtype = dtype
        self.batch_size = batch_size
        self.progress = progress
        self.max_tokens = getattr(self.model.config, "max_position_embeddings", None)

    @property
    def name(self) -> str:
        return f"local:{self.source}"

    @property
    def id(self) -> str:
        return f"local:{self.source}:{self.dtype}"

    def _encode(self, conversation: list[dict] | tuple[dict, ...], what: str) -> list[int]:
        ids = self.tokenizer.apply_chat_template(list(conversation), tokenize=True,
                                                 add_generation_prompt=True, return_dict=True)["input_ids"]
        if self.max_tokens and len(ids) >= self.max_tokens:
            raise DataError(f"{self.name}: judging prompt {what} is {len(ids)} tokens, beyond the "
                            f"judge's context of {self.max_tokens}")
        return ids

    @torch.inference_mode()
    def complete(self, requests: list[JudgeRequest], progress: bool = True,
                 on_judgment: Callable[[JudgeRequest, Judgment], None] | None = None) -> JudgeBatch:
        """Generate each reply (greedy at temperature 0, else sampled with a seed derived from the
        request), with the top log-probabilities of every generated token when asked."""
        tok, out = self.tokenizer, JudgeBatch()
        encoded = {r.id: self._encode(r.messages, r.id) for r in requests}
        groups: dict[object, list[JudgeRequest]] = {}
        for r in sorted(requests, key=lambda r: len(encoded[r.id])):
            groups.setdefault(r.decoding, []).append(r)
        batches = [g[i : i + self.batch_size] for g in groups.values()
                   for i in range(0, len(g), self.batch_size)]
        eos, pad = eos_token_ids(self.model, tok), tok.pad_token_id
        device = self.model.device
        for batch in tqdm(batches, desc=f"judge ({self.name})", disable=not progress):
            d = batch[0].decoding
            seqs = [encoded[r.id] for r in batch]
            width = max(map(len, seqs))
            ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=device)
            mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
            if d.temperature > 0:  # seeded by the request alone: not by where the model lies
                set_seed(int(batch[0].key("sampling")[:8], 16))
            gen = self.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=d.max_tokens,
                do_sample=d.temperature > 0, temperature=d.temperature or None, top_p=None, top_k=None,
                eos_token_id=eos, pad_token_id=pad, output_logits=d.logprobs,
                return_dict_in_generate=True)
            new = gen.sequences[:, width:].tolist()
            for row, r in enumerate(batch):
                n = next((j for j, t in enumerate(new[row]) if t in eos), len(new[row]))
                top = None
                if d.logprobs:
                    k = max(d.top_logprobs, 1)
                    top = []
                    for step in range(n):
                        lp = gen.logits[step][row].float().log_softmax(-1)
                        made = new[row][step]
                        v, i = lp.topk(k)
                        top.append([(tok.decode([made]), float(lp[made]))] + [
                            (tok.decode([t]), float(x)) for t, x in zip(i.tolist(), v.tolist(), strict=True)
                            if t != made])
                judgment = Judgment(tok.decode(new[row][:n], skip_special_tokens=True).strip(), top,
                                    len(seqs[row]), n)
                out.judgments[r.id] = judgment
                if on_judgment:
                    on_judgment(r, judgment)
        return out

    def token_id(self, text: str) -> int:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ConfigError(f"{self.name}: verdict {text!r} is not one token for this tokenizer")
        return ids[0]

    def verdicts(self, conversations: list[list[dict]], tokens: list[str], top: int = 5) -> list[Verdict]:
        """For each chat (a list of {role, content}), log p of each verdict token as the reply's start."""
        tok = self.tokenizer
        ids = [self.token_id(t) for t in tokens]
        seqs = [self._encode(c, str(i)) for i, c in enumerate(conversations)]
        chosen, top_lp, top_ids = next_token_logprobs(
            self.model, seqs, tok.pad_token_id, ids, top=top, batch_size=self.batch_size,
            progress=self.progress, desc=f"judge ({self.name})")
        return [
            Verdict(dict(zip(tokens, chosen[i].tolist(), strict=True)),
                    [(tok.decode([t]), v) for t, v in zip(top_ids[i].tolist(), top_lp[i].tolist(),
                                                           strict=True)],
                    len(seqs[i]))
            for i in range(len(seqs))
        ]


@functools.cache
def get_local_judge(source: str = DEFAULT_JUDGE, dtype: str = "bfloat16",
                    device: str | None = None, batch_size: int = 4) -> LocalJudge:
    return LocalJudge(source, dtype, device, batch_size)


def chat_function(source: str, dtype: str = "bfloat16", device: str | None = None, batch_size: int = 8,
                  progress: bool = True):
    """A chat model under test as ``requests -> {id: reply}`` (benchmarks that generate multi-turn
    answers, e.g. MT-Bench), loaded once on first use."""
    model: list[LocalJudge] = []

    def chat(requests: list[JudgeRequest]) -> dict[str, str]:
        if not model:
            model.append(LocalJudge(source, dtype, device, batch_size))
        batch = model[0].complete(requests, progress=progress)
        return {rid: j.text for rid, j in batch.judgments.items()}

    return chat
