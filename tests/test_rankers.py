"""Reward-model and LLM-judge rankers, the local judge's generated verdicts, and the agreement
measure, on tiny random models and the fake OpenAI server."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from openai_server import FakeOpenAI

from harness.agreement import labelled_pairs, load_annotations, measure, wilson
from harness.cli import main
from harness.judges.base import Decoding, JudgeRequest, Judgment
from harness.judges.cache import JudgmentCache
from harness.judges.config import JudgeConfig
from harness.judges.openai_client import OpenAIJudge
from harness.rank import get_ranker
from harness.rank.judge import DECISIVE, JudgeRanker, judge_prompt, pair_value, parse_rating


@pytest.fixture(scope="module")
def tiny_rm_dir(tmp_path_factory: pytest.TempPathFactory, chat_tokenizer_dir: Path) -> Path:
    """A 2-layer Llama sequence classifier (one output) with random weights and the chat tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tok = AutoTokenizer.from_pretrained(chat_tokenizer_dir)
    torch.manual_seed(7)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=96,
                      num_labels=1, pad_token_id=tok.pad_token_id)
    out = tmp_path_factory.mktemp("tiny-rm")
    LlamaForSequenceClassification(cfg).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


PROMPTS = ["Name a colour.", "Write a haiku about autumn leaves falling slowly.", "What is 2+2?"]
CANDS = [["Blue.", "Red, like a ripe tomato in August.", "Green"],
         ["Leaves drift down\nquietly\nthe year exhales", "Autumn.", "x " * 120],
         ["4", "Four, because two plus two is four.", "5"]]


def test_reward_model_scores_are_the_models_logits_batch_invariant_and_report_cuts(
        tiny_rm_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    r1 = get_ranker(f"reward:{tiny_rm_dir}", progress=False, batch_size=1)
    r8 = get_ranker(f"reward:{tiny_rm_dir}", progress=False, batch_size=8)
    s1, s8 = r1.score(PROMPTS, CANDS), r8.score(PROMPTS, CANDS)
    assert [len(s) for s in s8] == [3, 3, 3]
    assert torch.allclose(torch.tensor(s1), torch.tensor(s8), atol=1e-5)
    assert r8.details["truncated"] == 1 and r8.details["max_length"] == 96  # the "x x x ..." one
    assert "1 of 9 sequences cut to 96 tokens" in capsys.readouterr().err
    # one score by hand: the chat template of (user, assistant), the model's single logit
    tok = AutoTokenizer.from_pretrained(tiny_rm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_rm_dir)
    ids = tok.apply_chat_template([{"role": "user", "content": PROMPTS[2]},
                                   {"role": "assistant", "content": CANDS[2][1]}], tokenize=True,
                                  return_dict=True)["input_ids"]
    assert "<|im_start|>assistant" in tok.decode(ids)
    with torch.no_grad():
        want = model(input_ids=torch.tensor([ids])).logits[0, 0].item()
    assert s8[2][1] == pytest.approx(want, abs=1e-5)


def test_reward_model_errors_are_named(tmp_path: Path) -> None:
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot load a sequence-classification model"):
        get_ranker(f"reward:{tmp_path}", progress=False)


# --- judge as ranker --------------------------------------------------------------------------
def _judgment(text: str, rows: list[list[tuple[str, float]]] | None = None) -> Judgment:
    return Judgment(text, rows)


def test_pair_value_reads_logodds_at_the_verdict_token_or_falls_back_to_text() -> None:
    toks = ["Both", " are", " fine", ".", " [[", "B", "]]"]
    rows = [[(t, -0.1)] for t in toks]
    rows[5] = [("B", math.log(0.7)), ("A", math.log(0.2)), ("C", math.log(0.1))]
    assert pair_value(_judgment("".join(toks), rows)) == pytest.approx(math.log(0.2 / 0.7))
    assert pair_value(_judgment("Both are fine. [[B]]")) == -DECISIVE  # no logprobs
    assert pair_value(_judgment("[[A]]")) == DECISIVE
    assert pair_value(_judgment("a tie: [[C]]")) == 0.0
    assert pair_value(_judgment("I cannot say.")) is None
    # logprobs whose tokens do not spell the text are not trusted: fall back to the text
    assert pair_value(_judgment("[[A]]", [[("zz", -0.1)]])) == DECISIVE


@pytest.mark.parametrize(("text", "rating"), [("Rating: [[7]]", 7.0), ("[[8.5]] overall", 8.5),
                                              ("score [6] only", 6.0), ("no score", -1.0),
                                              ("[[3]] then [[9]]", 3.0)])
def test_rating_parse_as_fastchat(text: str, rating: float) -> None:
    assert parse_rating(text) == rating


def _server_judge(srv: FakeOpenAI, tmp_path: Path, **kw) -> tuple[OpenAIJudge, JudgeConfig]:
    cfg = JudgeConfig(model="fake-judge", base_url=srv.url, api_key_env=None, backoff_s=0.0,
                      max_backoff_s=0.0, **kw)
    return OpenAIJudge(cfg), cfg


def test_pairwise_judge_ranker_uses_mt_bench_prompt_and_cancels_position(tmp_path: Path) -> None:
    # The judge prefers the longer answer, whatever its position.
    def reply(messages: list[dict]) -> str:
        user = messages[-1]["content"]
        a = user.split("[The Start of Assistant A's Answer]\n")[1].split("\n[The End")[0]
        b = user.split("[The Start of Assistant B's Answer]\n")[1].split("\n[The End")[0]
        return "[[A]]" if len(a) > len(b) else "[[B]]" if len(b) > len(a) else "[[C]]"

    with FakeOpenAI(reply=reply) as srv:
        judge, cfg = _server_judge(srv, tmp_path)
        ranker = JudgeRanker(judge, cfg, "fake", pairwise=True, progress=False,
                             cache=JudgmentCache(tmp_path / "c.jsonl"))
        scores = ranker.score(["Say hi."], [["hi", "hello there", "hey"]])[0]
        assert len(srv.requests) == 6  # K(K-1) ordered games
        system = srv.requests[0]["messages"][0]["content"]
        assert system == judge_prompt("pair-v2")["system_prompt"]
        ranker.score(["Say hi."], [["hi", "hello there", "hey"]])
        assert len(srv.requests) == 6  # all cached
    assert scores[1] > scores[2] > scores[0]
    assert sum(scores) == pytest.approx(0.0, abs=1e-9)  # rows of an antisymmetric matrix
    assert scores[1] == pytest.approx(2 * 2 * DECISIVE / 3)


def test_single_judge_ranker_rates_and_counts_unparseable(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    ratings = {"good": "Rating: [[9]]", "fine": "[[5]]", "odd": "no idea"}

    def reply(messages: list[dict]) -> str:
        answer = messages[-1]["content"].split("[The Start of Assistant's Answer]\n")[1].split("\n")[0]
        return ratings[answer]

    with FakeOpenAI(reply=reply) as srv:
        judge, cfg = _server_judge(srv, tmp_path)
        ranker = JudgeRanker(judge, cfg, "fake", pairwise=False, progress=False,
                             cache=JudgmentCache(tmp_path / "c.jsonl"))
        scores = ranker.score(["q"], [["good", "fine", "odd"]])[0]
    assert scores == [9.0, 5.0, 7.0] and ranker.details["unparseable"] == 1
    assert "1 of 3 verdicts did not parse" in capsys.readouterr().err


def test_judge_ranker_failures_stop_with_ids_and_resume_without_repaying(tmp_path: Path) -> None:
    from harness.judges.base import JudgeFailures

    with FakeOpenAI() as srv:
        srv.fault("Assistant A's Answer]\nb\n", *["500"] * 3)
        judge, cfg = _server_judge(srv, tmp_path, max_retries=2)
        cache = JudgmentCache(tmp_path / "c.jsonl")
        ranker = JudgeRanker(judge, cfg, "fake", progress=False, cache=cache)
        with pytest.raises(JudgeFailures, match=r"0/1-0: InternalServerError after 3 attempts"):
            ranker.score(["q"], [["a", "b"]])
        assert len(cache) == 1 and len(srv.requests) == 4
        ranker.score(["q"], [["a", "b"]])
        assert len(srv.requests) == 5  # only the failed game is asked again


def test_local_judge_generates_with_produced_token_first(tiny_model_dir: Path) -> None:
    from harness.judges.local import LocalJudge

    judge = LocalJudge(str(tiny_model_dir), dtype="float32", device="cpu", batch_size=2)
    reqs = [JudgeRequest(f"r{i}", ({"role": "user", "content": f"Rate answer {i}."},),
                         Decoding(0.0, 5, True, 3)) for i in range(3)]
    batch = judge.complete(reqs, progress=False)
    again = judge.complete(reqs[::-1], progress=False)
    for r in reqs:
        j = batch.judgments[r.id]
        assert j.text == again.judgments[r.id].text  # greedy: order and batching do not matter
        assert len(j.top_logprobs) == j.completion_tokens <= 5
        for row in j.top_logprobs:  # greedy: the produced token is the most likely one
            assert row[0][1] == pytest.approx(max(lp for _, lp in row), abs=1e-5)


# --- agreement --------------------------------------------------------------------------------
class _LongerWins:
    name = "longer-wins"

    def score(self, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        return [[float(len(c)) for c in cands] for cands in candidates]


class _FirstWins:
    name = "first-wins"

    def score(self, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        return [[1.0] + [0.0] * (len(c) - 1) for c in candidates]


def test_agreement_on_published_annotations_against_a_direct_count() -> None:
    rows = load_annotations("alpaca_eval/annotations/alpaca-7b.json")
    pairs = labelled_pairs(rows, limit=200, seed=3)
    assert len(pairs) == 200 and all(p["preference"] != 1.5 for p in pairs)
    assert labelled_pairs(rows, limit=200, seed=3) == pairs  # seeded
    got = measure(_LongerWins(), pairs)
    direct = sum((len(p["output_2"]) > len(p["output_1"])) == (p["preference"] > 1.5)
                 for p in pairs if len(p["output_1"]) != len(p["output_2"]))
    ties = sum(len(p["output_1"]) == len(p["output_2"]) for p in pairs)
    assert got["agreement"] == pytest.approx((direct + ties / 2) / 200)
    assert got["agreement_swapped"] == got["agreement"] and got["consistency"] == 1.0
    assert got["first_position_wins"] == pytest.approx(0.5)
    lo, hi = got["agreement_ci95"]
    assert lo < got["agreement"] < hi and (lo, hi) == wilson(direct + ties / 2, 200)
    balanced = labelled_pairs(rows, limit=20, seed=3, balanced=True)
    assert len(balanced) == 20 and sum(p["label"] == 2 for p in balanced) == 10
    everything = labelled_pairs(rows, balanced=True)  # the rarer side sets the size
    n_rare = sum(float(r["preference"]) > 1.5 for r in rows)
    assert len(everything) == 2 * n_rare
    assert measure(_FirstWins(), balanced)["agreement"] == 0.5
    biased = measure(_FirstWins(), pairs)
    assert biased["first_position_wins"] == 1.0 and biased["consistency"] == 0.0
    assert biased["agreement"] + biased["agreement_swapped"] == pytest.approx(1.0)


def test_agreement_cli_with_a_reward_model(tiny_rm_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "agreement.json"
    code = main(["agreement", "--ranker", f"reward:{tiny_rm_dir}", "--annotations",
                 "alpaca_eval/annotations/gpt-3.5-turbo-1106.json", "--limit", "12", "--dtype",
                 "float32", "--out", str(out), "--json", "--no-progress"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["n"] == 12 and printed["annotator"] == ["weighted_alpaca_eval_gpt4_turbo"]
    assert printed["ranker"] == f"reward:{tiny_rm_dir}" and "transformers" in printed["packages"]
    assert main(["agreement", "--ranker", "smollm-judge", "--annotations", "nope.json"]) == 2


# --- rankers inside a run ---------------------------------------------------------------------
def _tiny_config(tmp_path: Path, model: Path, ranker: str, k: int = 2) -> Path:
    import yaml

    cfg = {"name": "tiny-ranker", "model": {"source": str(model)},
           "sampling": {"k": k, "seeds": list(range(k)), "max_new_tokens": 5, "batch_size": 4,
                        "dtype": "float32"},
           "training": {"learning_rate": 1e-3, "global_batch_size": 2, "per_device_batch_size": 2,
                        "max_length": 256, "max_prompt_length": 192, "dtype": "float32"},
           "prompts": {"iterations": ["embedded"], "per_iteration": 3, "heldout_size": 2},
           "ranker": ranker}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _tiny_run(tmp_path: Path, model: Path, ranker: str) -> Path:
    from harness.config import load_config
    from harness.pipeline import RunOptions, SPPORun

    out = tmp_path / "run"
    SPPORun(load_config(str(_tiny_config(tmp_path, model, ranker))),
            RunOptions(iters=1, out=out, progress=False)).run()
    return out


def test_run_with_a_reward_model_ranker(tiny_model_dir: Path, tiny_rm_dir: Path, tmp_path: Path) -> None:
    from harness.artifacts import read_json, read_jsonl

    out = _tiny_run(tmp_path, tiny_model_dir, f"reward:{tiny_rm_dir}")
    stages = read_json(out / "run.json")["stages"]
    assert stages["iter-1/rank"]["ranker_details"]["sequences"] == 6
    rows = read_jsonl(out / "iter-1" / "scores.jsonl")
    gens = read_jsonl(out / "iter-1" / "generations.jsonl")
    want = get_ranker(f"reward:{tiny_rm_dir}", progress=False).score(
        [g["prompt"] for g in gens], [g["responses"] for g in gens])
    got = [x for r in rows for x in r["scores"]]
    assert got == pytest.approx([x for row in want for x in row], abs=1e-5)


def test_run_with_an_endpoint_judge_ranker(tiny_model_dir: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.artifacts import read_json

    monkeypatch.setenv("SPPO_CACHE_DIR", str(tmp_path / "cache"))
    with FakeOpenAI(reply=lambda m: "Assistant A is better. [[A]]") as srv:
        judge = tmp_path / "endpoint.yaml"
        judge.write_text(json.dumps({"model": "fake-judge", "base_url": srv.url, "api_key_env": None,
                                     "max_tokens": 64, "concurrency": 4}))
        out = _tiny_run(tmp_path, tiny_model_dir, f"judge:{judge}")
        # 3 prompts x 2 ordered games in rank, 2 held-out prompts x 2 games in the evaluation;
        # a game whose prompt was already judged (identical responses) is not asked again
        distinct = {json.dumps(r["messages"]) for r in srv.requests}
        assert 0 < len(srv.requests) == len(distinct) <= 3 * 2 + 2 * 2
    stage = read_json(out / "run.json")["stages"]["iter-1/rank"]
    assert stage["ranker"] == f"judge:{judge}" and stage["ranker_details"]["unparseable"] == 0


# --- pairwise probabilities (preferences.probabilities: pairwise) -----------------------------
def test_pairwise_judge_ranker_probabilities_symmetrised_against_hand_computed_values(
        tmp_path: Path) -> None:
    # The longer answer wins, except "hi" vs "yo": "[[A]]" with "hi" first, no verdict with "yo" first.
    def reply(messages: list[dict]) -> str:
        user = messages[-1]["content"]
        a = user.split("[The Start of Assistant A's Answer]\n")[1].split("\n[The End")[0]
        b = user.split("[The Start of Assistant B's Answer]\n")[1].split("\n[The End")[0]
        if {a, b} == {"hi", "yo"}:
            return "[[A]]" if a == "hi" else "I cannot decide."
        return "[[A]]" if len(a) > len(b) else "[[B]]"

    cands = ["hi", "hello there", "yo", "hey"]
    with FakeOpenAI(reply=reply) as srv:
        judge, cfg = _server_judge(srv, tmp_path)
        ranker = JudgeRanker(judge, cfg, "fake", pairwise=True, progress=False,
                             cache=JudgmentCache(tmp_path / "c.jsonl"))
        scores, (p,) = ranker.score_pairwise(["Say hi."], [cands])
        assert len(srv.requests) == 12  # K(K-1) ordered games, asked once for both outputs
        assert ranker.score(["Say hi."], [cands]) == scores and len(srv.requests) == 12
    assert ranker.details["unparseable"] == 2  # (counted by each call)
    # P_ij = ½(σ(C_ij) + σ(−C_ji)), a stated winner C = ±ln 19 (σ = 0.95 / 0.05), no verdict C = 0:
    #   P(hi ≻ yo)  = ½(σ(ln 19) + σ(−0))     = ½(0.95 + 0.5)  = 0.725
    #   P(yo ≻ hi)  = ½(σ(0) + σ(−ln 19))     = ½(0.5 + 0.05)  = 0.275
    #   longer ≻ shorter = ½(σ(ln 19) + σ(ln 19)) = 0.95, shorter ≻ longer = 0.05
    want = [[0.5, 0.05, 0.725, 0.05],
            [0.95, 0.5, 0.95, 0.95],
            [0.275, 0.05, 0.5, 0.05],
            [0.95, 0.05, 0.95, 0.5]]
    for i in range(4):
        assert p[i][i] == 0.5
        for j in range(4):
            assert p[i][j] + p[j][i] == pytest.approx(1.0, abs=1e-15)
            assert p[i][j] == pytest.approx(want[i][j], abs=1e-12), (i, j)


def test_pointwise_rankers_refuse_pairwise_probabilities_before_any_work(
        tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from harness.errors import ConfigError
    from harness.rank import check_ranker, score_pairwise

    for name in ("judge-single:nonexistent.yaml", f"reward:{tmp_path}", "smollm-judge", "smollm-pmi"):
        with pytest.raises(ConfigError, match=rf"ranker '{name}' is pointwise only .*probabilities: "
                                              r"pairwise needs a ranker that compares"):
            check_ranker(name, pairwise=True)
    check_ranker("pairrm", pairwise=True)  # (needs llm-blender, installed here)
    # through `harness run`: refused before the run directory exists
    out = tmp_path / "run"
    cfg = _tiny_config(tmp_path, tiny_model_dir, "smollm-pmi")
    assert main(["run", "--base", str(cfg), "--iters", "1", "--out", str(out), "--no-progress",
                 "--probabilities", "pairwise"]) == 2
    assert "error: ranker 'smollm-pmi' is pointwise only" in capsys.readouterr().err
    assert not out.exists()
    # a ranker object without pairwise comparisons, and a pointwise judge, refuse too
    with FakeOpenAI() as srv:
        judge, jcfg = _server_judge(srv, tmp_path)
        single = JudgeRanker(judge, jcfg, "fake", pairwise=False, progress=False,
                             cache=JudgmentCache(tmp_path / "c.jsonl"))
        with pytest.raises(ConfigError, match="ranker 'judge-single:fake' is pointwise only"):
            score_pairwise(single, ["q"], [["a", "b"]])
        assert not srv.requests

    class Pointwise:
        name = "plugin-ranker"

        def score(self, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
            return [[0.0] * len(c) for c in candidates]

    with pytest.raises(ConfigError, match="ranker 'plugin-ranker' is pointwise only"):
        score_pairwise(Pointwise(), ["q"], [["a", "b"]])


def test_cli_run_with_a_judge_ranker_and_pairwise_probabilities(
        tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.artifacts import read_json, read_jsonl

    monkeypatch.setenv("SPPO_CACHE_DIR", str(tmp_path / "cache"))

    def longer(messages: list[dict]) -> str:  # the longer answer wins, equal lengths tie
        user = messages[-1]["content"]
        a = user.split("[The Start of Assistant A's Answer]\n")[1].split("\n[The End")[0]
        b = user.split("[The Start of Assistant B's Answer]\n")[1].split("\n[The End")[0]
        return "[[A]]" if len(a) > len(b) else "[[B]]" if len(b) > len(a) else "[[C]]"

    with FakeOpenAI(reply=longer) as srv:
        judge = tmp_path / "endpoint.yaml"
        judge.write_text(json.dumps({"model": "fake-judge", "base_url": srv.url, "api_key_env": None,
                                     "max_tokens": 64, "concurrency": 4}))
        out = tmp_path / "run"
        cfg = _tiny_config(tmp_path, tiny_model_dir, f"judge:{judge}", k=3)
        assert main(["run", "--base", str(cfg), "--iters", "1", "--out", str(out), "--device", "cpu",
                     "--no-progress", "--probabilities", "pairwise"]) == 0
    meta = read_json(out / "run.json")
    assert meta["config"]["preferences"] == {"probabilities": "pairwise", "ties": "distinct"}
    assert meta["stages"]["iter-1/probabilities"]["probabilities"] == "pairwise"
    gens = read_jsonl(out / "iter-1" / "generations.jsonl")
    ranked = read_jsonl(out / "iter-1" / "scores.jsonl")
    prefs = read_jsonl(out / "iter-1" / "preferences.jsonl")
    assert any(len(set(map(len, g["responses"]))) > 1 for g in gens)  # some game has a winner
    for g, r, pref in zip(gens, ranked, prefs, strict=True):
        n = [len(x) for x in g["responses"]]
        # both orders agree: 0.95 for the longer, 0.5 for equal lengths
        want = [[0.5 if a == b else 0.95 if a > b else 0.05 for b in n] for a in n]
        assert [x for row in r["pairwise"] for x in row] == pytest.approx(
            [x for row in want for x in row], abs=1e-12)
        means = [sum(row) / 3 for row in want]
        w = means.index(max(means))
        lo = max(i for i in range(3) if means[i] == min(means))  # ties: distinct (the last lowest)
        assert (pref["chosen_index"], pref["rejected_index"]) == (w, lo)
        assert pref["chosen_probs"] == pytest.approx(want[w][lo], abs=1e-12)
