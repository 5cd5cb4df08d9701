"""An OpenAI-compatible chat endpoint as a judge (api.openai.com, vLLM, llama.cpp, FastChat, ...).

Requests go through the official ``openai`` client with its own retries off: this module retries
429, 5xx, timeouts, dropped connections and malformed bodies itself, with exponential backoff,
jitter and the server's ``Retry-After``, up to ``max_retries`` times per request, and reports
what still failed by request id. A rejected key (401/403) stops the batch at once. The API key
is read from the environment variable the config names and is never stored or logged.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed

from tqdm.auto import tqdm

from harness.errors import ConfigError, RunStateError
from harness.judges.base import JudgeBatch, JudgeRequest, Judgment
from harness.judges.config import JudgeConfig, api_key


class _Fatal(Exception):
    """The endpoint refuses us (bad key, no access): no request can succeed."""


class OpenAIJudge:
    def __init__(self, cfg: JudgeConfig, sleep: Callable[[float], None] = time.sleep) -> None:
        import openai

        self.cfg = cfg
        self._openai = openai
        self._sleep = sleep
        self.client = openai.OpenAI(base_url=cfg.base_url, api_key=api_key(cfg),
                                    timeout=cfg.timeout_s, max_retries=0)

    @property
    def id(self) -> str:
        return self.cfg.id

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Delay before retry ``attempt`` (1-based): the server's Retry-After when it gives one,
        else base·2^(attempt−1) with equal jitter; never above ``max_backoff_s``."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.cfg.max_backoff_s)
        d = min(self.cfg.backoff_s * 2 ** (attempt - 1), self.cfg.max_backoff_s)
        return d / 2 + random.uniform(0, d / 2)

    def _retryable(self, exc: Exception) -> tuple[bool, float | None]:
        oa = self._openai
        if isinstance(exc, oa.AuthenticationError | oa.PermissionDeniedError):
            raise _Fatal(f"the endpoint refused the request ({exc.status_code}): check "
                         f"{self.cfg.api_key_env} and access to model {self.cfg.model!r}") from None
        if isinstance(exc, oa.APIStatusError):
            retry = exc.status_code in (408, 409, 429) or exc.status_code >= 500
            return retry, _retry_after(exc.response.headers) if retry else None
        if isinstance(exc, oa.APIConnectionError | oa.APIResponseValidationError | json.JSONDecodeError):
            return True, None
        return False, None

    def _call(self, req: JudgeRequest) -> Judgment:
        d = req.decoding
        kwargs: dict = {"model": self.cfg.model, "messages": list(req.messages),
                        "temperature": d.temperature, "max_tokens": d.max_tokens}
        if d.logprobs:
            kwargs["logprobs"] = True
            if d.top_logprobs:
                kwargs["top_logprobs"] = d.top_logprobs
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = self.client.chat.completions.create(**kwargs)
                return _judgment(resp, d.logprobs, attempt)
            except _Fatal:
                raise
            except Exception as exc:
                retry, after = self._retryable(exc)
                if not retry or attempt > self.cfg.max_retries:
                    tries = f" after {attempt} attempts" if attempt > 1 else ""
                    raise RuntimeError(f"{type(exc).__name__}{tries}: {_short(exc)}") from None
                self._sleep(self.backoff(attempt, after))

    def complete(self, requests: list[JudgeRequest], progress: bool = True,
                 on_judgment: Callable[[JudgeRequest, Judgment], None] | None = None) -> JudgeBatch:
        out = JudgeBatch()
        stop = threading.Event()
        fatal: list[str] = []

        def one(req: JudgeRequest) -> Judgment | None:
            if stop.is_set():
                return None
            try:
                judgment = self._call(req)
            except _Fatal as exc:
                stop.set()
                fatal.append(str(exc))
                return None
            if on_judgment:  # kept (cached) before this worker sends another paid request
                on_judgment(req, judgment)
            return judgment

        bar = tqdm(total=len(requests), desc=f"judge ({self.cfg.model})", disable=not progress)
        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            futures = {pool.submit(one, r): r for r in requests}
            for fut in as_completed(futures):
                req = futures[fut]
                try:
                    judgment = fut.result()
                except RunStateError:  # the judgment could not be kept (disk full): stop sending
                    stop.set()
                    raise
                except Exception as exc:
                    out.failed[req.id] = str(exc)
                else:
                    if judgment is None:
                        out.failed[req.id] = "not sent: the endpoint refused an earlier request"
                    else:
                        out.judgments[req.id] = judgment
                bar.update(1)
        bar.close()
        if fatal:
            raise ConfigError(f"judge {self.id}: {fatal[0]} ({len(out.judgments)} judgments obtained "
                              "before that are cached)")
        return out


def _retry_after(headers) -> float | None:
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return float(value) * scale
            except ValueError:
                continue  # an HTTP date: fall back to our own backoff
    return None


def _short(exc: Exception, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text[:limit] + ("…" if len(text) > limit else "")


def _judgment(resp, want_logprobs: bool, attempts: int) -> Judgment:
    if not getattr(resp, "choices", None):
        raise json.JSONDecodeError("response has no choices", "", 0)
    choice = resp.choices[0]
    top = None
    content = getattr(choice.logprobs, "content", None) if want_logprobs else None
    if content:
        top = [[(c.token, float(c.logprob))] + [(t.token, float(t.logprob)) for t in (c.top_logprobs or [])
                                                if t.token != c.token] for c in content]
    usage = resp.usage
    return Judgment(choice.message.content or "", top,
                    int(getattr(usage, "prompt_tokens", 0) or 0),
                    int(getattr(usage, "completion_tokens", 0) or 0), attempts)
