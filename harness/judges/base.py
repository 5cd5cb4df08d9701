"""What every judge speaks: chat requests in, text (and first-token log-probabilities) out."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from harness.errors import HarnessError


@dataclass(frozen=True)
class Decoding:
    """Decoding settings of a judge call; part of the cache key. ``choices``: the reply is the
    one of these the judge gives the highest log-probability (a constrained verdict), not generated."""

    temperature: float = 0.0
    max_tokens: int = 1024
    logprobs: bool = False
    top_logprobs: int = 0
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class JudgeRequest:
    """One chat to be answered. ``id`` names it in reports (e.g. ``q81/turn2/gpt-4``)."""

    id: str
    messages: tuple[dict[str, str], ...]
    decoding: Decoding = Decoding()

    def key(self, judge_id: str) -> str:
        """sha256 of (judge, full prompt, decoding): the judgment cache key."""
        decoding = asdict(self.decoding)
        if not decoding["choices"]:  # keys of generated replies as before choices existed
            del decoding["choices"]
        blob = json.dumps({"judge": judge_id, "messages": list(self.messages),
                           "decoding": decoding}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class Judgment:
    """A judge's answer. ``top_logprobs[i]`` lists (token, logprob) for output token i: first the
    token produced, then the other most likely ones (None when the endpoint returned none).
    ``choice_logprobs``: for a constrained verdict, each choice's summed log-probability."""

    text: str
    top_logprobs: list[list[tuple[str, float]]] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 1
    cached: bool = False
    choice_logprobs: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("cached")
        if d["choice_logprobs"] is None:
            del d["choice_logprobs"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Judgment:
        top = d.get("top_logprobs")
        return cls(d["text"], [[(t, float(v)) for t, v in row] for row in top] if top else top,
                   int(d.get("prompt_tokens", 0)), int(d.get("completion_tokens", 0)),
                   int(d.get("attempts", 1)), cached=True, choice_logprobs=d.get("choice_logprobs"))


@dataclass
class JudgeBatch:
    """Judgments by request id, and the requests that failed with the reason."""

    judgments: dict[str, Judgment] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def raise_failures(self, what: str) -> None:
        if self.failed:
            raise JudgeFailures(what, self.failed)


class JudgeFailures(HarnessError):
    """Some judgments could not be obtained; the others are cached and a re-run asks only these."""

    def __init__(self, what: str, failed: dict[str, str]) -> None:
        self.failed = dict(failed)
        shown = "\n".join(f"  {i}: {why}" for i, why in list(failed.items())[:20])
        more = f"\n  ... and {len(failed) - 20} more" if len(failed) > 20 else ""
        super().__init__(f"{what}: {len(failed)} judgment(s) failed (the rest are cached; re-run to "
                         f"retry only these):\n{shown}{more}")


class Judge(Protocol):
    """A model that answers judging prompts."""

    @property
    def id(self) -> str:
        """Stable identity for caches and provenance (model and endpoint, never a key)."""
        ...

    def complete(self, requests: list[JudgeRequest], progress: bool = True,
                 on_judgment: Callable[[JudgeRequest, Judgment], None] | None = None) -> JudgeBatch:
        """Answer every request; failures are reported by id, never raised one by one.
        ``on_judgment`` is called as each judgment arrives (the cache writes it there)."""
        ...
