"""MT-Bench single-answer grading, faithful to FastChat's ``llm_judge`` (data, prompts, formats).

- Data: FastChat's 80 two-turn questions, GPT-4 reference answers (questions 101–130) and judge
  prompts (``mt_bench/*`` data files, sha256-checked). Prompts are read from the file.
- Answers (``gen_model_answer.py``): two turns through the model's chat template, turn 2 seeing
  the model's own turn-1 answer; temperature per category (:data:`TEMPERATURE`, greedy at 0);
  1024 new tokens. Written as ``model_answer/<model>.jsonl`` in FastChat's row format.
- Judgments (``gen_judgment.py``, single mode): ``single-v1`` for turn 1 and
  ``single-v1-multi-turn`` for turn 2; math, reasoning and coding use the ``-math-`` prompts with
  the GPT-4 reference answer. The system prompt goes as a system message; the judge (GPT-4 by
  default, temperature 0, 2048 tokens as FastChat asks whatever the judge config says; an
  in-process ``local`` judge keeps its config's bound, for CPU time) answers through
  :mod:`harness.judges` (cached, retried, cost-gated). Rating: ``[[x]]``, else ``[x]``, else −1
  (a parse failure). Written as ``model_judgment/<judge>_single.jsonl`` in FastChat's row format,
  so FastChat's ``show_result.py`` reproduces the numbers from these files.
- Scores (``show_result.py``, single mode): rows rated −1 dropped; turn-1 mean, turn-2 mean, and
  the mean over all rows of both turns (the headline); plus per-category means, parse failures,
  and the standard error over questions of the per-question mean.

``--limit N`` keeps the first N questions of each of the 8 categories.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import Field

from harness import datafiles
from harness.artifacts import partial_path, read_jsonl, write_json, write_jsonl
from harness.benchmarks import Benchmark, Metric, StageContext, register, settings
from harness.benchmarks.answers import Chat, answer_in_chunks
from harness.config import Section
from harness.errors import DataError
from harness.judges.base import Decoding, JudgeRequest

NAME = "mt_bench"
JUDGE_MAX_TOKENS = 2048  # FastChat's common.py: every judge call asks for 2048 tokens
VERSION = "fastchat-0e6d3e4"  # the FastChat commit of the data files (question set and prompts)
QUESTIONS = "mt_bench/question.jsonl"
REFERENCES = "mt_bench/reference_answer/gpt-4.jsonl"
PROMPTS = "mt_bench/judge_prompts.jsonl"
NEED_REF_CATS = ("math", "reasoning", "coding")
# FastChat's temperature_config (fastchat/llm_judge/common.py); other categories get 0.7.
TEMPERATURE = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
               "reasoning": 0.0, "stem": 0.1, "humanities": 0.1}
MAX_NEW_TOKENS = 1024
OFFICIAL_JUDGE = "gpt-4"
_RATING = (re.compile(r"\[\[(\d+\.?\d*)\]\]"), re.compile(r"\[(\d+\.?\d*)\]"))


class MTBenchConfig(Section):
    """``evaluation.mt_bench``."""

    judge: str = Field(OFFICIAL_JUDGE, description="a judge config in judge_configs/, a YAML path, or "
                                                   "local[:<model>] (official: gpt-4)")
    limit: int | None = Field(None, ge=1, description="first N questions of each category (smoke runs)")
    max_new_tokens: int = Field(MAX_NEW_TOKENS, ge=1,
                                description="answer length per turn (FastChat: 1024)")


def questions(limit: int | None = None) -> list[dict[str, Any]]:
    """The 80 questions in file order; with ``limit``, the first N of each category."""
    rows = datafiles.fetch_jsonl(QUESTIONS)
    if limit is None:
        return rows
    seen: dict[str, int] = {}
    kept = []
    for q in rows:
        seen[q["category"]] = seen.get(q["category"], 0) + 1
        if seen[q["category"]] <= limit:
            kept.append(q)
    return kept


@functools.cache
def references() -> dict[int, list[str]]:
    """GPT-4's reference answers (both turns) by question id."""
    return {r["question_id"]: r["choices"][0]["turns"] for r in datafiles.fetch_jsonl(REFERENCES)}


@functools.cache
def judge_prompt(name: str) -> dict[str, Any]:
    """One of FastChat's judge prompts (name, type, system_prompt, prompt_template, output_format)."""
    for row in datafiles.fetch_jsonl(PROMPTS):
        if row["name"] == name:
            return row
    raise DataError(f"{PROMPTS} has no judge prompt {name!r}")


def parse_rating(text: str) -> float:
    """FastChat's rating: the first ``[[x]]``, else the first ``[x]``, else −1."""
    for pattern in _RATING:
        m = pattern.search(text)
        if m:
            return float(m.group(1))
    return -1.0


def rating_choices(output_format: str) -> tuple[str, ...]:
    """Every rating in the judge prompt's official format (``[[rating]]``, asked for on a scale of
    1 to 10 as in "Rating: [[5]]"): the replies a constrained judge chooses from."""
    return tuple(f"Rating: {output_format.replace('rating', str(i))}" for i in range(1, 11))


def prompt_name(category: str, turn: int) -> str:
    math = category in NEED_REF_CATS
    return f"single-{'math-' if math else ''}v1{'-multi-turn' if turn == 2 else ''}"


# answers ------------------------------------------------------------------------------------
def answer(qs: list[dict[str, Any]], chat: Chat, model_id: str, path: Path,
           max_new_tokens: int = MAX_NEW_TOKENS) -> list[dict[str, Any]]:
    """Both turns of every question, in FastChat's ``model_answer`` row format, written to
    ``path`` (replies are committed in chunks as they come: see :mod:`.answers`)."""
    def req(q: dict[str, Any], messages: list[dict[str, str]], turn: int) -> JudgeRequest:
        temp = TEMPERATURE.get(q["category"], 0.7)
        return JudgeRequest(f"q{q['question_id']}/turn{turn}", tuple(messages),
                            Decoding(temp if temp >= 1e-4 else 0.0, max_new_tokens))

    first = answer_in_chunks([req(q, [{"role": "user", "content": q["turns"][0]}], 1) for q in qs],
                             chat, path)
    second = answer_in_chunks([req(q, [{"role": "user", "content": q["turns"][0]},
                                       {"role": "assistant", "content": first[f"q{q['question_id']}/turn1"]},
                                       {"role": "user", "content": q["turns"][1]}], 2) for q in qs],
                              chat, path)
    rows = []
    for q in qs:
        turns = [first[f"q{q['question_id']}/turn1"], second[f"q{q['question_id']}/turn2"]]
        digest = hashlib.sha256(json.dumps([model_id, q["question_id"], turns]).encode()).hexdigest()
        rows.append({"question_id": q["question_id"], "answer_id": digest[:22], "model_id": model_id,
                     "choices": [{"index": 0, "turns": turns}], "tstamp": time.time()})
    write_jsonl(path, rows)
    partial_path(path).unlink(missing_ok=True)
    return rows


# judgments ----------------------------------------------------------------------------------
def judge_requests(qs: list[dict[str, Any]], answers: list[dict[str, Any]], model: str,
                   decoding: Decoding, constrained: bool = False
                   ) -> list[tuple[JudgeRequest, dict[str, Any]]]:
    """Every single-mode judge request for ``model``'s answers, with its FastChat row fields;
    ``constrained``: each asks the judge to choose among :func:`rating_choices`."""
    by_id = {a["question_id"]: a["choices"][0]["turns"] for a in answers}
    out = []
    for q in qs:
        qid = q["question_id"]
        if qid not in by_id:
            raise DataError(f"model_answer for {model} has no answer to question {qid}")
        ans = by_id[qid]
        ref: dict[str, str] = {}
        if q["category"] in NEED_REF_CATS:
            if qid not in references():
                raise DataError(f"{REFERENCES} has no reference answer for question {qid}")
            ref = {"ref_answer_1": references()[qid][0], "ref_answer_2": references()[qid][1]}
        for turn in (1, 2):
            name = prompt_name(q["category"], turn)
            p = judge_prompt(name)
            if turn == 1:
                user = p["prompt_template"].format(question=q["turns"][0], answer=ans[0], **ref)
            else:
                user = p["prompt_template"].format(question_1=q["turns"][0], question_2=q["turns"][1],
                                                   answer_1=ans[0], answer_2=ans[1], **ref)
            messages = ({"role": "system", "content": p["system_prompt"]},
                        {"role": "user", "content": user})
            request = JudgeRequest(f"{model}/q{qid}/turn{turn}", messages,
                                   replace(decoding, choices=rating_choices(p["output_format"]))
                                   if constrained else decoding)
            out.append((request, {"question_id": qid, "model": model, "prompt": name,
                                  "user_prompt": user, "turn": turn}))
    return out


def judgment_row(fields: dict[str, Any], judge_model: str, text: str) -> dict[str, Any]:
    """A row of FastChat's ``model_judgment/<judge>_single.jsonl``."""
    return {"question_id": fields["question_id"], "model": fields["model"],
            "judge": [judge_model, fields["prompt"]], "user_prompt": fields["user_prompt"],
            "judgment": text, "score": parse_rating(text), "turn": fields["turn"], "tstamp": time.time()}


# scores -------------------------------------------------------------------------------------
def read_judgments(path: Path) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{n}: not a JSON line: {exc}") from None
        missing = {"question_id", "model", "score", "turn"} - set(row)
        if missing:
            raise DataError(f"{path}:{n}: a single-mode judgment row needs {sorted(missing)}")
        rows.append(row)
    return rows


def aggregate(rows: list[dict[str, Any]], model: str | None = None) -> dict[str, dict[str, Any]]:
    """show_result.py's single mode per model, plus categories, parse failures and a standard error.

    Returns ``{model: metrics}``; scores are on FastChat's 1–10 scale.
    """
    import pandas as pd

    if not rows:
        raise DataError("no judgments to aggregate")
    df = pd.DataFrame(rows)
    if model is not None:
        df = df[df["model"] == model]
        if df.empty:
            raise DataError(f"no judgments of model {model!r}")
    category = {q["question_id"]: q["category"] for q in datafiles.fetch_jsonl(QUESTIONS)}
    out: dict[str, dict[str, Any]] = {}
    for name, all_rows in df.groupby("model", sort=True):
        rated = all_rows[all_rows["score"] != -1]
        per_q = rated.groupby("question_id")["score"].mean()
        turn = {t: rated[rated["turn"] == t]["score"] for t in (1, 2)}
        cats = rated.assign(category=rated["question_id"].map(category)).groupby("category")["score"]
        out[str(name)] = {
            "score": float(rated["score"].mean()) if len(rated) else None,
            "turn_1": float(turn[1].mean()) if len(turn[1]) else None,
            "turn_2": float(turn[2].mean()) if len(turn[2]) else None,
            "standard_error": float(per_q.std(ddof=1) / len(per_q) ** 0.5) if len(per_q) > 1 else None,
            "categories": {str(c): float(v) for c, v in cats.mean().items()},
            "n_questions": int(all_rows["question_id"].nunique()),
            "n_judgments": len(all_rows),
            "parse_failures": int((all_rows["score"] == -1).sum()),
        }
    return out


# the whole benchmark for one model ----------------------------------------------------------
def evaluate(model_name: str, chat: Chat, out_dir: Path, judge: str = OFFICIAL_JUDGE,
             limit: int | None = None, max_new_tokens: int = MAX_NEW_TOKENS, yes: bool = False,
             dry_run: bool = False, device: str | None = None,
             provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Answer, judge and score ``model_name``; each step's files are kept in ``out_dir`` and reused.

    ``chat(requests) -> {id: reply}`` answers chats with the model under test. With ``dry_run``
    the judge requests and the cost estimate are written (``judge_requests.jsonl``,
    ``cost.json``) and no judge is called.
    """
    from harness.judges import load_judge_config
    from harness.judges.cache import JudgmentCache, judge_cached
    from harness.judges.cost import confirm, estimate
    from harness.judges.factory import get_judge

    cfg = load_judge_config(judge)
    qs = questions(limit)
    answers_path = out_dir / "model_answer" / f"{model_name}.jsonl"
    if answers_path.exists():
        answers = read_jsonl(answers_path)
    else:
        answers = answer(qs, chat, model_name, answers_path, max_new_tokens)
    # FastChat names the judge by its model; a local judge by its folder's name
    judge_model = Path(cfg.model.split(":")[-1]).name if cfg.kind == "local" else cfg.model
    # FastChat's judge budget; a judge config may only lower it (recorded), as for Arena-Hard
    decoding = Decoding(cfg.temperature, min(JUDGE_MAX_TOKENS, cfg.max_tokens))
    pending = judge_requests(qs, answers, model_name, decoding, cfg.constrained)
    cache = JudgmentCache.for_judge(cfg.id)
    cost = estimate(cfg, cfg.id, [r for r, _ in pending], cache)
    if dry_run:
        write_jsonl(out_dir / "judge_requests.jsonl",
                    ({"id": r.id, "model": cfg.model, "messages": list(r.messages),
                      "temperature": r.decoding.temperature, "max_tokens": r.decoding.max_tokens}
                     for r, _ in pending))
        write_json(out_dir / "cost.json", cost.__dict__)
        print(cost.summary())
        return {"benchmark": NAME, "dry_run": True, "requests": len(pending), "cost": cost.__dict__}
    confirm(cost, cfg, yes)
    batch = judge_cached(get_judge(cfg, device), [r for r, _ in pending], cache)
    batch.raise_failures(f"MT-Bench judge {cfg.id}")
    rows = [judgment_row(fields, judge_model, batch.judgments[r.id].text) for r, fields in pending]
    file_name = re.sub(r"[^A-Za-z0-9._-]+", "_", judge_model)  # e.g. org/model on a vLLM server
    write_jsonl(out_dir / "model_judgment" / f"{file_name}_single.jsonl", rows)
    metrics = aggregate(rows, model_name)[model_name]
    record = {"judge": cfg.id, "judge_prompts": "single-v1 / single-math-v1 (+ multi-turn)",
              "verdict": "constrained to the official ratings by log-probability" if cfg.constrained
              else "generated",
              "references": "gpt-4", "n_examples": len(qs), "limit": limit,
              "judge_decoding": {"temperature": decoding.temperature,
                                 "max_tokens": decoding.max_tokens,
                                 "official_max_tokens": JUDGE_MAX_TOKENS},
              "decoding": {"temperature": "per category (FastChat)", "max_new_tokens": max_new_tokens},
              **(provenance or {})}
    result = {"benchmark": NAME, "version": VERSION, "metrics": metrics, "provenance": record}
    write_json(out_dir / "results.json", result)
    return result


# in a run, and in the registry -----------------------------------------------------------------
def run_stage(ctx: StageContext, t: int) -> dict[str, Any]:
    """MT-Bench of iteration ``t``'s checkpoint: it answers, the configured judge grades."""
    cfg: MTBenchConfig = settings(ctx.config, NAME)
    result = evaluate(ctx.model_name(t), ctx.chat(t), ctx.eval_dir(t, NAME), judge=cfg.judge,
                      limit=cfg.limit, max_new_tokens=cfg.max_new_tokens, yes=ctx.yes,
                      device=ctx.device, provenance=ctx.provenance(t))
    m = result["metrics"]
    return {k: m[k] for k in ("score", "turn_1", "turn_2", "parse_failures")}


def _preflight(config: Any) -> None:
    from harness.judges import check_judge

    check_judge(settings(config, NAME).judge)


BENCHMARK = register(Benchmark(
    NAME, "MT-Bench",
    (Metric("score", "standard_error", "MT-Bench (1-10)"), Metric("turn_1", None, "MT-Bench turn 1"),
     Metric("turn_2", None, "MT-Bench turn 2")),
    note=lambda metrics, metric, version: None if metrics.get(metric) is not None else (
        f"no parseable rating: {metrics.get('parse_failures')} judgments without [[x]]"),
    published_metrics={("mt_bench", "mt_bench_overall"): "score", ("mt_bench", "mt_bench_turn1"): "turn_1",
                       ("mt_bench", "mt_bench_turn2"): "turn_2"},
    published_protocol=lambda row: (VERSION, {"judge": f"openai:{OFFICIAL_JUDGE}", "n_examples": 80,
                                              "limit": None, "profile": "full"}),
    preflight=_preflight, stage=run_stage, cli="harness.commands.eval_mt_bench", config=MTBenchConfig))
