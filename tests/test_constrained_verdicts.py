"""Constrained verdicts: a local judge too small to write the official verdict format answers
MT-Bench and Arena-Hard with the official rating or label it gives the highest log-probability.

What is checked: the cached-prefix scoring equals a plain forward pass over prompt + choice, and
its batches of equal-length choices give each choice the bits it gets scored alone; the chosen
reply is the argmax; every judgment parses with the official parsers (so the score is a number);
the judge's id, and with it the protocol key, says "constrained"; generated requests keep their
cache keys."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from harness.benchmarks import arena_hard as ah
from harness.benchmarks import mt_bench
from harness.cli import main
from harness.errors import ConfigError
from harness.judges.base import Decoding, JudgeRequest
from harness.judges.config import load_judge_config
from harness.logprobs import continuation_logprobs


def _judge(tmp_path: Path, model_dir: Path, context: int) -> Path:
    """A constrained local judge on a copy of the tiny model with a longer context."""
    judge_dir = shutil.copytree(model_dir, tmp_path / "tiny-judge")
    config = json.loads((judge_dir / "config.json").read_text())
    (judge_dir / "config.json").write_text(json.dumps({**config, "max_position_embeddings": context}))
    path = tmp_path / "constrained.yaml"
    path.write_text(json.dumps({"kind": "local", "model": str(judge_dir), "dtype": "float32",
                                "verdict": "constrained"}))
    return path


def _plain_logprob(model: torch.nn.Module, prompt: list[int], cont: list[int]) -> float:
    """log p(cont | prompt) from one forward pass over the whole sequence, no cache."""
    ids = torch.tensor([prompt + cont])
    with torch.no_grad():
        logp = model(input_ids=ids).logits[0].double().log_softmax(-1)
    return sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(cont))


def test_cached_prefix_scores_equal_a_plain_forward_pass(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    prompt = list(range(5, 45))
    choices = [[7], [7, 9, 11], [300, 2], [7, 9, 11, 13, 15, 17]]  # shared prefixes, lengths 1..6
    got = continuation_logprobs(model, prompt, choices)
    want = [_plain_logprob(model, prompt, c) for c in choices]
    assert got == pytest.approx(want, abs=1e-4)  # float32 logits, summed over ≤ 6 tokens
    assert continuation_logprobs(model, prompt, choices[::-1]) == pytest.approx(want[::-1], abs=1e-4)
    with pytest.raises(ValueError, match="at least one token"):
        continuation_logprobs(model, prompt, [[1], []])


def _one_at_a_time(model: torch.nn.Module, prompt: list[int], choices: list[list[int]]) -> list[float]:
    """How the constrained judge scored choices until session 25: each choice alone on the
    prompt's KV cache, which is cut back to the prompt after it (full logits for the prompt)."""
    from harness.models import kv_cache_name

    name = kv_cache_name(model)
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([prompt]), use_cache=True)
        cache, first = getattr(out, name), out.logits[0, -1].float().log_softmax(-1)
        totals = []
        for c in choices:
            total = float(first[c[0]])
            if len(c) > 1:
                logp = model(input_ids=torch.tensor([c[:-1]]), use_cache=True,
                             **{name: cache}).logits[0].float().log_softmax(-1)
                total += float(logp[torch.arange(len(c) - 1), torch.tensor(c[1:])].sum())
                cache.crop(-(len(c) - 1))
            totals.append(total)
    return totals


def test_batched_choices_score_as_each_alone_on_the_embedded_judge() -> None:
    """The embedded judge on MT-Bench's judging prompt for questions 112 and 119 with GPT-4's
    reference answers as the answers to rate: MT-Bench's ten ratings ("10" one token longer than
    the rest), and for 112 Arena-Hard's five labels too.

    In float32, batched scores equal one choice at a time within 1e-4 nats (the prompt's
    last-position logits come from a one-row product, whose last bits may differ from the whole
    prompt's: up to 9e-6 nats here); that checks the batching. In the dtype a run gives the judge
    here (bf16 where the CPU has native bf16), the batched scores stay within 1 nat of float32's.
    bf16's own error is about half that here; a wrong position or mask moves them by whole nats.
    Why not bits: with AVX512-BF16 alone they were the same bits as one at a time, but oneDNN's
    AMX kernels round differently for different row counts and thread counts. On an AMX Xeon
    (session 29) both orders departed from float32 alike: batched by up to 0.21 nats at one
    thread and 0.36 at two, one at a time by up to 0.16 and 0.45."""
    from harness.judges.local import LocalJudge
    from harness.precision import auto_dtype

    judges = {dtype: LocalJudge(dtype=dtype) for dtype in {"float32", auto_dtype()}}
    questions = {q["question_id"]: q for q in mt_bench.questions()}
    template = mt_bench.judge_prompt("single-v1")
    labels = (mt_bench.rating_choices(template["output_format"]), ah.verdict_choices("v0.1"))
    for qid in (112, 119):
        user = template["prompt_template"].format(question=questions[qid]["turns"][0],
                                                  answer=mt_bench.references()[qid][0])
        messages = ({"role": "system", "content": template["system_prompt"]},
                    {"role": "user", "content": user})
        exact = judges["float32"]
        prompt = exact._encode(messages, str(qid))
        for replies in labels[: 2 if qid == 112 else 1]:
            choices = [exact.tokenizer(c, add_special_tokens=False)["input_ids"] for c in replies]
            want = _one_at_a_time(exact.model, prompt, choices)
            assert continuation_logprobs(exact.model, prompt, choices) == pytest.approx(want, abs=1e-4), qid
            got = continuation_logprobs(judges[auto_dtype()].model, prompt, choices)
            assert got == pytest.approx(want, abs=1.0), qid


def test_the_judge_replies_with_its_most_likely_choice(tiny_model_dir: Path, tmp_path: Path) -> None:
    from harness.judges.factory import get_judge

    cfg = load_judge_config(str(_judge(tmp_path, tiny_model_dir, 4096)))
    judge = get_judge(cfg)
    choices = mt_bench.rating_choices("[[rating]]")
    request = JudgeRequest("r1", ({"role": "user", "content": "Rate this: hello"},),
                           Decoding(0.0, 16, choices=choices))
    plain = JudgeRequest("r2", ({"role": "user", "content": "Say hi"},), Decoding(0.0, 3))
    batch = judge.complete([request, plain], progress=False)
    chosen = batch.judgments["r1"]
    prompt = judge._encode(request.messages, "r1")
    want = {c: _plain_logprob(judge.model, prompt, judge.tokenizer(c, add_special_tokens=False)["input_ids"])
            for c in choices}
    assert chosen.choice_logprobs == pytest.approx(want, abs=1e-4)
    assert chosen.text == max(want, key=want.__getitem__)
    assert mt_bench.parse_rating(chosen.text) == choices.index(chosen.text) + 1
    assert batch.judgments["r2"].choice_logprobs is None  # a request without choices is generated
    assert cfg.id.endswith(":float32:constrained")


def test_constrained_needs_a_local_judge() -> None:
    with pytest.raises(ConfigError, match="verdict: constrained needs kind: local"):
        load_judge_config("gpt-4", verdict="constrained")


def test_generated_requests_keep_their_cache_keys() -> None:
    """Keys written before choices existed stay valid; a choice list is part of the key."""
    request = JudgeRequest("x", ({"role": "user", "content": "hi"},), Decoding(0.0, 5))
    legacy = {"temperature": 0.0, "max_tokens": 5, "logprobs": False, "top_logprobs": 0}
    blob = json.dumps({"judge": "j", "messages": [{"role": "user", "content": "hi"}], "decoding": legacy},
                      sort_keys=True, ensure_ascii=False)
    assert request.key("j") == hashlib.sha256(blob.encode()).hexdigest()
    constrained = JudgeRequest("x", request.messages, Decoding(0.0, 5, choices=("a", "b")))
    assert constrained.key("j") != request.key("j")
    assert asdict(constrained.decoding)["choices"] == ("a", "b")


def _eval(benchmark: str, limit: int, context: int, model_dir: Path, tmp_path: Path,
          capsys: pytest.CaptureFixture) -> tuple[Path, dict]:
    """``harness eval <benchmark>`` of the tiny model, judged by a constrained copy of it."""
    judge = _judge(tmp_path, model_dir, context)
    out = tmp_path / "eval"
    assert main(["eval", benchmark, "--model", str(model_dir), "--name", "tiny", "--judge", str(judge),
                 "--limit", str(limit), "--max-new-tokens", "4", "--dtype", "float32", "--out", str(out),
                 "--no-progress", "--json"]) == 0
    return out, json.loads(capsys.readouterr().out.splitlines()[-1])


def test_mt_bench_with_a_constrained_local_judge(tiny_model_dir: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    """Every judgment is an official rating, so the score is a number; the protocol says how."""
    monkeypatch.setenv("SPPO_CACHE_DIR", str(tmp_path / "cache"))
    out, metrics = _eval("mt_bench", 1, 4096, tiny_model_dir, tmp_path, capsys)
    judged = out / "model_judgment" / "tiny-judge_single.jsonl"
    rows = [json.loads(x) for x in judged.read_text().splitlines()]
    assert len(rows) == 16 and metrics["parse_failures"] == 0
    assert all(r["judgment"] in mt_bench.rating_choices("[[rating]]") for r in rows)
    assert metrics["score"] == pytest.approx(sum(r["score"] for r in rows) / 16)
    prov = json.loads((out / "results.json").read_text())["provenance"]
    assert prov["judge"].endswith(":constrained") and prov["verdict"].startswith("constrained")


def test_arena_hard_with_a_constrained_local_judge(tiny_model_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    """Every game gets one of the five official labels on the first attempt: no invalid game."""
    monkeypatch.setenv("SPPO_CACHE_DIR", str(tmp_path / "cache"))
    out, metrics = _eval("arena_hard", 2, 16384, tiny_model_dir, tmp_path, capsys)
    judged = out / "model_judgment" / "tiny-judge" / "tiny.jsonl"
    rows = [json.loads(x) for x in judged.read_text().splitlines()]
    labels = [g["score"] for r in rows for g in r["games"]]
    assert len(labels) == 4 and set(labels) <= {"A>>B", "A>B", "A=B", "B>A", "B>>A"}
    assert all(g["judgment"].count("[[") == 1 for r in rows for g in r["games"])  # one attempt each
    assert metrics["invalid_games"] == 0 and metrics["score"] is not None
    assert ah.verdict_choices("v0.1") == tuple(f"My final verdict is: [[{x}]]"
                                               for x in ("A>>B", "A>B", "A=B", "B>A", "B>>A"))
    prov = json.loads((out / "results.json").read_text())["provenance"]
    assert prov["judge"].endswith(":constrained")
