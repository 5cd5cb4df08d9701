"""lm-eval's ``HFLM`` with log-likelihoods whose common prefixes run once.

Few-shot requests repeat long prefixes: MMLU's examples of one subject share its five shots, a
question's choices share the question, TruthfulQA's questions share six shots. ``HFLM`` runs every
input in full; :class:`PrefixSharingHFLM` runs each shared prefix once and continues the inputs
from its KV cache (:func:`harness.logprobs.shared_prefix_logprobs`), computing logits only where a
continuation token is predicted. The inputs, positions and scored tokens are ``HFLM``'s (context +
continuation cut from the left to ``max_length`` + 1, without the last token), and so are its
dtypes (the model's logits, ``log_softmax`` in ``softmax_dtype``, sums in that dtype); only the
split of the forward differs, so scores agree with ``HFLM``'s to rounding (tests/test_open_llm.py).
Generation, rolling log-likelihoods' windows and seq2seq models are ``HFLM``'s own code.
"""

from __future__ import annotations

import torch
from lm_eval.models.huggingface import HFLM
from tqdm.auto import tqdm

from harness.logprobs import Scored, shared_prefix_logprobs


class PrefixSharingHFLM(HFLM):
    """``HFLM`` whose causal log-likelihoods run each shared prefix once."""

    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str], list[int], list[int]]],
                              disable_tqdm: bool = False, override_bs: int | None = None
                              ) -> list[tuple[float, bool]]:
        if self.backend != "causal":
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        index: dict[tuple[int, ...], int] = {}  # requests with the same input run it once
        inputs: list[Scored] = []
        asked: list[tuple[int, int, list[int]]] = []  # per request: its input, first position, tokens
        for _, context, continuation in requests:
            if not context or not 0 < len(continuation) <= self.max_length:
                raise ValueError("a log-likelihood request needs a context and a continuation of "
                                 f"1 to {self.max_length} tokens")
            tokens = tuple((context + continuation)[-(self.max_length + 1):][:-1])
            first = len(tokens) - len(continuation)  # HFLM reads the last len(continuation) logits
            n = index.setdefault(tokens, len(inputs))
            if n == len(inputs):
                inputs.append(Scored(tokens, first))
            elif first < inputs[n].first:
                inputs[n] = Scored(tokens, first)
            asked.append((n, first, continuation))
        for_input: dict[int, list[int]] = {}  # the requests each input answers
        for r, (n, _, _) in enumerate(asked):
            for_input.setdefault(n, []).append(r)

        def answer(n: int, logp: torch.Tensor) -> list[tuple[int, tuple[float, bool]]]:
            """Its requests' (log p, greedy), taken while the batch's logits are alive."""
            out = []
            for r in for_input[n]:
                _, first, continuation = asked[r]
                rows = logp[first - inputs[n].first :][: len(continuation)]
                target = torch.tensor(continuation, device=rows.device)
                out.append((r, (float(rows.gather(-1, target[:, None]).sum()),
                                bool((rows.argmax(-1) == target).all()))))
            return out

        batch = override_bs or (self.batch_size if isinstance(self.batch_size, int) else 8)
        bar = tqdm(total=len(inputs), disable=disable_tqdm or self.rank != 0,
                   desc="Running loglikelihood requests (shared prefixes)")
        with torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                            enabled=self.mixed_precision_dtype is not None):
            per_input = shared_prefix_logprobs(self.model, inputs, batch, self.softmax_dtype, answer,
                                               lambda chunk: bar.update(len(chunk)))
        bar.close()
        answers: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        for r, a in (pair for pairs in per_input for pair in pairs):
            answers[r] = a
        for (request_str, _, _), a in zip(requests, answers, strict=True):
            if request_str is not None:  # as HFLM: rolling windows are cached per document
                self.cache_hook.add_partial("loglikelihood", request_str, a)
        return answers
