"""Arena-Hard-Auto v0.1 and v2.0, faithful to lmarena/arena-hard-auto (data, prompts, verdicts, files).

- Data (``arena_hard/*`` data files, sha256-checked): the questions, the baseline's answers and
  the judge settings are read from the official files; no prompt is retyped.
  v0.1 (the SPPO paper's): 500 questions, baseline ``gpt-4-0314``, judge ``gpt-4-1106-preview``
  at temperature 0 and 4096 tokens, system prompt and template from ``judge_config_v0.1.yaml``.
  v2.0: the 500 ``hard_prompt`` questions (coding, math), baseline ``o3-mini-2025-01-31``, judge
  ``gpt-4.1``, template and verdict patterns from ``arena-hard-v2.0.yaml``; its system prompt is
  v0.1's (the same text in the official code). The 250 creative-writing questions need
  ``gemini-2.0-flash-001``'s answers, which are not among the checksummed data files, so they are
  not scored (their official system prompt, v0.1's without the own-answer step, is derived here).
- Answers: one turn, greedy (temperature 0, as ``gen_answer``), 4096 new tokens by default.
- Judging: two games per question, the baseline as assistant A in game 1 and as B in game 2.
  v0.1 verdicts: ``\\[\\[([AB<>=]+)\\]\\]`` over the judgment so far; one distinct label is the
  verdict, none asks the judge to continue (two attempts in all), several make the game invalid.
  v2.0 verdicts: the last match of the first pattern that matches the upper-cased judgment.
- Files in arena-hard-auto's formats: ``model_answer/<model>.jsonl`` and
  ``model_judgment/<judge>/<model>.jsonl`` (v0.1: the 2024 ``question_id`` rows the v0.1
  ``show_result.py`` reads; v2.0: the 2025 ``uid`` rows).
- Scores: :mod:`harness.benchmarks.arena_hard_scoring`. Style control is fitted jointly over all
  the judgments given for the same judge and version: a checkpoint's own, plus published
  judgment files (``style_pool``, in arena-hard-auto's folder layout, with their answers); its
  version string names the pool (model count and a hash of the model set), so scores fitted
  over different pools never share a leaderboard column. ``harness leaderboard`` refits it over
  all the runs it shows (:func:`pooled_style_scores`).
- Answer features: the official ``token_len`` and markdown counts where an answer row has them
  (2024 ``conv_metadata`` or ``choices[0].turns[0].token_len``; 2025 ``metadata``), else counted
  here: markdown with the official patterns, tokens with the version's official tokenizer
  (v0.1 tiktoken ``cl100k_base`` as ``gpt-3.5-turbo``, v2.0 ``o200k_base`` as ``gpt-4o``) when
  its vocabulary is at hand offline or online (:mod:`harness.openai_tokens`), else
  characters/4 (recorded).

``--limit N`` keeps the first N questions (file order).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from harness import datafiles, openai_tokens
from harness.artifacts import partial_path, read_jsonl, write_json, write_jsonl
from harness.benchmarks import Benchmark, Metric, StageContext, register, settings
from harness.benchmarks import arena_hard_scoring as scoring
from harness.benchmarks.answers import Chat, answer_in_chunks
from harness.config import Section
from harness.errors import ConfigError, DataError
from harness.judges.base import Decoding, JudgeRequest

NAME = "arena_hard"
MAX_NEW_TOKENS = 4096
# the official follow-up when a judgment has no verdict label (v0.1 gen_judgment.py)
CONTINUE = "continue your judgment and finish by outputting a final verdict label"


class ArenaHardConfig(Section):
    """``evaluation.arena_hard``."""

    version: Literal["v0.1", "v2.0"] = Field("v0.1", description="v0.1 (the SPPO paper's) or v2.0")
    judge: str | None = Field(None, description="a judge config in judge_configs/, a YAML path, or "
                                                "local[:<model>] (default: the version's official "
                                                "judge: v0.1 gpt-4-1106-preview, v2.0 gpt-4.1)")
    limit: int | None = Field(None, ge=1, description="first N questions (smoke runs)")
    max_new_tokens: int = Field(MAX_NEW_TOKENS, ge=1, description="answer length")
    style_control: bool = Field(False, description="control for answer length and markdown (reported "
                                                   "as its own version)")


@dataclass(frozen=True)
class Version:
    name: str
    bench: str  # the official benchmark folder name, also the results' version
    questions: str
    answers: str  # official answers of a model, by name
    category: str  # the category scored
    baseline: str
    judge: str  # the official judge, also its config name in judge_configs/
    settings: str  # the official file with the judge settings
    ci: tuple[float, float]  # percentiles of the bootstrap CI


VERSIONS = {
    "v0.1": Version("v0.1", "arena-hard-v0.1", "arena_hard/arena-hard-v0.1/legacy_format/question.jsonl",
                    "arena_hard/arena-hard-v0.1/legacy_format/model_answer/{}.jsonl", "arena-hard-v0.1",
                    "gpt-4-0314", "gpt-4-1106-preview", "arena_hard/config/judge_config_v0.1.yaml",
                    (2.5, 97.5)),
    "v2.0": Version("v2.0", "arena-hard-v2.0", "arena_hard/arena-hard-v2.0/question.jsonl",
                    "arena_hard/arena-hard-v2.0/model_answer/{}.jsonl", "hard_prompt",
                    "o3-mini-2025-01-31", "gpt-4.1", "arena_hard/config/arena-hard-v2.0.yaml",
                    (5.0, 95.0)),
}
V01_SETTINGS = VERSIONS["v0.1"].settings


def version(name: str) -> Version:
    if name not in VERSIONS:
        raise ConfigError(f"Arena-Hard version {name!r} is not known (choose from {sorted(VERSIONS)})")
    return VERSIONS[name]


@dataclass(frozen=True)
class JudgeSettings:
    system_prompt: str
    template: str
    fields: tuple[str, str, str]  # the template's question / answer A / answer B fields
    patterns: tuple[str, ...]
    attempts: int
    temperature: float
    max_tokens: int


def _yaml(relpath: str) -> dict[str, Any]:
    return yaml.safe_load(datafiles.fetch(relpath).read_text(encoding="utf-8"))


@functools.cache
def judge_settings(name: str) -> JudgeSettings:
    """The official judge settings of a version, read from its data files."""
    v01 = _yaml(V01_SETTINGS)
    if name == "v0.1":
        return JudgeSettings(v01["system_prompt"], v01["prompt_template"][0],
                             ("question_1", "answer_1", "answer_2"), (v01["regex_pattern"],),
                             int(v01["number_of_judgment_attempts"]), float(v01["temperature"]),
                             int(v01["max_tokens"]))
    cfg = _yaml(version(name).settings)
    return JudgeSettings(v01["system_prompt"], cfg["prompt_template"], ("QUESTION", "ANSWER_A", "ANSWER_B"),
                         tuple(cfg["regex_patterns"]), 1, float(cfg["temperature"]), int(cfg["max_tokens"]))


def creative_writing_prompt(system_prompt: str) -> str:
    """v2.0's creative-writing system prompt: the judge is not asked to answer first."""
    kept = [p for p in system_prompt.split("\n\n")
            if not p.startswith("Begin your evaluation by generating your own answer")]
    return "\n\n".join(kept).replace("compare both assistants' answers with your answer.",
                                     "compare both assistants' answers.")


def parse_verdict(judgment: str, name: str) -> tuple[str | None, bool]:
    """(label, ask again): the official verdict extraction of version ``name``."""
    patterns = judge_settings(name).patterns
    if name == "v0.1":
        found = {m for m in re.findall(patterns[0], judgment) if m != ""}
        if not found:
            return None, True
        return (found.pop().strip("\n"), False) if len(found) == 1 else (None, False)
    for pattern in patterns:
        matches = [m for m in re.findall(pattern, judgment.upper()) if m != ""]
        if matches:
            return matches[-1].strip("\n"), False
    return None, False


# data ---------------------------------------------------------------------------------------
def questions(name: str, limit: int | None = None) -> list[dict[str, str]]:
    """``{"id", "category", "prompt"}`` of the scored category, in file order."""
    v = version(name)
    out = []
    for q in datafiles.fetch_jsonl(v.questions):
        qid = q.get("question_id", q.get("uid"))
        prompt = q["turns"][0]["content"] if "turns" in q else q["prompt"]
        category = q.get("category", v.category)
        if category == v.category:
            out.append({"id": qid, "category": category, "prompt": prompt})
    return out[:limit] if limit else out


def answer_text(row: dict[str, Any]) -> str:
    """The answer in either official row schema (2024 ``choices``, 2025 ``messages``)."""
    if "choices" in row:
        return row["choices"][0]["turns"][0]["content"]
    content = row["messages"][-1]["content"]
    return content["answer"] if isinstance(content, dict) else content


def _answer_id(row: dict[str, Any]) -> str:
    return row.get("question_id", row.get("uid"))


def _answer_model(row: dict[str, Any]) -> str:
    return str(row.get("model_id", row.get("model"))).split("/")[-1]


def token_counter(name: str) -> tuple[Any, str]:
    """The version's official answer tokenizer (``token_len``: v0.1 ``cl100k_base``, v2.0
    ``o200k_base``) where its vocabulary is at hand (``harness.openai_tokens``), else the
    harness's counter; and the method."""
    from harness.judges.cost import token_counter as fallback

    encoding = "cl100k_base" if name == "v0.1" else "o200k_base"
    if (count := openai_tokens.counter(encoding)) is not None:
        return count, f"tiktoken {encoding}"
    return fallback()


def answer_style(row: dict[str, Any], count: Any) -> tuple[int, int, int, int]:
    """[token_len, headers, list items, bold] of an answer row: its official metadata where it has
    it (what the official scripts read), else counted from the text."""
    meta = row.get("metadata") if isinstance(row.get("metadata"), dict) else row.get("conv_metadata")
    if isinstance(meta, dict) and {"token_len", "header_count", "list_count", "bold_count"} <= set(meta):
        return tuple(scoring.style_counts(meta))  # type: ignore[return-value]
    text = answer_text(row)
    turn = row["choices"][0]["turns"][0] if "choices" in row else {}
    tokens = turn.get("token_len", count(text))
    return tuple(scoring.style_counts({"token_len": int(tokens), **scoring.markdown_counts(text)}))  # type: ignore[return-value]


def answer_features(rows: list[dict[str, Any]], count: Any, model: str | None = None
                    ) -> dict[tuple[str, str], tuple[int, int, int, int]]:
    """``{(question id, model): style counts}`` of answer rows (``model`` overrides their name)."""
    return {(_answer_id(r), model or _answer_model(r)): answer_style(r, count) for r in rows}


@functools.cache
def baseline_features(name: str) -> dict[tuple[str, str], tuple[int, int, int, int]]:
    v = version(name)
    return answer_features(datafiles.fetch_jsonl(v.answers.format(v.baseline)), token_counter(name)[0])


@functools.cache
def baseline_answers(name: str) -> dict[str, str]:
    v = version(name)
    return {_answer_id(r): answer_text(r) for r in datafiles.fetch_jsonl(v.answers.format(v.baseline))}


# answers ------------------------------------------------------------------------------------
def answer(qs: list[dict[str, str]], chat: Chat, model: str, name: str, path: Path,
           max_new_tokens: int = MAX_NEW_TOKENS) -> list[dict[str, Any]]:
    """The model's answers in arena-hard-auto's ``model_answer`` format of version ``name``,
    written to ``path`` (replies are committed in chunks as they come: see :mod:`.answers`)."""
    count, _ = token_counter(name)
    replies = answer_in_chunks([JudgeRequest(q["id"], ({"role": "user", "content": q["prompt"]},),
                                             Decoding(0.0, max_new_tokens)) for q in qs], chat, path)
    rows = []
    for q in qs:
        text = replies[q["id"]]
        digest = hashlib.sha256(json.dumps([model, q["id"], text]).encode()).hexdigest()[:22]
        if name == "v0.1":
            rows.append({"question_id": q["id"], "answer_id": digest, "model_id": model,
                         "choices": [{"index": 0, "turns": [{"content": text, "token_len": count(text)}]}],
                         "tstamp": time.time(),
                         # what the 2024 show_result.py's style control reads (add_markdown_info.py)
                         "conv_metadata": {"token_len": count(text), **scoring.markdown_counts(text)}})
        else:
            rows.append({"uid": q["id"], "ans_id": digest, "model": model,
                         "messages": [{"role": "user", "content": q["prompt"]},
                                      {"role": "assistant", "content": {"answer": text}}],
                         "tstamp": time.time(),
                         "metadata": {"token_len": count(text), **scoring.markdown_counts(text)}})
    write_jsonl(path, rows)
    partial_path(path).unlink(missing_ok=True)
    return rows


# judgments ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Game:
    question: dict[str, str]
    index: int  # 0: the baseline is assistant A; 1: the model is
    request: JudgeRequest


def verdict_choices(name: str) -> tuple[str, ...]:
    """The official labels, in the order the judge's system prompt lists them, each as a final
    verdict: the replies a constrained judge chooses from."""
    labels = dict.fromkeys(re.findall(judge_settings("v0.1").patterns[0], judge_settings(name).system_prompt))
    return tuple(f"My final verdict is: [[{label}]]" for label in labels)


def games(qs: list[dict[str, str]], answers: dict[str, str], model: str, name: str,
          decoding: Decoding) -> list[Game]:
    """Both games of every question."""
    s = judge_settings(name)
    base = baseline_answers(name)
    out = []
    for q in qs:
        for field, table in (("model", answers), ("baseline", base)):
            if q["id"] not in table:
                raise DataError(f"Arena-Hard {name}: the {field} has no answer to question {q['id']}")
        pair = (base[q["id"]], answers[q["id"]])
        for index in (0, 1):
            a, b = pair if index == 0 else pair[::-1]
            user = s.template.format(**dict(zip(s.fields, (q["prompt"], a, b), strict=True)))
            messages = ({"role": "system", "content": s.system_prompt}, {"role": "user", "content": user})
            out.append(Game(q, index, JudgeRequest(f"{model}/{q['id']}/game{index + 1}", messages, decoding)))
    return out


def judge_games(pending: list[Game], name: str, judge: Any, cache: Any) -> dict[str, list[str]]:
    """Each game's judge outputs (one per attempt), asking again while the version says so."""
    from harness.judges.cache import judge_cached

    outputs: dict[str, list[str]] = {g.request.id: [] for g in pending}
    todo = [g.request for g in pending]
    for attempt in range(judge_settings(name).attempts):
        batch = judge_cached(judge, todo, cache)
        batch.raise_failures(f"Arena-Hard judge {judge.id}")
        follow_up = []
        for r in todo:
            gid = r.id.split("/attempt")[0]
            outputs[gid].append(batch.judgments[r.id].text)
            if parse_verdict(_joined(outputs[gid]), name)[1]:
                follow_up.append(JudgeRequest(
                    f"{gid}/attempt{attempt + 2}",
                    (*r.messages, {"role": "assistant", "content": batch.judgments[r.id].text},
                     {"role": "user", "content": CONTINUE}), r.decoding))
        todo = follow_up
        if not todo:
            break
    return outputs


def _joined(outputs: list[str]) -> str:
    return "".join("\n" + o for o in outputs)  # as gen_judgment.py accumulates a judgment


def judgment_rows(pending: list[Game], outputs: dict[str, list[str]], model: str, judge_model: str,
                  name: str) -> list[dict[str, Any]]:
    """One row per question with both games, in the official schema of version ``name``."""
    by_question: dict[str, list[Game]] = {}
    for g in pending:
        by_question.setdefault(g.question["id"], []).append(g)
    rows = []
    for qid, (g1, g2) in by_question.items():
        played = []
        for g in (g1, g2):
            text = _joined(outputs[g.request.id]) if name == "v0.1" else outputs[g.request.id][0]
            label = parse_verdict(text, name)[0]
            if name == "v0.1":
                played.append({"user_prompt": g.request.messages[1]["content"], "judgment": text,
                               "score": label})
            else:
                played.append({"score": label, "judgment": {"answer": text},
                               "prompt": list(g.request.messages)})
        if name == "v0.1":
            rows.append({"question_id": qid, "model": model, "judge": judge_model, "games": played})
        else:
            rows.append({"uid": qid, "category": g1.question["category"], "judge": judge_model,
                         "model": model, "baseline": version(name).baseline, "games": played})
    return rows


# scores -------------------------------------------------------------------------------------
def read_judgments(path: Path) -> list[dict[str, Any]]:
    """Judgment rows of either official schema (2024 ``question_id``, 2025 ``uid``)."""
    rows = read_jsonl(path)
    for n, row in enumerate(rows, 1):
        if "model" not in row or not isinstance(row.get("games"), list) \
                or not ({"question_id", "uid"} & set(row)):
            raise DataError(f"{path}: row {n}: an Arena-Hard judgment row needs question_id or uid, "
                            "model and games")
    return rows


def normalise(rows: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Rows of the scored category as ``{"id", "model", "category", "labels"}``."""
    v = version(name)
    out = []
    for r in rows:
        category = r.get("category", v.category)
        if category != v.category or r.get("baseline", v.baseline) != v.baseline:
            continue
        labels = [g.get("score") if isinstance(g, dict) else None for g in r["games"]]
        out.append({"id": r.get("question_id", r.get("uid")), "model": r["model"].split("/")[-1],
                    "category": category, "labels": labels, "judge": r.get("judge")})
    return out


def score(rows: list[dict[str, Any]], name: str, style: dict[str, Any] | None = None
          ) -> dict[str, dict[str, Any]]:
    """Per model: score (0–100), CI, standard error, questions, battles, invalid games.

    ``style`` (style control, fitted jointly over all ``rows``): ``features`` maps
    ``(id, model)`` and ``(id, baseline)`` to :func:`answer_style` counts; ``control`` is
    "style" (length and markdown, the default), "length" or "markdown". The battles are pooled in
    the order of the model names (the official scripts' ``glob`` of the judge's folder, sorted);
    with ``judges`` (several judges, :func:`rows_by_judge`) judge by judge in that order, then by name.
    """
    v = version(name)
    norm = normalise(rows, name)
    if style is not None:
        rank = {j: k for k, j in enumerate(style.get("judges") or [])}
        norm.sort(key=lambda r: (rank.get(r["judge"], 0), r["model"]))  # stable: each file's order kept
    if not norm:
        raise DataError(f"no Arena-Hard {name} judgments of category {v.category!r} against "
                        f"{v.baseline} to score")
    df, _ = scoring.battles(norm, name)
    invalid = {m: scoring.battles([r for r in norm if r["model"] == m], name)[1]
               for m in {r["model"] for r in norm}}
    if df.empty:
        per_model: dict[str, dict[str, Any]] = {m: {"score": None, "ci_lower": None, "ci_upper": None,
                                                    "standard_error": None} for m in invalid}
    elif style is not None:
        features = style["features"]
        missing = sorted({(m, i) for i, m in zip(df["id"], df["model"], strict=True)
                          if (i, m) not in features} | {(v.baseline, i) for i in df["id"]
                                                         if (i, v.baseline) not in features})
        if missing:
            raise DataError(f"style control needs every answer's features: {len(missing)} missing "
                            f"(e.g. model {missing[0][0]!r}, question {missing[0][1]})")
        try:
            per_model = scoring.score_style_controlled(df, features, v.baseline, name,
                                                       style.get("control", "style"))
        except ValueError as exc:
            raise DataError(f"Arena-Hard {name} style control: {exc}") from exc
    elif name == "v0.1":
        per_model = scoring.score_v01(df, v.baseline, v.ci)
    else:
        per_model = scoring.score_v2(df, v.ci)
    out = {}
    for m in sorted(invalid):
        metrics = dict(per_model.get(m, {"score": None, "ci_lower": None, "ci_upper": None,
                                         "standard_error": None}))
        metrics.update({"n_questions": sum(r["model"] == m for r in norm),
                        "battles": int((df["model"] == m).sum()) if not df.empty else 0,
                        "invalid_games": invalid[m]})
        out[m] = metrics
    return out


# style control pooled over several models ----------------------------------------------------
STYLE_SCRIPTS = {"v0.1": "show_result.py@3071ef9 (2024): L2 logistic regression, full-data score, "
                         "2.5/97.5 percentiles",
                 "v2.0": "show_result.py@196f6b8 (2025): L-BFGS float32, median, 5/95 quantiles"}


MULTI_JUDGE_SCRIPT = ("show_result.py@196f6b8 (2025) --judge-names: every judge's battles "
                      "concatenated, one fit")


def control_name(style_control: bool | str) -> str:
    control = "style" if style_control is True else str(style_control)
    if control not in scoring.CONTROLS:
        raise ConfigError(f"style control {style_control!r}: choose from {sorted(scoring.CONTROLS)}")
    return control


def pool_info(rows: list[dict[str, Any]], name: str, features: dict[tuple[str, str], Any],
              control: str, judges: list[str] | None = None) -> dict[str, Any]:
    """What a style-controlled fit was pooled over: the models, ``hash`` (of the model set, the
    control option, the version and the ``judges`` if several are pooled: it goes into the version
    string, so fits over different model sets never share a column, while a rerun of the same
    checkpoint stays comparable) and ``data_hash`` (of the pooled verdicts and answer features,
    for the record)."""
    v = version(name)
    norm = sorted(normalise(rows, name), key=lambda r: r["model"])
    data = [[r["model"], r["id"], r["labels"], features.get((r["id"], r["model"])),
             features.get((r["id"], v.baseline))] for r in norm]
    models = sorted({r["model"] for r in norm})
    extra = [list(judges)] if judges else []

    def digest(x: Any) -> str:
        return hashlib.sha256(json.dumps(x, default=list).encode()).hexdigest()[:12]

    return {"control": control, "script": STYLE_SCRIPTS[name], "models": models,
            "n_models": len(models), "hash": digest([name, control, models, *extra]),
            "data_hash": digest([name, control, data, *extra]),
            **({"judges": list(judges)} if judges else {})}


def style_version(name: str, info: dict[str, Any]) -> str:
    """The results' version of a style-controlled score: it names the pool it was fitted over."""
    n = info["n_models"]
    return (f"{version(name).bench} {info['control']}-control pooled over {n} model"
            f"{'s' if n != 1 else ''} [{info['hash']}]")


def judgment_files(paths: list[Path]) -> list[Path]:
    """The files named, a folder standing for its ``*.jsonl`` (sorted)."""
    return [f for p in paths for f in (sorted(Path(p).glob("*.jsonl")) if Path(p).is_dir() else [Path(p)])]


def row_judge(path: Path, row: dict[str, Any]) -> str | None:
    """A judgment row's judge: its ``judge`` field, else the judge folder its file is in
    (``model_judgment/<judge>/``, the official layout), else None."""
    if row.get("judge") is not None:
        return str(row["judge"])
    return path.parent.name if path.parent.parent.name == "model_judgment" else None


def check_judges(name: str, judges: list[str]) -> None:
    """Several judges exist in the 2025 ``show_result.py`` only (``--judge-names``); the 2024 one
    (v0.1) takes one ``--judge-name``."""
    if name != "v2.0":
        raise ConfigError(f"Arena-Hard {name}: several judges are the 2025 show_result.py's "
                          "--judge-names (--version v2.0); the 2024 script (v0.1) scores one --judge-name")
    if not judges or len(set(judges)) != len(judges):
        raise ConfigError(f"--judge-names {' '.join(judges)}: name each judge once")


def rows_by_judge(files: list[tuple[Path, list[dict[str, Any]]]], judges: list[str]) -> list[dict[str, Any]]:
    """The judgment rows of every named judge, concatenated as ``load_judgments`` of
    ``show_result.py@196f6b8`` does: judge by judge in the order named, each judge's files in
    the order given; each row stamped with its judge. A row of another judge is refused."""
    found: dict[str, list[dict[str, Any]]] = {j: [] for j in judges}
    for f, rows in files:
        for n, r in enumerate(rows, 1):
            j = row_judge(f, r)
            if j not in found:
                raise DataError(f"{f}: row {n} judged by {j!r}, which is not among the named judges "
                                f"(--judge-names {' '.join(judges)})")
            found[j].append({**r, "judge": j})
    if missing := [j for j, rows in found.items() if not rows]:
        raise DataError(f"--judge-names: no judgments of {', '.join(map(repr, missing))} in the files given")
    return [r for j in judges for r in found[j]]


def judges_version(base: str, judges: list[str]) -> str:
    """A version string naming the judges pooled, so a several-judge score has its own column."""
    return f"{base} judges {'+'.join(judges)}"


def load_pool(paths: list[Path], name: str, judge_model: str | None = None,
              judges: list[str] | None = None) -> tuple[list[dict[str, Any]], dict[tuple[str, str], Any]]:
    """Published judgment files to pool, in arena-hard-auto's layout: ``<bench>/model_judgment/
    <judge>/<model>.jsonl`` (a folder: its ``*.jsonl``) with answers in ``<bench>/model_answer/
    <model>.jsonl``. Returns their judgment rows and answer features. With ``judges`` the rows of
    those judges are concatenated as :func:`rows_by_judge`."""
    count = token_counter(name)[0]
    read = [(f, read_judgments(f)) for f in judgment_files(paths)]
    features: dict[tuple[str, str], Any] = {}
    for f, judged in read:
        for r in judged:
            if judge_model and r.get("judge") not in (None, judge_model):
                raise DataError(f"{f}: judged by {r.get('judge')!r}, not {judge_model!r}: style control "
                                "pools one judge's judgments, as the official scripts do")
        answers_dir = f.resolve().parent.parent.parent / "model_answer"
        for model in sorted({str(r["model"]).split("/")[-1] for r in judged}):
            path = answers_dir / f"{model}.jsonl"
            if not path.is_file():
                raise DataError(f"{f}: style control needs the answers of {model!r}: {path} not found")
            features |= answer_features(read_jsonl(path), count, model)
    rows = rows_by_judge(read, judges) if judges else [r for _, judged in read for r in judged]
    return rows, features


def pooled_style_scores(entries: list[tuple[list[dict[str, Any]], dict[tuple[str, str], Any]]],
                        name: str, control: str = "style", judges: list[str] | None = None
                        ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Style-controlled scores of every model in ``entries`` (judgment rows, answer features),
    fitted jointly, and :func:`pool_info`. Model names must be unique across entries, unless
    several ``judges`` are pooled (rows from :func:`rows_by_judge`)."""
    rows = [r for judged, _ in entries for r in judged]
    features = dict(baseline_features(name))
    for _, f in entries:
        features |= f
    style = {"features": features, "control": control, "judges": judges}
    return score(rows, name, style), pool_info(rows, name, features, control, judges)


def score_judges(paths: list[Path], name: str, judges: list[str],
                 control: str | None = None) -> dict[str, Any]:
    """Scores of every model judged in ``paths`` (files or judge folders) by the named judges,
    combined as ``show_result.py@196f6b8 --judge-names``: their battles concatenated, one fit
    (the mean battle score, or with ``control`` one style-controlled fit; bootstrap included).
    Returns ``{"benchmark", "version", "models", "provenance"}``; the version names the judges."""
    check_judges(name, judges)
    files = judgment_files(paths)
    pool = None
    if control:
        rows, features = load_pool(files, name, judges=judges)
        per_model, pool = pooled_style_scores([(rows, features)], name, control, judges)
        base = style_version(name, pool)
    else:
        rows = rows_by_judge([(f, read_judgments(f)) for f in files], judges)
        per_model, base = score(rows, name), version(name).bench
    record = {"judges": list(judges), "files": [str(f) for f in files],
              "scoring": f"{MULTI_JUDGE_SCRIPT}; {STYLE_SCRIPTS[name] if control else 'mean battle score'}",
              "style_control": pool or False}
    return {"benchmark": NAME, "version": judges_version(base, judges), "models": per_model,
            "provenance": record}


# the whole benchmark for one model ----------------------------------------------------------
def evaluate(model_name: str, chat: Chat, out_dir: Path, bench_version: str = "v0.1",
             judge: str | None = None, limit: int | None = None, max_new_tokens: int = MAX_NEW_TOKENS,
             style_control: bool | str = False, style_pool: list[Path] | None = None,
             yes: bool = False, dry_run: bool = False, device: str | None = None,
             provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Answer, judge and score ``model_name``; answers and judgments are kept in ``out_dir`` and reused.

    With ``dry_run`` the first-attempt judge requests and the cost estimate are written
    (``judge_requests.jsonl``, ``cost.json``) and no judge is called.

    ``style_control`` (True or "style": length and markdown; "length"; "markdown") is fitted
    jointly over this model's judgments and the published ones in ``style_pool``
    (:func:`load_pool`: same judge and version).
    """
    from harness.judges import load_judge_config
    from harness.judges.cache import JudgmentCache
    from harness.judges.cost import confirm, estimate
    from harness.judges.factory import get_judge

    name = bench_version
    v = version(name)
    control = control_name(style_control) if style_control else None
    cfg = load_judge_config(judge or v.judge)
    s = judge_settings(name)
    qs = questions(name, limit)
    answers_path = out_dir / "model_answer" / f"{model_name}.jsonl"
    if answers_path.exists():
        answer_rows = read_jsonl(answers_path)
    else:
        answer_rows = answer(qs, chat, model_name, name, answers_path, max_new_tokens)
    answers = {_answer_id(r): answer_text(r) for r in answer_rows}
    # the official judge's settings; a judge config may only lower max_tokens (recorded)
    decoding = Decoding(s.temperature, min(s.max_tokens, cfg.max_tokens),
                        choices=verdict_choices(name) if cfg.constrained else ())
    pending = games(qs, answers, model_name, name, decoding)
    cache = JudgmentCache.for_judge(cfg.id)
    cost = estimate(cfg, cfg.id, [g.request for g in pending], cache)
    if dry_run:
        write_jsonl(out_dir / "judge_requests.jsonl",
                    ({"id": g.request.id, "model": cfg.model, "messages": list(g.request.messages),
                      "temperature": decoding.temperature, "max_tokens": decoding.max_tokens}
                     for g in pending))
        write_json(out_dir / "cost.json", cost.__dict__)
        print(cost.summary() + ("; a second attempt per game without a verdict may follow"
                                if s.attempts > 1 else ""))
        return {"benchmark": NAME, "dry_run": True, "requests": len(pending), "cost": cost.__dict__}
    confirm(cost, cfg, yes)
    outputs = judge_games(pending, name, get_judge(cfg, device), cache)
    judge_model = Path(cfg.model.split(":")[-1]).name if cfg.kind == "local" else cfg.model
    rows = judgment_rows(pending, outputs, model_name, judge_model, name)
    judge_dir = re.sub(r"[^A-Za-z0-9._-]+", "_", judge_model)
    judgment_path = out_dir / "model_judgment" / judge_dir / f"{model_name}.jsonl"
    write_jsonl(judgment_path, rows)
    count, token_method = token_counter(name)
    pool = None
    if control:
        published = load_pool(list(style_pool or []), name, judge_model)
        if model_name in {str(r["model"]).split("/")[-1] for r in published[0]}:
            raise DataError(f"style control: {model_name!r} is also among the published judgments")
        per_model, pool = pooled_style_scores(
            [(rows, answer_features(answer_rows, count, model_name)), published], name, control)
        pool |= {"judgments": str(judgment_path.relative_to(out_dir)),
                 "answers": str(answers_path.relative_to(out_dir)),
                 "published": [str(Path(p).resolve()) for p in style_pool or []]}
        metrics = per_model[model_name]
    else:
        metrics = score(rows, name)[model_name]
    own = {_answer_id(r): answer_style(r, count)[0] for r in answer_rows}  # token_len, as the official
    metrics["avg_tokens"] = sum(own[q["id"]] for q in qs) / len(qs)
    record = {"judge": cfg.id, "baseline": v.baseline, "category": v.category, "n_examples": len(qs),
              "verdict": "constrained to the official labels by log-probability" if cfg.constrained
              else "generated",
              "limit": limit, "style_control": pool or False,
              "judge_decoding": {"temperature": decoding.temperature, "max_tokens": decoding.max_tokens,
                                 "official_max_tokens": s.max_tokens, "attempts": s.attempts},
              "scoring": {"method": f"Bradley-Terry with {control} control, {STYLE_SCRIPTS[name]}"
                          if control
                          else "Bradley-Terry" if name == "v0.1" else "mean battle score",
                          "strong_verdict_weight": scoring.WEIGHT, "bootstrap_rounds": scoring.ROUNDS,
                          "seed": scoring.SEED, "ci_percentiles": list(v.ci)},
              "token_count": token_method,
              "decoding": {"temperature": 0.0, "max_new_tokens": max_new_tokens},
              **(provenance or {})}
    result = {"benchmark": NAME, "version": style_version(name, pool) if pool else v.bench,
              "metrics": metrics, "provenance": record}
    write_json(out_dir / "results.json", result)
    return result


def pool_style_control(runs: list[Path], cells: list[Any]) -> list[Any]:
    """Arena-Hard style-controlled cells refitted jointly over every run's judgments, as the
    official leaderboard fits all models in the judge's folder at once.

    Cells are pooled when their protocol is the same but for the pool (version, judge, baseline,
    n, profile, control option); each checkpoint enters under a unique name (run and iteration),
    with the published judgment files its evaluation pooled. The new version string says what the
    fit was pooled over (``pooled over N models [hash]``), so its column is its own."""
    from harness.artifacts import read_jsonl
    from harness.results import Cell, protocol_key

    roots = {r.name: r for r in runs}
    groups: dict[tuple[str, str, str], list[Cell]] = {}
    for c in cells:
        style = c.provenance.get("style_control") if c.benchmark == "arena_hard" else None
        if not isinstance(style, dict) or "judgments" not in style or c.run not in roots:
            continue  # not style-controlled, or from before pooling (no judgment file recorded)
        proto = json.loads(c.key)
        name = next((n for n, v in VERSIONS.items()
                     if str(proto.get("version", "")).startswith(v.bench + " ")), None)
        if name is None:
            continue
        rest = json.dumps({k: v for k, v in proto.items() if k != "version"}, sort_keys=True)
        groups.setdefault((name, style["control"], rest), []).append(c)
    replaced: dict[int, Cell] = {}
    for (name, control, _), group in groups.items():
        count = token_counter(name)[0]
        entries, published = [], set()
        for c in group:
            style = c.provenance["style_control"]
            d = roots[c.run] / f"iter-{c.iteration}" / "eval" / NAME
            label = f"{c.run}.iter{c.iteration}"
            rows = [{**r, "model": label} for r in read_judgments(d / style["judgments"])]
            entries.append((rows, answer_features(read_jsonl(d / style["answers"]), count, label)))
            published |= set(style.get("published", []))
        if published:
            entries.append(load_pool([Path(p) for p in sorted(published)], name))
        per_model, info = pooled_style_scores(entries, name, control)
        version = style_version(name, info)
        for c in group:
            m = per_model.get(f"{c.run}.iter{c.iteration}", {})
            prov = {**c.provenance, "style_control": {**c.provenance["style_control"], **info,
                                                      "refitted_by": "harness leaderboard"}}
            replaced[id(c)] = Cell(c.run, c.iteration, c.model, c.benchmark, c.metric, m.get("score"),
                                   m.get("standard_error"), protocol_key(c.benchmark, version, prov), prov,
                                   c.note if m.get("score") is None else None)
    return [replaced.get(id(c), c) for c in cells]


# in a run, and in the registry -----------------------------------------------------------------
def run_stage(ctx: StageContext, t: int) -> dict[str, Any]:
    """Arena-Hard of iteration ``t``'s checkpoint: it answers, the version's judge (or the
    configured one) plays both games against the baseline."""
    cfg: ArenaHardConfig = settings(ctx.config, NAME)
    result = evaluate(ctx.model_name(t), ctx.chat(t), ctx.eval_dir(t, NAME), bench_version=cfg.version,
                      judge=cfg.judge, limit=cfg.limit, max_new_tokens=cfg.max_new_tokens,
                      style_control=cfg.style_control, yes=ctx.yes, device=ctx.device,
                      provenance=ctx.provenance(t))
    m = result["metrics"]
    return {k: m[k] for k in ("score", "ci_lower", "ci_upper", "invalid_games")}


def _preflight(config: Any) -> None:
    from harness.judges import check_judge

    cfg: ArenaHardConfig = settings(config, NAME)
    check_judge(cfg.judge or version(cfg.version).judge)


BENCHMARK = register(Benchmark(
    NAME, "Arena-Hard", (Metric("score", "standard_error", "Arena-Hard (%)"),),
    note=lambda metrics, metric, name: None if metrics.get(metric) is not None else (
        f"no valid verdict: {metrics.get('invalid_games')} games without a usable label"),
    published_metrics={("arena_hard", "arena_hard_score"): "score"},
    published_protocol=lambda row: (VERSIONS["v0.1"].bench, {
        "judge": f"openai:{VERSIONS['v0.1'].judge}", "baseline": VERSIONS["v0.1"].baseline,
        "n_examples": 500, "limit": None, "profile": "full"}),
    preflight=_preflight, stage=run_stage, refit=pool_style_control, cli="harness.commands.eval_arena_hard",
    config=ArenaHardConfig))
