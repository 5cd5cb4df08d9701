"""A transformers chat model as an in-process judge: generated verdicts (:meth:`LocalJudge.complete`,
the same interface as an endpoint, through the transformers backend's chat loop) and
log-probability verdicts (:meth:`LocalJudge.verdicts`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tqdm.auto import tqdm

from harness.errors import ConfigError, DataError
from harness.judges.base import JudgeBatch, JudgeRequest, Judgment
from harness.logprobs import continuation_logprobs, next_token_logprobs
from harness.models import default_device, resolve_source
from harness.under_test.hf import TransformersModel

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
        self._chat = TransformersModel.load(path, dtype=dtype, device=str(device or default_device()),
                                            batch_size=batch_size, progress=progress)
        self.tokenizer = self._chat.tokenizer
        self.model = self._chat.model
        self.dtype = dtype
        self.batch_size = batch_size
        self.progress = progress
        self.max_tokens = getattr(self.model.config, "max_position_embeddings", None)

    def close(self) -> None:
        self._chat.close()
        self.model = None  # type: ignore[assignment]

    @property
    def name(self) -> str:
        return f"local:{self.source}"

    @property
    def id(self) -> str:
        return f"local:{self.source}:{self.dtype}"

    def _encode(self, conversation: list[dict] | tuple[dict, ...], what: str) -> list[int]:
        ids = self._chat.encode_chat(conversation)
        if self.max_tokens and len(ids) >= self.max_tokens:
            raise DataError(f"{self.name}: judging prompt {what} is {len(ids)} tokens, beyond the "
                            f"judge's context of {self.max_tokens}")
        return ids

    def complete(self, requests: list[JudgeRequest], progress: bool = True,
                 on_judgment: Callable[[JudgeRequest, Judgment], None] | None = None) -> JudgeBatch:
        """Generate each reply (greedy at temperature 0, else sampled with a seed derived from the
        request), with the top log-probabilities of every generated token when asked: the
        transformers backend's chat loop, on this judge's model. A request with
        ``decoding.choices`` is answered by :meth:`choose` instead."""
        constrained = [r for r in requests if r.decoding.choices]
        generated = [r for r in requests if not r.decoding.choices]
        encoded = {r.id: self._encode(r.messages, r.id) for r in generated}
        batch = self._chat.chat(generated, progress, on_judgment, encoded=encoded,
                                desc=f"judge ({self.name})")
        for r in tqdm(constrained, desc=f"judge ({self.name}, constrained)",
                      disable=not (progress and constrained)):
            batch.judgments[r.id] = judgment = self.choose(r)
            if on_judgment:
                on_judgment(r, judgment)
        return batch

    def choose(self, request: JudgeRequest) -> Judgment:
        """The reply among ``request.decoding.choices`` with the highest summed log-probability
        (the first on a tie): a verdict in the official format from a judge that cannot write it."""
        choices = request.decoding.choices
        prompt = self._encode(request.messages, request.id)
        tokens = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
        scores = continuation_logprobs(self.model, prompt, tokens)
        best = max(range(len(choices)), key=scores.__getitem__)
        return Judgment(choices[best], None, len(prompt), len(tokens[best]),
                        choice_logprobs=dict(zip(choices, scores, strict=True)))

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
            self.model, seqs, ids, top=top, batch_size=self.batch_size,
            progress=self.progress, desc=f"judge ({self.name})")
        return [
            Verdict(dict(zip(tokens, chosen[i].tolist(), strict=True)),
                    [(tok.decode([t]), v) for t, v in zip(top_ids[i].tolist(), top_lp[i].tolist(),
                                                           strict=True)],
                    len(seqs[i]))
            for i in range(len(seqs))
        ]


_LOADED: dict[tuple[str, str, str | None, int], LocalJudge] = {}


def get_local_judge(source: str = DEFAULT_JUDGE, dtype: str = "bfloat16",
                    device: str | None = None, batch_size: int = 4) -> LocalJudge:
    """One judge per (source, dtype, device, batch size), loaded when first asked for and kept
    until :func:`release_local_judges`."""
    key = (source, dtype, device, batch_size)
    if key not in _LOADED:
        _LOADED[key] = LocalJudge(*key)
    return _LOADED[key]


def release_local_judges() -> None:
    """Close every loaded local judge (a run does so before training; they load again when next
    asked for)."""
    while _LOADED:
        _LOADED.popitem()[1].close()

