"""Self-test of the fake OpenAI server, driven through the real ``openai`` client."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import openai
import pytest
from openai.types.chat import ChatCompletion
from openai_server import FakeOpenAI


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as srv:
        yield srv


def _client(srv: FakeOpenAI, **kwargs: float) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url, api_key="sk-test", **kwargs)  # type: ignore[arg-type]


def _ask(client: openai.OpenAI, text: str, **kwargs: object) -> ChatCompletion:
    return client.chat.completions.create(
        model="judge-x", messages=[{"role": "system", "content": "judge"}, {"role": "user", "content": text}],
        temperature=0.0, max_tokens=8, **kwargs,  # type: ignore[arg-type]
    )


def test_normal_answer_with_logprobs(server: FakeOpenAI) -> None:
    with _client(server, max_retries=0) as client:
        resp = _ask(client, "compare these", logprobs=True, top_logprobs=5)
    choice = resp.choices[0]
    assert choice.message.content == "[[A]]" and choice.finish_reason == "stop" and resp.model == "judge-x"
    tokens = choice.logprobs.content
    assert "".join(t.token for t in tokens) == "[[A]]"
    top = tokens[2].top_logprobs
    assert isinstance(top[0].token, str) and top[0].token == tokens[2].token == "A"
    assert len(top) == 5 and len({t.token for t in top}) == 5
    assert [t.logprob for t in top] == sorted((t.logprob for t in top), reverse=True)
    assert top[0].bytes == list(b"A") and resp.usage.completion_tokens == len(tokens)
    assert server.requests[0]["top_logprobs"] == 5 and server.calls("compare") == 1


def test_scripted_reply_and_models() -> None:
    def reply(messages: list[dict]) -> dict:
        return {"content": "B wins", "top_logprobs": [[("B", -0.2), ("A", -1.8), ("tie", -4.0)]]}

    with FakeOpenAI(reply) as srv, _client(srv, max_retries=0) as client:
        resp = _ask(client, "x", logprobs=True, top_logprobs=2)
        first = resp.choices[0].logprobs.content[0]
        assert resp.choices[0].message.content == "B wins"
        assert (first.token, first.logprob) == ("B", -0.2)
        assert [(t.token, t.logprob) for t in first.top_logprobs] == [("B", -0.2), ("A", -1.8)]
        assert _ask(client, "y").choices[0].logprobs is None  # logprobs not asked for
        assert [m.id for m in client.models.list()] == ["fake-judge"]
        with pytest.raises(openai.NotFoundError):
            client.get("/nope", cast_to=object)


def test_rate_limit_retry_honours_retry_after(server: FakeOpenAI) -> None:
    server.fault("MARK", "429:0.6")
    with _client(server, max_retries=2) as client:
        start = time.monotonic()
        assert _ask(client, "MARK please").choices[0].message.content == "[[A]]"
        assert time.monotonic() - start >= 0.6  # the client slept the server's Retry-After
    assert server.calls("MARK") == 2
    server.fault("GONE", "429:0.01", "429:0.01", "429:0.01")
    with _client(server, max_retries=2) as client, pytest.raises(openai.RateLimitError) as err:
        _ask(client, "GONE")
    assert err.value.status_code == 429 and err.value.body["type"] == "rate_limit_error"
    assert server.calls("GONE") == 3


@pytest.mark.parametrize(("kind", "exc"), [
    ("500", openai.InternalServerError),
    ("503", openai.InternalServerError),
    ("slow:2", openai.APITimeoutError),
    # A 200 whose JSON body is invalid is not wrapped by the client: response.json() raises the stdlib
    # json.JSONDecodeError (a ValueError), not an openai.OpenAIError.
    ("malformed", json.JSONDecodeError),
    ("drop", openai.APIConnectionError),
])
def test_fault_raises(server: FakeOpenAI, kind: str, exc: type[Exception]) -> None:
    server.fault("M", kind)
    with _client(server, max_retries=0, timeout=0.3) as client:
        with pytest.raises(exc) as err:
            _ask(client, "M")
        assert type(err.value) is exc
        assert _ask(client, "M").choices[0].message.content == "[[A]]"  # queue used up: normal again
    assert server.calls("M") == 2


def test_nologprobs_text_and_retry_over_drop(server: FakeOpenAI) -> None:
    server.fault("N", "nologprobs", "text:I cannot decide")
    server.fault("D", "drop")
    with _client(server, max_retries=2) as client:
        assert _ask(client, "N", logprobs=True, top_logprobs=5).choices[0].logprobs is None
        resp = _ask(client, "N", logprobs=True, top_logprobs=5)
        assert resp.choices[0].message.content == "I cannot decide"
        assert resp.choices[0].logprobs.content[0].token == "I"
        assert _ask(client, "D").choices[0].message.content == "[[A]]"
    assert server.calls("D") == 2  # the client retried the dropped connection itself


def test_concurrent_requests(server: FakeOpenAI) -> None:
    results: dict[int, str] = {}
    with _client(server, max_retries=0) as client:
        def work(i: int) -> None:
            results[i] = _ask(client, f"req-{i}", logprobs=True, top_logprobs=3).choices[0].message.content

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
    assert results == {i: "[[A]]" for i in range(8)}
    assert len(server.requests) == 8 and all(server.calls(f"req-{i}") == 1 for i in range(8))


def test_clean_shutdown_while_slow() -> None:
    with FakeOpenAI() as srv:
        srv.fault("S", "slow:30")
        with _client(srv, max_retries=0, timeout=0.2) as client, pytest.raises(openai.APITimeoutError):
            _ask(client, "S")
        url = srv.url
        start = time.monotonic()
    assert time.monotonic() - start < 2
    deadline = time.monotonic() + 2
    while any(t.name.startswith("FakeOpenAI") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("FakeOpenAI")]
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/models", timeout=1)
