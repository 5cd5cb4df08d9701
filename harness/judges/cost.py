"""The bill before a paid judged run: requests not yet cached, estimated tokens and price.

Prompt tokens are counted with tiktoken's ``o200k_base``/``cl100k_base`` when their files are
available (``harness.openai_tokens``), else estimated as characters / 4 (the method is printed).
Completion tokens are bounded by ``max_tokens`` per request, so the price is given as a range:
prompts only up to prompts plus every completion at its limit. Prices come from the judge config
(USD per million).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from harness import openai_tokens
from harness.errors import ConfigError
from harness.judges.base import JudgeRequest
from harness.judges.cache import JudgmentCache
from harness.judges.config import JudgeConfig


@dataclass
class CostEstimate:
    judge: str
    requests: int
    cached: int
    prompt_tokens: int
    max_completion_tokens: int
    token_method: str
    usd_low: float
    usd_high: float

    def summary(self) -> str:
        return (f"judge {self.judge}: {self.requests} request(s) to send ({self.cached} already cached), "
                f"~{self.prompt_tokens:,} prompt tokens ({self.token_method}), at most "
                f"{self.max_completion_tokens:,} completion tokens; estimated cost "
                f"${self.usd_low:,.2f}–${self.usd_high:,.2f}")


def token_counter() -> tuple[Callable[[str], int], str]:
    """Count tokens as OpenAI does where its vocabulary is at hand, else characters/4; and the method."""
    for name in ("o200k_base", "cl100k_base"):
        if (count := openai_tokens.counter(name)) is not None:
            return count, f"tiktoken {name}"
    return (lambda text: (len(text) + 3) // 4), "characters/4"


def estimate(cfg: JudgeConfig, judge_id: str, requests: list[JudgeRequest],
             cache: JudgmentCache | None = None) -> CostEstimate:
    todo = [r for r in requests if cache is None or cache.get(r.key(judge_id)) is None]
    count, method = token_counter()
    # ~4 tokens of chat framing per message, as OpenAI documents for its chat format
    prompt = sum(count(m["content"]) + 4 for r in todo for m in r.messages)
    completion = sum(r.decoding.max_tokens for r in todo)
    low = prompt * cfg.price.input_per_mtok / 1e6
    high = low + completion * cfg.price.output_per_mtok / 1e6
    return CostEstimate(judge_id, len(todo), len(requests) - len(todo), prompt, completion, method,
                        low, high)


def confirm(est: CostEstimate, cfg: JudgeConfig, yes: bool) -> None:
    """Print the estimate; for a paid judge, go on only with ``yes`` or an interactive 'y'."""
    print(est.summary(), file=sys.stderr)
    if not cfg.paid or est.requests == 0 or yes:
        return
    if not sys.stdin.isatty():
        raise ConfigError(f"judge {est.judge} is a paid endpoint (estimated ${est.usd_low:,.2f}–"
                          f"${est.usd_high:,.2f}); pass --yes to accept the cost")
    answer = input("Proceed with these paid judge calls? [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise ConfigError("stopped before any paid judge call (answered no)")
