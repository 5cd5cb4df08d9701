"""MT-Bench: FastChat's prompt pairing and formats, show_result.py's aggregation, and the benchmark
end to end on a tiny model with a judge behind the fake OpenAI server."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest
from openai_server import FakeOpenAI, judge_config

from harness.benchmarks import mt_bench
from harness.cli import main
from harness.judges.base import Decoding


def test_data_files_as_fastchat_ships_them() -> None:
    qs = mt_bench.questions()
    assert len(qs) == 80 and all(len(q["turns"]) == 2 for q in qs)
    counts = pd.Series([q["category"] for q in qs]).value_counts()
    assert set(counts) == {10} and set(counts.index) == set(mt_bench.TEMPERATURE)
    refs = mt_bench.references()
    assert sorted(refs) == [q["question_id"] for q in qs if q["category"] in mt_bench.NEED_REF_CATS]
    assert [q["question_id"] for q in mt_bench.questions(limit=1)] == [81, 91, 101, 111, 121, 131, 141, 151]


def test_reasoning_turn_2_prompt_is_the_template_filled_with_answers_and_reference() -> None:
    q = next(q for q in mt_bench.questions() if q["category"] == "reasoning")
    answers = [{"question_id": q["question_id"], "choices": [{"index": 0, "turns": ["A1 text", "A2 text"]}]}]
    pairs = mt_bench.judge_requests([q], answers, "m", Decoding(0.0, 2048))
    assert [f["prompt"] for _, f in pairs] == ["single-math-v1", "single-math-v1-multi-turn"]
    request, fields = pairs[1]
    template = next(json.loads(line) for line in
                    Path(mt_bench.datafiles.fetch(mt_bench.PROMPTS)).read_text().splitlines()
                    if json.loads(line)["name"] == "single-math-v1-multi-turn")
    ref = mt_bench.references()[q["question_id"]]
    want_user = template["prompt_template"].format(
        question_1=q["turns"][0], question_2=q["turns"][1], answer_1="A1 text", answer_2="A2 text",
        ref_answer_1=ref[0], ref_answer_2=ref[1])
    assert request.messages == ({"role": "system", "content": template["system_prompt"]},
                                {"role": "user", "content": want_user})
    assert fields["user_prompt"] == want_user and fields["turn"] == 2
    assert ref[1] in want_user and "A2 text" in want_user and q["turns"][1] in want_user
    assert request.decoding == Decoding(0.0, 2048)
    # a writing question has no reference and uses the general prompts
    w = next(q for q in mt_bench.questions() if q["category"] == "writing")
    ws = mt_bench.judge_requests([w], [{**answers[0], "question_id": w["question_id"]}], "m",
                                 Decoding())
    assert [f["prompt"] for _, f in ws] == ["single-v1", "single-v1-multi-turn"]


@pytest.mark.parametrize(("text", "score"), [("Rating: [[7]]", 7.0), ("[[8.5]]", 8.5), ("[9]", 9.0),
                                             ("[[ 7 ]]", -1.0), ("no rating", -1.0), ("[[2]] [[9]]", 2.0)])
def test_rating_parse_as_fastchat(text: str, score: float) -> None:
    assert mt_bench.parse_rating(text) == score


def _official_rows(seed: int = 0) -> list[dict]:
    """Judgment rows in FastChat's model_judgment format: 3 models, all 80 questions, 2 turns,
    some -1 ratings, unequal per turn."""
    rng = random.Random(seed)
    rows = []
    for model in ("alpha", "beta", "gamma"):
        for q in mt_bench.questions():
            for turn in (1, 2):
                name = mt_bench.prompt_name(q["category"], turn)
                score = -1 if rng.random() < 0.07 else rng.choice([1, 2, 3, 5, 6.5, 7, 8, 9, 10])
                rows.append({"question_id": q["question_id"], "model": model, "judge": ["gpt-4", name],
                             "user_prompt": "...", "judgment": f"[[{score}]]", "score": score,
                             "turn": turn, "tstamp": 1.0})
    return rows


def _show_result_single(path: Path) -> dict[str, dict[str, float]]:
    """A direct transcription of FastChat show_result.py's single mode (pandas)."""
    df_all = pd.read_json(path, lines=True)
    df = df_all[["model", "score", "turn"]]
    df = df[df["score"] != -1]
    out: dict[str, dict[str, float]] = {}
    first = df[df["turn"] == 1].groupby(["model", "turn"]).mean()
    second = df[df["turn"] == 2].groupby(["model", "turn"]).mean()
    avg = df[["model", "score"]].groupby(["model"]).mean()
    for model in avg.index:
        out[model] = {"turn_1": first.loc[(model, 1), "score"], "turn_2": second.loc[(model, 2), "score"],
                      "score": avg.loc[model, "score"]}
    return out


def test_aggregation_equals_show_result(tmp_path: Path) -> None:
    rows = _official_rows()
    path = tmp_path / "gpt-4_single.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ours = mt_bench.aggregate(mt_bench.read_judgments(path))
    theirs = _show_result_single(path)
    assert set(ours) == set(theirs) == {"alpha", "beta", "gamma"}
    for model, want in theirs.items():
        for k, v in want.items():
            assert ours[model][k] == pytest.approx(v, abs=1e-12), (model, k)
        mine = [r for r in rows if r["model"] == model]
        assert ours[model]["parse_failures"] == sum(r["score"] == -1 for r in mine)
        assert ours[model]["n_judgments"] == 160 and ours[model]["n_questions"] == 80
        cats = {q["question_id"]: q["category"] for q in mt_bench.questions()}
        math_scores = [r["score"] for r in mine if cats[r["question_id"]] == "math" and r["score"] != -1]
        assert ours[model]["categories"]["math"] == pytest.approx(sum(math_scores) / len(math_scores))
    only = mt_bench.aggregate(rows, "beta")
    assert list(only) == ["beta"] and only["beta"] == ours["beta"]


def test_from_judgments_cli(tmp_path: Path, capsys: pytest.CaptureFixture,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gpt-4_single.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _official_rows(1)))
    assert main(["eval", "mt_bench", "--from-judgments", str(path), "--model", "gamma", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert list(got) == ["gamma"]
    assert got["gamma"]["score"] == pytest.approx(_show_result_single(path)["gamma"]["score"])
    # a library that prints to stdout while the command works (DeepSpeed's logger, once imported,
    # writes "[date] [WARNING] ..." there) must not break the JSON
    real = mt_bench.aggregate
    monkeypatch.setattr(mt_bench, "aggregate", lambda *a: (print("[2026] [WARNING] noise"), real(*a))[1])
    assert main(["eval", "mt_bench", "--from-judgments", str(path), "--model", "gamma", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == got and "[WARNING] noise" in captured.err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": 81, "model": "x"}\n')
    assert main(["eval", "mt_bench", "--from-judgments", str(bad)]) == 2
    assert "bad.jsonl:1: a single-mode judgment row needs ['score', 'turn']" in capsys.readouterr().err


def test_end_to_end_on_a_tiny_model_with_an_endpoint_judge(tiny_model_dir: Path, tmp_path: Path,
                                                            fresh_cache: Path,
                                                            capsys: pytest.CaptureFixture) -> None:

    def reply(messages: list[dict]) -> str:  # turn 1 gets 6, turn 2 gets 8; math gets no rating
        user = messages[-1]["content"]
        if "Reference Answer" in user and "<|The Start of Reference Answer|>" not in user:
            return "I am not sure."
        return "Good. Rating: [[8]]" if "### User:" in user else "Fine. Rating: [[6]]"

    out = tmp_path / "eval"
    with FakeOpenAI(reply=reply) as srv:
        judge = judge_config(tmp_path, srv.url, "gpt-4", 4096, (30, 60))
        base = ["eval", "mt_bench", "--model", str(tiny_model_dir), "--name", "tiny", "--judge", str(judge),
                "--limit", "1", "--max-new-tokens", "4", "--dtype", "float32", "--out", str(out),
                "--no-progress"]
        assert main([*base, "--dry-run"]) == 0
        assert not srv.requests  # the dry run calls no judge
        requests = [json.loads(x) for x in (out / "judge_requests.jsonl").read_text().splitlines()]
        assert len(requests) == 16 and requests[0]["messages"][0]["role"] == "system"
        assert json.loads((out / "cost.json").read_text())["requests"] == 16
        capsys.readouterr()
        assert main([*base, "--json"]) == 2  # a paid judge without --yes and no terminal
        assert "pass --yes to accept the cost" in capsys.readouterr().err
        assert main([*base, "--json", "--yes"]) == 0
        assert len(srv.requests) == 16
        # FastChat asks every judgment for 2048 tokens; a judge config may lower it, not raise it
        assert {r["max_tokens"] for r in srv.requests} == {2048}
        sent = sorted(json.dumps(r["messages"]) for r in srv.requests)
        assert sent == sorted(json.dumps(r["messages"]) for r in requests)  # the dry run was exact
    metrics = json.loads(capsys.readouterr().out)
    judge_decoding = json.loads((out / "results.json").read_text())["provenance"]["judge_decoding"]
    assert judge_decoding == {"temperature": 0.0, "max_tokens": 2048, "official_max_tokens": 2048}
    # 8 questions x 2 turns; math/reasoning/coding turn 1 unparseable
    assert metrics["parse_failures"] == 3 and metrics["n_judgments"] == 16
    assert metrics["turn_1"] == 6.0 and metrics["turn_2"] == 8.0
    assert metrics["score"] == pytest.approx((5 * 6 + 8 * 8) / 13)
    answers = [json.loads(x) for x in (out / "model_answer" / "tiny.jsonl").read_text().splitlines()]
    assert len(answers) == 8 and set(answers[0]) == {"question_id", "answer_id", "model_id", "choices",
                                                     "tstamp"}
    assert len(answers[0]["choices"][0]["turns"]) == 2
    judgments = out / "model_judgment" / "gpt-4_single.jsonl"
    rows = [json.loads(x) for x in judgments.read_text().splitlines()]
    assert set(rows[0]) == {"question_id", "model", "judge", "user_prompt", "judgment", "score", "turn",
                            "tstamp"}
    assert rows[0]["judge"] == ["gpt-4", "single-v1"]
    # FastChat's show_result.py reproduces the numbers from the files written
    theirs = _show_result_single(judgments)["tiny"]
    assert theirs["score"] == pytest.approx(metrics["score"])
    result = json.loads((out / "results.json").read_text())
    assert result["provenance"]["judge"].startswith("openai:gpt-4@http://127.0.0.1")
    assert result["provenance"]["n_examples"] == 8 and result["provenance"]["limit"] == 1


def test_end_to_end_with_a_local_judge(tiny_model_dir: Path, tmp_path: Path, fresh_cache: Path,
                                       local_judge, capsys: pytest.CaptureFixture) -> None:
    """The CPU path: the model under test and an in-process judge (here the tiny random model,
    whose judgments are random text: ratings that do not parse are counted as failures)."""
    judge = local_judge(4096, 8)
    judge_dir = tmp_path / "tiny-judge"
    out = tmp_path / "eval"
    assert main(["eval", "mt_bench", "--model", str(tiny_model_dir), "--name", "tiny", "--judge", str(judge),
                 "--limit", "1", "--max-new-tokens", "4", "--dtype", "float32", "--out", str(out),
                 "--no-progress", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    result = json.loads((out / "results.json").read_text())
    assert result["provenance"]["judge"] == f"local:{judge_dir}:float32"
    files = list((out / "model_judgment").iterdir())
    assert [f.name for f in files] == ["tiny-judge_single.jsonl"]  # the folder's name, not a path
    rows = [json.loads(x) for x in files[0].read_text().splitlines()]
    assert len(rows) == metrics["n_judgments"] == 16
    assert metrics["parse_failures"] == sum(mt_bench.parse_rating(r["judgment"]) == -1 for r in rows)
    assert rows[0]["judge"] == ["tiny-judge", "single-v1"]


def test_dry_run_needs_no_api_key(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  fresh_cache: Path, capsys: pytest.CaptureFixture) -> None:
    """A user without a key can still see every request and the bill of the official GPT-4 judge."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "eval"
    base = ["eval", "mt_bench", "--model", str(tiny_model_dir), "--name", "tiny", "--limit", "1",
            "--max-new-tokens", "2", "--dtype", "float32", "--out", str(out), "--no-progress"]
    assert main([*base, "--dry-run"]) == 0
    cost = json.loads((out / "cost.json").read_text())
    assert cost["judge"] == "openai:gpt-4" and cost["requests"] == 16 and cost["usd_high"] > 0
    assert "judge openai:gpt-4: 16 request(s) to send" in capsys.readouterr().out
    assert main(base) == 2  # the real run needs the key, and says so before loading the model
    assert "set the environment variable OPENAI_API_KEY" in capsys.readouterr().err
