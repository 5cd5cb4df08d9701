"""Offline rankers built on the embedded SmolLM2-135M-Instruct (the CPU default).

``smollm-judge``: the model reads the instruction and the response (cut to 384 tokens) in
:data:`JUDGE_TEMPLATE` and is asked whether the response is a helpful, correct and complete
answer; score = log p("Yes") − log p("No") for its next token. Pointwise, so order-free.

``smollm-pmi``: pointwise mutual information of response and instruction,
log p(y | chat(x)) − log p(y | chat("")), summed over response tokens and EOS. Strongly
length-biased (see docs/rankers-and-judges.md, the agreement table); kept for comparison.
"""

from __future__ import annotations

from tqdm.auto import tqdm

from harness.errors import ConfigError
from harness.generate import chat_prompt
from harness.logprobs import batched_logps, next_token_logprobs
from harness.rank import Ranker, register, split_flat


class PMIRanker:
    """Pointwise mutual information of response and instruction under a causal chat LM."""

    independent = True

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
        return split_flat(flat, candidates)


class YesNoJudgeRanker:
    """A chat LM asked whether the response is a good answer; score = log p(Yes) − log p(No)."""

    independent = True

    def __init__(self, model, tokenizer, name: str, batch_size: int = 16,
                 max_response_tokens: int = 384, progress: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        self.max_response_tokens = max_response_tokens
        self.progress = progress
        ids = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in ("Yes", "No")]
        if any(len(i) != 1 for i in ids):
            raise ConfigError(f"{name}: 'Yes'/'No' are not single tokens for this tokenizer")
        self.yes, self.no = ids[0][0], ids[1][0]

    def judge_prompt(self, prompt: str, response: str) -> list[int]:
        tok = self.tokenizer
        cut = tok(response, add_special_tokens=False)["input_ids"][: self.max_response_tokens]
        question = JUDGE_TEMPLATE.format(instruction=prompt, response=tok.decode(cut))
        return tok(chat_prompt(tok, question), add_special_tokens=False)["input_ids"]

    def score(self, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        seqs = [self.judge_prompt(p, c) for p, cands in zip(prompts, candidates, strict=True)
                for c in cands]
        lp, _, _ = next_token_logprobs(self.model, seqs, [self.yes, self.no], batch_size=self.batch_size,
                                       progress=self.progress, desc=f"rank ({self.name})")
        flat = (lp[:, 0] - lp[:, 1]).tolist()
        return split_flat(flat, candidates)


JUDGE_TEMPLATE = (
    "Instruction:\n{instruction}\n\nResponse:\n{response}\n\n"
    "Is this response a helpful, correct and complete answer to the instruction? Answer Yes or No."
)


def _embedded_judge(factory):
    def build(device: str = "cpu", dtype: str = "float32", progress: bool = True,
              **_: object) -> Ranker:
        from harness.models import load_model, load_tokenizer, resolve_source

        path = resolve_source("embedded:smollm2-135m")
        return factory(load_model(path, dtype, device), load_tokenizer(path), progress=progress)

    return build


register("smollm-judge")(_embedded_judge(
    lambda m, t, progress: YesNoJudgeRanker(m, t, "smollm-judge", progress=progress)))
register("smollm-pmi")(_embedded_judge(
    lambda m, t, progress: PMIRanker(m, t, "smollm-pmi", progress=progress)))
