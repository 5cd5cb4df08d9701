"""The OpenAI-compatible judge client, the judgment cache and the cost gate, against a real HTTP
server on 127.0.0.1 (tests/openai_server.py) driven through the real ``openai`` client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from openai_server import FakeOpenAI

from harness.errors import ConfigError
from harness.judges.base import Decoding, JudgeFailures, JudgeRequest
from harness.judges.cache import JudgmentCache, judge_cached
from harness.judges.config import JudgeConfig, load_judge_config
from harness.judges.cost import confirm, estimate
from harness.judges.openai_client import OpenAIJudge

KEY = "sk-test-DO-NOT-LEAK-0123456789"


def _cfg(url: str, **kw) -> JudgeConfig:
    base = {"model": "fake-judge", "base_url": url, "api_key_env": "SPPO_TEST_KEY", "max_retries": 3,
            "backoff_s": 0.01, "max_backoff_s": 0.05, "timeout_s": 2.0, "concurrency": 4}
    return JudgeConfig(**{**base, **kw})


def _req(marker: str, logprobs: bool = False) -> JudgeRequest:
    return JudgeRequest(marker, ({"role": "user", "content": f"judge this {marker}"},),
                        Decoding(0.0, 16, logprobs, 3 if logprobs else 0))


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPPO_TEST_KEY", KEY)
    monkeypatch.setenv("SPPO_CACHE_DIR", str(tmp_path / "cache"))


def test_answer_with_logprobs_and_usage() -> None:
    with FakeOpenAI(reply=lambda m: "Verdict: [[B]]") as srv:
        batch = OpenAIJudge(_cfg(srv.url)).complete([_req("m1", logprobs=True)], progress=False)
    j = batch.judgments["m1"]
    assert j.text == "Verdict: [[B]]" and j.attempts == 1 and not batch.failed
    assert "".join(row[0][0] for row in j.top_logprobs) == j.text  # row[0] = the token produced
    assert all(len(row) == 3 for row in j.top_logprobs)  # produced + alternatives, top_logprobs=3
    assert j.prompt_tokens > 0 and j.completion_tokens > 0
    body = srv.requests[0]
    assert body["logprobs"] is True and body["top_logprobs"] == 3 and body["temperature"] == 0.0


@pytest.mark.parametrize("faults", [("429:0.01", "429:0.01"), ("500",), ("503", "500"), ("malformed",),
                                    ("drop",), ("slow:1.0",)])
def test_transient_faults_are_retried(faults: tuple[str, ...]) -> None:
    with FakeOpenAI() as srv:
        srv.fault("m1", *faults)
        judge = OpenAIJudge(_cfg(srv.url, timeout_s=0.4))
        batch = judge.complete([_req("m1")], progress=False)
        assert batch.judgments["m1"].text == "[[A]]"
        assert batch.judgments["m1"].attempts == len(faults) + 1 == srv.calls("m1")


def test_retries_stop_at_the_bound_and_failures_are_named() -> None:
    with FakeOpenAI() as srv:
        srv.fault("bad", *["500"] * 10)
        batch = OpenAIJudge(_cfg(srv.url, max_retries=2)).complete([_req("bad"), _req("good")],
                                                                   progress=False)
        assert srv.calls("bad") == 3 and srv.calls("good") == 1
    assert set(batch.judgments) == {"good"}
    assert "InternalServerError after 3 attempts" in batch.failed["bad"]
    with pytest.raises(JudgeFailures, match=r"1 judgment\(s\) failed.*\n  bad: InternalServerError"):
        batch.raise_failures("test")


def test_not_retried_on_client_errors_and_stops_on_a_rejected_key() -> None:
    with FakeOpenAI() as srv:
        srv.fault("k", "401")
        judge = OpenAIJudge(_cfg(srv.url, concurrency=1))
        with pytest.raises(ConfigError, match="refused the request \\(401\\): check SPPO_TEST_KEY"):
            judge.complete([_req("k")] + [_req(f"after{i}") for i in range(5)], progress=False)
        assert srv.calls("k") == 1
        assert sum(srv.calls(f"after{i}") for i in range(5)) <= 1  # the batch stops at once


def test_backoff_honours_retry_after_and_is_bounded_with_jitter() -> None:
    delays: list[float] = []
    with FakeOpenAI() as srv:
        srv.fault("m", "429:0.03", "500", "500", "500")
        cfg = _cfg(srv.url, max_retries=4, backoff_s=0.01, max_backoff_s=0.025)
        OpenAIJudge(cfg, sleep=delays.append).complete([_req("m")], progress=False)
    assert delays[0] == pytest.approx(0.025)  # Retry-After 0.03, capped at max_backoff_s
    for attempt, d in enumerate(delays[1:], start=2):
        cap = min(0.01 * 2 ** (attempt - 1), 0.025)
        assert cap / 2 <= d <= cap
    assert len(delays) == 4


def test_missing_logprobs_and_unparseable_verdicts_come_back_as_text() -> None:
    with FakeOpenAI() as srv:
        srv.fault("m1", "nologprobs")
        srv.fault("m2", "text:I cannot decide.")
        batch = OpenAIJudge(_cfg(srv.url)).complete([_req("m1", True), _req("m2", True)], progress=False)
    assert batch.judgments["m1"].top_logprobs is None and batch.judgments["m1"].text == "[[A]]"
    assert batch.judgments["m2"].text == "I cannot decide."


def test_each_judgment_obtained_once_under_mixed_faults_and_cached() -> None:
    kinds = ["429:0.01", "500", "drop", "malformed", "slow:0.6", None]
    with FakeOpenAI() as srv:
        reqs = []
        for i in range(30):
            marker = f"q{i:02d}"
            if i % 10 == 9:
                srv.fault(marker, *["500"] * 4)  # one more than the bound: must be reported
            elif kinds[i % len(kinds)]:
                srv.fault(marker, kinds[i % len(kinds)])
            reqs.append(_req(marker))
        judge = OpenAIJudge(_cfg(srv.url, max_retries=3, timeout_s=0.3))
        cache = JudgmentCache.for_judge(judge.id)
        first = judge_cached(judge, reqs, cache, progress=False)
        failed = {r.id for r in reqs if int(r.id[1:]) % 10 == 9}
        assert set(first.failed) == failed
        assert set(first.judgments) == {r.id for r in reqs} - failed
        for r in reqs:
            if r.id not in failed:  # exactly one successful call each
                expected = 1 if kinds[int(r.id[1:]) % len(kinds)] is None else 2
                assert srv.calls(r.id) == expected, r.id
        # a re-run asks only for what failed (its faults are used up by now)
        before = {r.id: srv.calls(r.id) for r in reqs}
        second = judge_cached(judge, reqs, JudgmentCache.for_judge(judge.id), progress=False)
        assert not second.failed and len(second.judgments) == 30
        for r in reqs:
            assert srv.calls(r.id) - before[r.id] == (1 if r.id in failed else 0)
    assert KEY not in cache.path.read_text()


def test_duplicate_prompts_are_asked_once(tmp_path: Path) -> None:
    with FakeOpenAI() as srv:
        judge = OpenAIJudge(_cfg(srv.url))
        same = ({"role": "user", "content": "judge this twin"},)
        reqs = [JudgeRequest("a", same), JudgeRequest("b", same)]
        batch = judge_cached(judge, reqs, JudgmentCache(tmp_path / "c.jsonl"), progress=False)
        assert srv.calls("twin") == 1 and set(batch.judgments) == {"a", "b"}


def test_cache_key_covers_judge_prompt_and_decoding() -> None:
    r = _req("x")
    assert r.key("j1") != r.key("j2")
    assert r.key("j1") != JudgeRequest("x", r.messages, Decoding(0.5, 16)).key("j1")
    assert r.key("j1") != _req("y").key("j1")
    assert r.key("j1") == JudgeRequest("other-id", r.messages, r.decoding).key("j1")  # ids are labels


def test_cache_skips_a_torn_line_and_keeps_appending(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    with FakeOpenAI() as srv:
        judge = OpenAIJudge(_cfg(srv.url))
        judge_cached(judge, [_req("a"), _req("b")], JudgmentCache(path), progress=False)
        with open(path, "ab") as f:
            f.write(b'{"key": "torn", "judgment": {"te')  # a crash mid-write
        cache = JudgmentCache(path)
        assert len(cache) == 2 and cache.skipped_lines == 1
        judge_cached(judge, [_req("c")], cache, progress=False)
        reloaded = JudgmentCache(path)
        assert len(reloaded) == 3 and reloaded.skipped_lines == 1


_CRASH_SCRIPT = """
import sys
from harness.judges.base import Decoding, JudgeRequest
from harness.judges.cache import JudgmentCache, judge_cached
from harness.judges.config import JudgeConfig
from harness.judges.openai_client import OpenAIJudge
cfg = JudgeConfig(model="fake-judge", base_url=sys.argv[1], api_key_env="SPPO_TEST_KEY", concurrency=2)
reqs = [JudgeRequest(f"q{i:02d}", ({"role": "user", "content": f"judge this q{i:02d}"},), Decoding(0.0, 16))
        for i in range(20)]
judge_cached(OpenAIJudge(cfg), reqs, JudgmentCache.for_judge(OpenAIJudge(cfg).id), progress=False)
"""


def test_cache_is_consistent_after_a_crash_mid_run() -> None:
    with FakeOpenAI() as srv:
        for i in range(20):
            srv.fault(f"q{i:02d}", "slow:0.15")
        judge = OpenAIJudge(_cfg(srv.url, concurrency=2))
        cache_path = JudgmentCache.for_judge(judge.id).path
        proc = subprocess.Popen([sys.executable, "-c", _CRASH_SCRIPT, srv.url], env=os.environ.copy(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            if cache_path.exists() and len(cache_path.read_bytes().splitlines()) >= 6:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        cache = JudgmentCache(cache_path)
        kept = len(cache)
        assert 6 <= kept < 20 and cache.skipped_lines <= 1
        sent = {f"q{i:02d}": srv.calls(f"q{i:02d}") for i in range(20)}
        reqs = [JudgeRequest(f"q{i:02d}", ({"role": "user", "content": f"judge this q{i:02d}"},),
                             Decoding(0.0, 16)) for i in range(20)]
        batch = judge_cached(judge, reqs, cache, progress=False)
        assert len(batch.judgments) == 20 and not batch.failed
        repeated = [m for m in sent if sent[m] and srv.calls(m) > sent[m]]
        # only requests in flight at the kill (at most `concurrency`) are asked again
        assert len(repeated) <= 2
        assert all(srv.calls(m) == 1 for m in sent if cache.get(reqs[int(m[1:])].key(judge.id))
                   and m not in repeated)


def test_cost_estimate_counts_only_uncached_requests_and_needs_yes(tmp_path: Path) -> None:
    cfg = _cfg("http://127.0.0.1:9/v1", price={"input_per_mtok": 10.0, "output_per_mtok": 30.0})
    reqs = [_req(f"m{i}") for i in range(4)]
    cache = JudgmentCache(tmp_path / "c.jsonl")
    from harness.judges.base import Judgment

    cache.put(reqs[0].key("j"), "m0", Judgment("[[A]]"))
    est = estimate(cfg, "j", reqs, cache)
    assert (est.requests, est.cached, est.max_completion_tokens) == (3, 1, 48)
    assert est.usd_high == pytest.approx(est.usd_low + 48 * 30.0 / 1e6)
    assert est.prompt_tokens > 0
    with pytest.raises(ConfigError, match="pass --yes to accept the cost"):
        confirm(est, cfg, yes=False)  # pytest's stdin is not a terminal
    confirm(est, cfg, yes=True)
    confirm(est, _cfg("http://127.0.0.1:9/v1"), yes=False)  # free endpoints never ask


def test_missing_api_key_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPPO_TEST_KEY")
    with pytest.raises(ConfigError, match="set the environment variable SPPO_TEST_KEY"):
        OpenAIJudge(_cfg("http://127.0.0.1:9/v1"))


def test_shipped_judge_configs_load_and_ids_hide_credentials() -> None:
    from harness.judges.config import JUDGE_CONFIG_DIR

    names = sorted(p.stem for p in JUDGE_CONFIG_DIR.glob("*.yaml"))
    assert {"gpt-4", "gpt-4-1106-preview", "vllm-local", "smollm2-135m"} <= set(names)
    for name in names:
        load_judge_config(name)
    judge = OpenAIJudge(_cfg("http://user:secret@127.0.0.1:8000/v1?key=abc"))
    assert judge.id == "openai:fake-judge@http://127.0.0.1:8000/v1"
    with pytest.raises(ConfigError, match="temperature"):
        load_judge_config("gpt-4", temperature=-1)


def test_unknown_keys_in_a_judge_config_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "j.yaml"
    p.write_text(json.dumps({"model": "x", "temprature": 0}))
    with pytest.raises(ConfigError, match="temprature: unknown key"):
        load_judge_config(str(p))


def test_an_unwritable_cache_is_named_and_earlier_judgments_survive(tmp_path: Path) -> None:
    from harness.errors import RunStateError

    good = tmp_path / "c.jsonl"
    with FakeOpenAI() as srv:
        judge = OpenAIJudge(_cfg(srv.url, concurrency=1))
        judge_cached(judge, [_req("a")], JudgmentCache(good), progress=False)
        blocked = tmp_path / "not-a-dir"
        blocked.write_text("a file where the cache folder should be")
        with pytest.raises(RunStateError, match=f"cannot write the judgment cache {blocked}/c.jsonl"):
            judge_cached(judge, [_req("b")], JudgmentCache(blocked / "c.jsonl"), progress=False)
    assert len(JudgmentCache(good)) == 1
