"""A transformers chat model as an in-process judge with log-probability verdicts."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from harness.errors import ConfigError, DataError
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

    def token_id(self, text: str) -> int:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ConfigError(f"{self.name}: verdict {text!r} is not one token for this tokenizer")
        return ids[0]

    def verdicts(self, conversations: list[list[dict]], tokens: list[str], top: int = 5) -> list[Verdict]:
        """For each chat (a list of {role, content}), log p of each verdict token as the reply's start."""
        tok = self.tokenizer
        ids = [self.token_id(t) for t in tokens]
        seqs = [tok.apply_chat_template(c, tokenize=True, add_generation_prompt=True,
                                        return_dict=True)["input_ids"] for c in conversations]
        for i, s in enumerate(seqs):
            if self.max_tokens and len(s) >= self.max_tokens:
                raise DataError(f"{self.name}: judging prompt {i} is {len(s)} tokens, beyond the "
                                f"judge's context of {self.max_tokens}")
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
                    device: str | None = None) -> LocalJudge:
    return LocalJudge(source, dtype, device)
