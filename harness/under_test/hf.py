"""The transformers backend of the model under test: ``model.generate`` on left-padded batches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, PreTrainedModel, PreTrainedTokenizerBase, set_seed

from harness.generate import (
    TRANSFORMERS_SEED_RULE,
    Generation,
    NucleusSampler,
    RowTemperature,
    Sampling,
    chat_prompt,
    eos_token_ids,
    sample_seed,
)
from harness.judges.base import JudgeBatch, JudgeRequest, Judgment
from harness.models import kv_cache_name, load_model, load_tokenizer
from harness.prompts import Prompt
from harness.under_test.decode_attention import decode_grouped_on_cpu


def request_seed(request: JudgeRequest) -> int:
    """The sampling seed of a chat request: from the request alone, not from where it is batched."""
    return int(request.key("sampling")[:8], 16)


class TransformersModel:
    """A loaded ``PreTrainedModel``; batches are sorted by prompt length and left-padded."""

    backend = "transformers"

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str = "",
                 batch_size: int = 16, progress: bool = True, rows_per_pass: int | None = None) -> None:
        """``batch_size``: prompts per sampling pass and chat requests per batch; ``rows_per_pass``
        instead bounds a sampling pass by its rows (prompts × samples per prompt), so that one
        sample per prompt (evaluation answers) takes K times the prompts of K samples."""
        self.model = model
        self.tokenizer = tokenizer
        self.path = path or str(getattr(model, "name_or_path", ""))
        self.batch_size = batch_size
        self.rows_per_pass = rows_per_pass
        self.progress = progress
        self.eos = eos_token_ids(model.generation_config, tokenizer)

    @classmethod
    def load(cls, path: str, *, dtype: str, device: str, batch_size: int = 16,
             trust_remote_code: bool = False, progress: bool = True,
             rows_per_pass: int | None = None) -> TransformersModel:
        model = load_model(path, dtype, device, trust_remote_code)
        decode_grouped_on_cpu(model)
        return cls(model, load_tokenizer(path, trust_remote_code), path, batch_size, progress, rows_per_pass)

    seed_rule = TRANSFORMERS_SEED_RULE

    def provenance(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.path}

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _padded(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, int]:
        width = max(map(len, seqs))
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=self.model.device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=self.model.device)
        return ids, mask, width

    def _cut(self, new: list[int]) -> tuple[int, bool]:
        """Tokens before the first EOS, and whether one was found."""
        return next(((j, True) for j, t in enumerate(new) if t in self.eos), (len(new), False))

    # SPPO sampling --------------------------------------------------------------------------
    @torch.inference_mode()
    def sample(self, prompts: list[Prompt], sampling: Sampling,
               done: dict[str, Generation] | None = None,
               on_batch: Callable[[list[tuple[Prompt, Generation]]], None] | None = None,
               ) -> list[Generation]:
        tok = self.tokenizer
        encoded = [tok(chat_prompt(tok, p.prompt), add_special_tokens=False)["input_ids"] for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        k = len(sampling.seeds)
        out: list[Generation | None] = [None] * len(prompts)
        per_pass = max(1, self.rows_per_pass // k) if self.rows_per_pass else self.batch_size
        batches = [order[i : i + per_pass] for i in range(0, len(order), per_pass)]
        bar = tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not self.progress)
        self.model.eval()
        for idx in batches:
            if done and all(prompts[i].prompt_id in done for i in idx):
                for i in idx:
                    out[i] = done[prompts[i].prompt_id]
            else:
                rows = self._sample_batch([encoded[i] for i in idx], [prompts[i].prompt_id for i in idx],
                                          sampling)
                for j, i in enumerate(idx):
                    texts, ns, fin = zip(*rows[j * k : (j + 1) * k], strict=True)
                    out[i] = Generation(list(texts), list(ns), list(fin))
                if on_batch is not None:
                    on_batch([(prompts[i], out[i]) for i in idx])  # type: ignore[misc]
            bar.update(len(idx))
        bar.close()
        assert all(g is not None and len(g.responses) == k for g in out)
        return out  # type: ignore[return-value]

    def _sample_batch(self, seqs: list[list[int]], prompt_ids: list[str],
                      sampling: Sampling) -> list[tuple[str, int, bool]]:
        """All K samples of a batch of prompts in one ``generate`` call, prompt-major (prompt 0's K
        samples first): the prompts' prefill runs once and its KV cache is repeated K times; each
        row draws from its own generator (:class:`NucleusSampler`), seeded by prompt and seed_k."""
        tok, k = self.tokenizer, len(sampling.seeds)
        ids, mask, width = self._padded(seqs)
        cache: dict[str, Any] = {}
        if width > 1:  # the last prompt token is left to generate(), which needs one input to start
            name = kv_cache_name(self.model)
            pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as generate() places them
            prefill = self.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1],
                                 position_ids=pos[:, :-1], use_cache=True, logits_to_keep=1)
            cache[name] = getattr(prefill, name)
            cache[name].batch_repeat_interleave(k)
        processors: list[LogitsProcessor] = []
        if sampling.do_sample:
            processors = [NucleusSampler(sampling.temperature, sampling.top_p,
                                         [sample_seed(p, s) for p in prompt_ids for s in sampling.seeds])]
        # greedy picks the token NucleusSampler drew; the model's own warpers are off
        seqs_out = self.model.generate(
            input_ids=ids.repeat_interleave(k, 0), attention_mask=mask.repeat_interleave(k, 0),
            do_sample=False, temperature=None, top_p=None, top_k=None, logits_processor=processors,
            max_new_tokens=sampling.max_new_tokens, eos_token_id=self.eos, pad_token_id=tok.pad_token_id,
            **cache)
        rows = []
        for new in seqs_out[:, width:].tolist():
            n, finished = self._cut(new)
            rows.append((tok.decode(new[:n], skip_special_tokens=True).strip(), n, finished))
        return rows

    # chats ----------------------------------------------------------------------------------
    def encode_chat(self, messages: list[dict] | tuple[dict, ...]) -> list[int]:
        return self.tokenizer.apply_chat_template(list(messages), tokenize=True, add_generation_prompt=True,
                                                  return_dict=True)["input_ids"]

    @torch.inference_mode()
    def chat(self, requests: list[JudgeRequest], progress: bool | None = None,
             on_judgment: Callable[[JudgeRequest, Judgment], None] | None = None,
             encoded: dict[str, list[int]] | None = None, desc: str = "answer") -> JudgeBatch:
        """``encoded`` (request id -> prompt ids) spares a caller that already checked lengths."""
        tok, out = self.tokenizer, JudgeBatch()
        encoded = encoded or {r.id: self.encode_chat(r.messages) for r in requests}
        # requests that differ only in temperature share a batch (each row keeps its own)
        groups: dict[object, list[JudgeRequest]] = {}
        for r in sorted(requests, key=lambda r: len(encoded[r.id])):
            groups.setdefault(replace(r.decoding, temperature=0.0), []).append(r)
        batches = [g[i : i + self.batch_size] for g in groups.values()
                   for i in range(0, len(g), self.batch_size)]
        self.model.eval()
        for batch in tqdm(batches, desc=desc, disable=not (self.progress if progress is None else progress)):
            d = batch[0].decoding
            ids, mask, width = self._padded([encoded[r.id] for r in batch])
            temperatures = [r.decoding.temperature for r in batch]
            # Only sampling and each row's temperature are set: the model's own top_k/top_p stay
            # in force, as FastChat's answer generation leaves them.
            kwargs: dict[str, Any] = {"do_sample": False}
            if any(temperatures):
                set_seed(request_seed(batch[0]))
                kwargs = {"do_sample": True, "temperature": 1.0,
                          "logits_processor": [RowTemperature(temperatures)]}
            gen = self.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=d.max_tokens, eos_token_id=self.eos,
                pad_token_id=tok.pad_token_id, output_logits=d.logprobs, return_dict_in_generate=True,
                **kwargs)
            new = gen.sequences[:, width:].tolist()
            for row, r in enumerate(batch):
                n, _ = self._cut(new[row])
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
                                    len(encoded[r.id]), n)
                out.judgments[r.id] = judgment
                if on_judgment:
                    on_judgment(r, judgment)
        return out

    # lm-eval ---------------------------------------------------------------------------------
    def lm_eval(self, batch_size: int) -> Any:
        from harness.under_test.hf_lm_eval import PrefixSharingHFLM

        return PrefixSharingHFLM(pretrained=self.model, tokenizer=self.tokenizer,
                                 batch_size=batch_size, device=str(self.model.device))
