"""AlpacaEval 2.0 (length-controlled), computed by the ``alpaca-eval`` package itself.

The checkpoint answers the 805 instructions (official order: the length-controlled GLM looks
instruction difficulty up by position) with the decoding settings of its config; answers are
written as alpaca_eval ``model_outputs.json``; alpaca_eval's ``PairwiseAnnotator`` judges them
against the ``gpt4_1106_preview`` baseline; alpaca_eval's metrics give the win rate and the
length-controlled win rate.

Annotators: any alpaca_eval annotator config by name (official:
``weighted_alpaca_eval_gpt4_turbo``, through alpaca_eval's own OpenAI client), or ``local``: the
same config with its prompt and log-probability parser, answered by an in-process transformers
judge (the embedded model by default) instead of GPT-4-Turbo. Local numbers measure the machinery,
not quality, and carry the judge in their provenance.

The length-controlled GLM needs two files that live only on the official hub dataset
(``instruction_difficulty.csv``, ``df_gamed.csv``). They are fetched like every data file, with
their sha256 checked; when they cannot be had, LC is reported as unavailable with the reason, and
no other number is put under its name.

A result of the official annotator on all 805 instructions, with an LC win rate, is placed in the
published leaderboard (``alpaca_eval/leaderboard.csv``) as alpaca_eval's ``evaluate`` prints it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from harness import datafiles
from harness.artifacts import partial_path, read_jsonl, write_json, write_jsonl, write_text_atomic
from harness.benchmarks import Benchmark, Metric, StageContext, register, settings
from harness.benchmarks.answers import answer_in_chunks
from harness.config import DecodingOverride, Section
from harness.errors import ConfigError, DataError
from harness.faults import crash_point
from harness.judges.base import Decoding, JudgeRequest

NAME = "alpaca_eval"
VERSION = "2.0"
EVAL_SET = "alpaca_eval/gpt4_1106_preview/model_outputs.json"
BASELINE = "gpt4_1106_preview"
OFFICIAL_ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"
LOCAL_ANNOTATOR = "local"
LC_FILES = ("alpaca_eval/instruction_difficulty.csv", "alpaca_eval/df_gamed.csv")
HUB_REPO = "tatsu-lab/alpaca_eval"
ANNOTATION_CHUNK = 128  # alpaca_eval's default: annotated, then its cache saved, together
LEADERBOARD = "alpaca_eval/leaderboard.csv"  # the published AlpacaEval 2.0 board of OFFICIAL_ANNOTATOR
POSITION_KEY = "published_leaderboard_position"
SORT_BY = "length_controlled_winrate"  # alpaca_eval main.evaluate's sort_by for AlpacaEval 2.0
NEIGHBOURS = 3  # published rows shown above and below the model
METRIC_KEYS = ("win_rate", "standard_error", "n_wins", "n_wins_base", "n_draws", "n_total",
               "discrete_win_rate", "avg_length", "length_controlled_winrate", "lc_standard_error")


class AlpacaEvalConfig(Section):
    """``evaluation.alpaca_eval``."""

    annotator: str = Field(
        OFFICIAL_ANNOTATOR,
        description="an alpaca_eval annotator config name (official: weighted_alpaca_eval_gpt4_turbo) "
                    "or 'local' (the embedded model as judge, same prompt and parser)",
    )
    limit: int | None = Field(None, ge=1, description="the first N instructions (alpaca_eval's "
                                                  "max_instances; smoke runs; in the protocol)")
    decoding: DecodingOverride = DecodingOverride()
    best_of: int = Field(1, ge=1, description="sample N answers per instruction and submit the one the "
                                              "run's ranker scores highest (the paper's best-of-16 with "
                                              "PairRM); its own protocol, never an official column")


def _alpaca_eval():
    """The alpaca_eval package, imported quietly (it warns about pkg_resources on import)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import alpaca_eval
            import alpaca_eval.annotators
            import alpaca_eval.metrics
            import alpaca_eval.metrics.glm_winrate
            import alpaca_eval.utils
    except ImportError as exc:
        raise ConfigError(
            "AlpacaEval needs the alpaca-eval package (and setuptools<81): "
            "pip install 'sppo-harness[alpaca-eval]'"
        ) from exc
    return alpaca_eval


def _evaluators_dir() -> Path:
    """alpaca_eval's annotator configs (official prompts and parsers)."""
    return Path(_alpaca_eval().__file__).parent / "evaluators_configs"


def package_version() -> str:
    from importlib.metadata import version

    return version("alpaca-eval")


# data ---------------------------------------------------------------------------------------
LIMIT_SEED = 123  # alpaca_eval main.evaluate: max_instances shuffles with this seed first


def eval_set(limit: int | None = None) -> list[dict[str, Any]]:
    """The AlpacaEval 2.0 instructions with the baseline's outputs: all, in the official order, or
    the ``limit`` that alpaca_eval's ``max_instances`` keeps (both frames shuffled with pandas'
    ``sample(frac=1, random_state=123)``, then the first ``limit``: the same rows, in that order)."""
    import pandas as pd

    rows = json.loads(datafiles.fetch(EVAL_SET).read_text(encoding="utf-8"))
    if not limit:
        return rows
    order = pd.DataFrame({"row": range(len(rows))}).sample(frac=1, random_state=LIMIT_SEED)["row"]
    return [rows[i] for i in order[:limit]]


def limit_protocol(limit: int | None) -> str | None:
    """How a limited run chose its instructions, for the protocol key."""
    return f"{limit} (alpaca_eval max_instances: shuffled, seed {LIMIT_SEED})" if limit else None


def lc_files() -> tuple[dict[str, Path] | None, str | None]:
    """The two hub files of the LC GLM (verified), or None and why they could not be had."""
    try:
        return {Path(rel).name: datafiles.fetch(rel) for rel in LC_FILES}, None
    except DataError as exc:
        return None, str(exc)


@contextlib.contextmanager
def _hub_files(files: dict[str, Path]) -> Iterator[None]:
    """Serve alpaca_eval's hub downloads of the LC files from verified local copies."""
    glm = _alpaca_eval().metrics.glm_winrate

    def local(repo_id: str, filename: str, **_: Any) -> str:
        if repo_id != HUB_REPO or filename not in files:
            raise DataError(f"alpaca_eval asked for {repo_id}:{filename}, which the harness does not hold")
        return str(files[filename])

    original = glm.hf_hub_download
    glm.hf_hub_download = local
    try:
        yield
    finally:
        glm.hf_hub_download = original


# metrics ------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def score(
    annotations: Sequence[dict[str, Any]],
    lc: dict[str, Path] | None = None,
    lc_unavailable: str | None = None,
    weights_dir: Path | None = None,
) -> dict[str, Any]:
    """The leaderboard metrics of alpaca_eval annotations (``output_2`` = the model).

    Rows are placed at their instruction's position in the official set, which the LC GLM
    relies on. With ``lc`` (paths of the two hub files) the length-controlled win rate is
    computed by alpaca_eval's GLM; without it, it is None and ``lc_unavailable`` says why. With
    ``weights_dir`` the GLM's weights are saved as alpaca_eval saves them
    (``<weights_dir>/length_controlled_v1/baseline_<baseline>.csv``, one row per model), which its
    ``predict_winrate`` reads to compare the model with any other whose weights it has.
    """
    import pandas as pd

    ae = _alpaca_eval()
    df = pd.DataFrame(list(annotations))
    missing = {"instruction", "output_1", "output_2", "preference", "generator_1", "generator_2"} - set(df)
    if missing:
        raise DataError(f"annotations lack the columns {sorted(missing)}")
    if df["generator_2"].nunique() != 1 or df["generator_1"].nunique() != 1:
        raise DataError("annotations must compare one model (generator_2) with one baseline (generator_1)")
    position = {r["instruction"]: i for i, r in enumerate(eval_set())}
    unknown = [i for i in df["instruction"] if i not in position]
    if unknown:
        raise DataError(f"{len(unknown)} annotated instructions are not in AlpacaEval 2.0, e.g. "
                        f"{unknown[0][:80]!r}")
    df.index = [position[i] for i in df["instruction"]]
    df["preference"] = df["preference"].astype(float)
    metrics = {k: _plain(v) for k, v in ae.metrics.get_winrate(df).items()}
    metrics["avg_length"] = int(df["output_2"].str.len().mean())
    metrics["length_controlled_winrate"] = None
    metrics["lc_standard_error"] = None
    if lc is None:
        metrics["lc_unavailable"] = lc_unavailable or "length-control files not provided"
        return metrics
    with _hub_files(lc), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = ae.metrics.get_length_controlled_winrate(
            df, save_weights_dir=weights_dir, is_add_glm_preference_inplace=False,
            is_warn_extreme_changes=False)
    metrics["length_controlled_winrate"] = _plain(out["length_controlled_winrate"])
    metrics["lc_standard_error"] = _plain(out["lc_standard_error"])
    return metrics


# annotation ---------------------------------------------------------------------------------
def local_completions(prompts: Sequence[str], judge: str, dtype: str = "bfloat16",
                      **_: Any) -> dict[str, list]:
    """alpaca_eval ``fn_completions`` answered by a local judge, in OpenAI's logprob format.

    The log-probabilities of both verdict tokens are always returned (an API returns only its
    top 5), so the parser never sees a missing verdict.
    """
    from harness.judges.local import get_local_judge

    chatml = _alpaca_eval().utils.prompt_to_chatml
    local = get_local_judge(judge, dtype)
    start = time.perf_counter()
    verdicts = local.verdicts([chatml(p) for p in prompts], ["m", "M"], top=5)
    per_example = (time.perf_counter() - start) / max(len(prompts), 1)
    completions = []
    for v in verdicts:
        best = max(v.verdict_logprobs, key=v.verdict_logprobs.__getitem__)
        top = [{"token": t, "logprob": lp} for t, lp in v.top_logprobs]
        top += [{"token": t, "logprob": lp} for t, lp in v.verdict_logprobs.items()
                if t not in {x["token"] for x in top}]
        completions.append({
            "text": best, "total_tokens": v.prompt_tokens + 1,
            "logprobs": {"content": [{"token": best, "logprob": v.verdict_logprobs[best],
                                      "top_logprobs": top}]},
        })
    n = len(completions)
    return {"completions": [c["text"] for c in completions], "price_per_example": [0.0] * n,
            "time_per_example": [per_example] * n, "completions_all": completions}


def _local_annotator_config(out_dir: Path, judge: str, dtype: str) -> tuple[Path, str]:
    """The official annotator config with its completion function swapped for the local judge."""
    ae_dir = _evaluators_dir()
    official = yaml.safe_load((ae_dir / OFFICIAL_ANNOTATOR / "configs.yaml").read_text())
    cfg = dict(official[OFFICIAL_ANNOTATOR])
    cfg.pop("fn_completions")
    cfg["prompt_template"] = str(ae_dir / cfg["prompt_template"])
    cfg["completions_kwargs"] = {"judge": judge, "dtype": dtype}
    name = f"{OFFICIAL_ANNOTATOR}_local_judge"
    path = out_dir / "annotator" / name / "configs.yaml"
    write_text_atomic(path, "# written by sppo-harness: the official annotator with a local judge\n"
               + yaml.safe_dump({name: cfg}, sort_keys=False))
    return path.parent, name


def _crash_safe(annotator_class: type) -> type:
    """alpaca_eval's annotator, whose cache (rewritten whole after each chunk) is replaced
    atomically, so a kill mid-write cannot tear it and lose the chunks annotated before."""

    class CrashSafeAnnotator(annotator_class):  # type: ignore[misc, valid-type]
        def save(self, path: Any = None) -> None:
            target = Path(path or self.caching_path)
            tmp = target.with_name(f".{target.name}.unsaved")
            try:
                super().save(tmp)
                write_text_atomic(target, tmp.read_text(encoding="utf-8"))
            finally:
                tmp.unlink(missing_ok=True)
            crash_point("annotate/chunk")

    return CrashSafeAnnotator


def annotate(model_outputs: list[dict], baseline_outputs: list[dict], annotator: str,
             out_dir: Path, judge: str = "embedded:smollm2-135m", dtype: str = "bfloat16"
             ) -> list[dict]:
    """alpaca_eval's pairwise annotations (baseline = output_1), cached in ``out_dir`` after every
    :data:`ANNOTATION_CHUNK` of them; a rerun annotates only what the cache lacks. ``judge`` and
    ``dtype``: the local judge, for the local annotator."""
    ae = _alpaca_eval()
    out_dir = out_dir.resolve()  # alpaca_eval reads relative config paths from its own folder
    kwargs: dict[str, Any] = {}
    if annotator == LOCAL_ANNOTATOR:
        config, _ = _local_annotator_config(out_dir, judge, dtype)
        kwargs["fn_completions"] = local_completions
    else:
        config = annotator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        annotator_ = _crash_safe(ae.annotators.PairwiseAnnotator)(
            annotators_config=config, caching_path=out_dir / "annotations_cache.json", **kwargs)
        rows = annotator_.annotate_head2head(outputs_1=baseline_outputs, outputs_2=model_outputs,
                                             is_ordered=True, chunksize=ANNOTATION_CHUNK)
    return [{k: _plain(v) for k, v in r.items()} for r in rows]


def check_annotator(annotator: str) -> None:
    """Fail before any work when the annotator cannot run (unknown, or no API credentials)."""
    import os

    if annotator == LOCAL_ANNOTATOR:
        return
    ae_dir = _evaluators_dir()
    if not (ae_dir / annotator / "configs.yaml").exists():
        raise ConfigError(f"evaluation.alpaca_eval.annotator: {annotator!r} is neither 'local' nor an "
                          "alpaca_eval annotator config")
    if not (os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_CLIENT_CONFIG_PATH")):
        raise ConfigError(
            f"AlpacaEval annotator {annotator!r} calls an OpenAI-compatible API: set OPENAI_API_KEY "
            "(or OPENAI_CLIENT_CONFIG_PATH for another endpoint, see alpaca_eval's client configs), "
            "or use annotator 'local'"
        )


def annotator_provenance(annotator: str, judge: str, dtype: str) -> dict[str, Any]:
    if annotator == LOCAL_ANNOTATOR:
        return {"annotator": f"{OFFICIAL_ANNOTATOR} prompt and parser, local judge",
                "judge": f"local:{judge}", "judge_dtype": dtype}
    ae_dir = _evaluators_dir()
    path = ae_dir / annotator / "configs.yaml"
    model = None
    if path.exists():
        cfg = next(iter(yaml.safe_load(path.read_text()).values()))
        model = cfg.get("completions_kwargs", {}).get("model_name")
    return {"annotator": annotator, "judge": model}


# model-card config --------------------------------------------------------------------------
def write_model_config(directory: Path, name: str, model_path: str, tokenizer: Any,
                       decoding: dict[str, Any], dtype: str) -> Path:
    """alpaca_eval ``models_configs/<name>/`` (configs.yaml + prompt.txt) for a checkpoint."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "{instruction}"}], tokenize=False, add_generation_prompt=True)
    folder = directory / "models_configs" / name
    write_text_atomic(folder / "prompt.txt", prompt)
    config = {name: {
        "prompt_template": f"{name}/prompt.txt",
        "fn_completions": "vllm_local_completions",
        "completions_kwargs": {
            "model_name": model_path,
            "model_kwargs": {"dtype": dtype},
            "max_new_tokens": decoding["max_new_tokens"],
            "temperature": decoding["temperature"],
            "top_p": decoding["top_p"],
        },
        "pretty_name": name,
    }}
    write_text_atomic(folder / "configs.yaml", yaml.safe_dump(config, sort_keys=False))
    return folder


def _saved_annotations(path: Path, outputs: list[dict]) -> list[dict] | None:
    """Annotations written by an earlier call for exactly these outputs, else None."""
    from harness.artifacts import read_json

    if not path.exists():
        return None
    saved = read_json(path)
    pairs = [(a["instruction"], a["output_2"]) for a in saved]
    return saved if pairs == [(o["instruction"], o["output"]) for o in outputs] else None


# position in the published leaderboard ------------------------------------------------------
POSITION_COLUMNS = (SORT_BY, "win_rate", "standard_error", "n_total", "avg_length", "mode")


def leaderboard_position(metrics: dict[str, Any], leaderboard: Any, name: str,
                         around: int = NEIGHBOURS) -> dict[str, Any]:
    """The model's rank by LC win rate among the published rows, with ``around`` rows either side.

    Ordered as alpaca_eval's ``main.evaluate`` orders its leaderboard: the model's row added to the
    precomputed one (a published row of the same name is replaced in place, as with
    ``is_overwrite_leaderboard``; otherwise the model comes last), then ``sort_values(by=SORT_BY,
    ascending=False)``. The sort is made stable so that a tie puts the published row first, the
    order pandas' descending sort keeps for ties (numpy's default quicksort does not promise it).
    """
    import pandas as pd

    rows = leaderboard.to_dict(orient="index")
    rows[name] = {**rows.get(name, {}), "mode": None,
                  **{k: metrics.get(k) for k in POSITION_COLUMNS if k != "mode"}}
    board = pd.DataFrame.from_dict(rows, orient="index").sort_values(
        by=SORT_BY, ascending=False, kind="stable")
    at = board.index.get_loc(name)
    shown = board.iloc[max(at - around, 0):at + around + 1]
    return {
        "rank": at + 1,
        "out_of": len(board),
        "sorted_by": SORT_BY,
        "replaces_published_row": name in leaderboard.index,
        "rows": [{"rank": board.index.get_loc(model) + 1, "model": model, "current": model == name,
                  **{k: _cell(row[k]) for k in POSITION_COLUMNS}} for model, row in shown.iterrows()],
    }


def _cell(value: Any) -> Any:
    """A leaderboard cell as plain JSON (NaN as None)."""
    value = _plain(value)
    return None if isinstance(value, float) and value != value else value


def comparability(annotator: str, baseline: str, n_instructions: int, limit: int | None,
                  metrics: dict[str, Any]) -> str | None:
    """Why a result cannot stand in the published leaderboard, or None when it can: that needs the
    official annotator and baseline, all the instructions, and an LC win rate."""
    if annotator != OFFICIAL_ANNOTATOR:
        return f"annotator {annotator!r} is not the leaderboard's {OFFICIAL_ANNOTATOR}"
    if baseline != BASELINE:
        return f"baseline {baseline!r} is not the leaderboard's {BASELINE}"
    total = len(eval_set())
    if limit or n_instructions != total:
        return f"{n_instructions} of the {total} instructions (limit {limit})"
    if metrics.get(SORT_BY) is None:
        return f"no LC win rate ({metrics.get('lc_unavailable', 'not computed')})"
    return None


def published_position(metrics: dict[str, Any], name: str, annotator: str, baseline: str,
                       n_instructions: int, limit: int | None = None
                       ) -> tuple[dict[str, Any] | None, str | None]:
    """(position in the published leaderboard with the file's name and sha256, None), or
    (None, why the result is not comparable)."""
    import pandas as pd

    reason = comparability(annotator, baseline, n_instructions, limit, metrics)
    if reason is not None:
        return None, reason
    try:
        path = datafiles.fetch(LEADERBOARD)
    except DataError as exc:
        return None, str(exc)
    position = leaderboard_position(metrics, pd.read_csv(path, index_col=0), name)
    return {"leaderboard": LEADERBOARD, "sha256": datafiles.sha256_of(path), **position}, None


def format_position(position: dict[str, Any]) -> str:
    """The rows around the model, as alpaca_eval prints them (its columns, 2 decimals)."""
    lines = [f"AlpacaEval 2.0 published leaderboard ({position['leaderboard']}, sha256 "
             f"{position['sha256'][:12]}…): rank {position['rank']} of {position['out_of']} by LC win rate",
             f"{'':2s}{'rank':>4s}  {'model':42s} {'LC':>6s} {'WR':>6s} {'SE':>5s} {'n':>4s} "
             f"{'length':>6s}  mode"]
    for r in position["rows"]:
        se = "-" if r["standard_error"] is None else f"{r['standard_error']:.2f}"
        lines.append(f"{'→' if r['current'] else '':2s}{r['rank']:4d}  {r['model'][:42]:42s} "
                     f"{r[SORT_BY]:6.2f} {r['win_rate']:6.2f} {se:>5s} {r['n_total']:4d} "
                     f"{r['avg_length']:6d}  {r['mode'] or 'this run'}")
    return "\n".join(lines)


def report_position(metrics: dict[str, Any], name: str, annotator: str, baseline: str,
                    n_instructions: int, limit: int | None = None) -> dict[str, Any] | None:
    """:func:`published_position`, printed to stderr (or one line on why there is none)."""
    position, reason = published_position(metrics, name, annotator, baseline, n_instructions, limit)
    if position is None:
        print(f"AlpacaEval: not placed in the published leaderboard: {reason}", file=sys.stderr)
    else:
        print(format_position(position), file=sys.stderr)
    return position


def annotations_position(annotations: Sequence[dict[str, Any]],
                         metrics: dict[str, Any]) -> dict[str, Any] | None:
    """:func:`report_position` for re-scored annotations (annotator, baseline and model from
    their own columns)."""
    def only(key: str) -> str:
        values = sorted({str(a.get(key)) for a in annotations})
        return values[0] if len(values) == 1 else f"mixed {values[:3]}"

    return report_position(metrics, only("generator_2"), only("annotator"), only("generator_1"),
                           len({a["instruction"] for a in annotations}))


# best-of-n: the paper's "best-of-16" -------------------------------------------------------
def result_version(best_of: int = 1, ranker: str | None = None) -> str:
    """The version a result is filed under: best-of-n answers are their own protocol."""
    return VERSION if best_of == 1 else f"{VERSION} best-of-{best_of} ({ranker})"


def best_of_n(instructions: list[str], sample: Callable[[list[str]], list[list[str]]],
              rank: Callable[[list[str], list[list[str]]], list[list[float]]], n: int, out_dir: Path,
              release: Callable[[], None] = lambda: None) -> list[str]:
    """Each instruction's answer: of ``n`` sampled ones, the one ``rank`` scores highest (the first
    of ties, as ``np.argmax``), as the SPPO paper's best-of-16 with PairRM.

    Candidates and then their scores are committed in chunks and reused on resume; ``release``
    frees the sampler before ranking starts. ``best_of_n.jsonl`` keeps every candidate, its score
    and the choice."""
    done = out_dir / "best_of_n.jsonl"
    if done.exists():
        rows = read_jsonl(done)
        if [r["instruction"] for r in rows] == instructions and all(len(r["candidates"]) == n for r in rows):
            return [r["candidates"][r["chosen"]] for r in rows]
    ids = [f"{i:04d}-best-of-{n}" for i in range(len(instructions))]

    def requests(kind: str) -> list[JudgeRequest]:
        return [JudgeRequest(i, ({"role": kind, "content": x},), Decoding(0.0, n))
                for i, x in zip(ids, instructions, strict=True)]

    def sampled(todo: list[JudgeRequest]) -> dict[str, str]:
        got = sample([r.messages[0]["content"] for r in todo])
        if any(len(c) != n for c in got):
            raise DataError(f"best-of-{n}: the sampler returned {sorted({len(c) for c in got})} answers")
        return {r.id: json.dumps(c) for r, c in zip(todo, got, strict=True)}

    candidates_path = out_dir / "best_of_n.candidates.jsonl"
    candidates = {k: json.loads(v) for k, v in
                  answer_in_chunks(requests("user"), sampled, candidates_path).items()}
    release()
    by_instruction = dict(zip(instructions, ids, strict=True))

    def scored(todo: list[JudgeRequest]) -> dict[str, str]:
        xs = [r.messages[0]["content"] for r in todo]
        scores = rank(xs, [candidates[by_instruction[x]] for x in xs])
        return {r.id: json.dumps([float(v) for v in s]) for r, s in zip(todo, scores, strict=True)}

    scores_path = out_dir / "best_of_n.scores.jsonl"
    scores = {k: json.loads(v) for k, v in answer_in_chunks(requests("ranked"), scored, scores_path).items()}
    rows = [{"instruction": x, "candidates": candidates[i], "scores": scores[i],
             "chosen": max(range(n), key=lambda k, s=scores[i]: (s[k], -k))}
            for x, i in zip(instructions, ids, strict=True)]
    write_jsonl(done, rows)
    for path in (candidates_path, scores_path):
        partial_path(path).unlink(missing_ok=True)
    return [r["candidates"][r["chosen"]] for r in rows]


# the whole benchmark for one model ----------------------------------------------------------
def evaluate(
    model_name: str,
    model_path: str,
    generate: Any,
    decoding: dict[str, Any],
    out_dir: Path,
    annotator: str = OFFICIAL_ANNOTATOR,
    limit: int | None = None,
    judge: str = "embedded:smollm2-135m",
    dtype: str = "bfloat16",
    provenance: dict[str, Any] | None = None,
    best_of: tuple[int, str | None] = (1, None),
) -> dict[str, Any]:
    """Answer, annotate and score; every step's output is kept in ``out_dir`` and reused.

    ``generate(instructions) -> list[str]`` answers each instruction once with ``decoding``;
    ``best_of`` = (n, ranker) when it submits the ranker's pick of n samples (:func:`best_of_n`).
    Also writes the alpaca_eval model config of the checkpoint (``models_configs/<name>/``). A
    result comparable with the published leaderboard gets its position there (:data:`POSITION_KEY`).
    """
    from harness.artifacts import read_json
    from harness.models import load_tokenizer

    write_model_config(out_dir, model_name, model_path, load_tokenizer(model_path), decoding, dtype)
    rows = eval_set(limit)
    outputs_path = out_dir / "model_outputs.json"
    if outputs_path.exists():
        outputs = read_json(outputs_path)
    else:  # committed in chunks as they come (see harness.benchmarks.answers)
        requests = [JudgeRequest(f"{i:04d}", ({"role": "user", "content": r["instruction"]},),
                                 Decoding(decoding.get("temperature", 0.0),
                                          decoding.get("max_new_tokens", 0)))
                    for i, r in enumerate(rows)]

        def chat(todo: list[JudgeRequest]) -> dict[str, str]:
            got = generate([r.messages[0]["content"] for r in todo])
            return {r.id: a for r, a in zip(todo, got, strict=True)}

        answers = answer_in_chunks(requests, chat, outputs_path)
        outputs = [{"instruction": r["instruction"], "output": answers[q.id], "generator": model_name,
                    "dataset": r["dataset"]} for r, q in zip(rows, requests, strict=True)]
        write_json(outputs_path, outputs)
        partial_path(outputs_path).unlink(missing_ok=True)
    baseline = [{"instruction": r["instruction"], "output": r["output"], "generator": r["generator"],
                 "dataset": r["dataset"]} for r in rows]
    annotations = _saved_annotations(out_dir / "annotations.json", outputs)
    if annotations is None:
        annotations = annotate(outputs, baseline, annotator, out_dir, judge, dtype)
        write_json(out_dir / "annotations.json", annotations)
    files, reason = lc_files()
    metrics = score(annotations, files, reason, weights_dir=out_dir / "glm_weights")
    record = {
        **annotator_provenance(annotator, judge, dtype),
        "baseline": BASELINE,
        "n_examples": len(rows),
        "limit": limit_protocol(limit),
        "decoding": decoding,
        "model": model_path,
        "alpaca_eval": package_version(),
        **(provenance or {}),
    }
    if best_of[0] > 1:
        record["selection"] = {"best_of": best_of[0], "ranker": best_of[1],
                               "rule": "highest ranker score, the first of ties"}
    result = {"benchmark": NAME, "version": result_version(*best_of), "metrics": metrics,
              "provenance": record}
    position = report_position(metrics, model_name, record["annotator"], BASELINE, len(rows), limit)
    if position is not None:
        result[POSITION_KEY] = position
    write_json(out_dir / "results.json", result)
    return result


# in a run, and in the registry -----------------------------------------------------------------
def run_stage(ctx: StageContext, t: int) -> dict[str, Any]:
    """AlpacaEval 2.0 of iteration ``t``'s checkpoint, answered with the run's decoding (or the
    config's override), one answer per instruction or the ranker's pick of ``best_of``."""
    from harness.prompts import Prompt

    cfg: AlpacaEvalConfig = settings(ctx.config, NAME)
    sampling = ctx.sampling(cfg.decoding)
    provenance = ctx.provenance(t)
    seed_rule = ctx.model(t).seed_rule
    out = ctx.eval_dir(t, NAME)

    def sample(instructions: list[str], sampling: Any = sampling) -> list[list[str]]:
        prompts = [Prompt(f"alpaca_eval-{i:03d}", x) for i, x in enumerate(instructions)]
        return [g.responses for g in ctx.model(t).sample(prompts, sampling)]

    def answer(instructions: list[str]) -> list[str]:
        return [r[0] for r in sample(instructions)]

    if cfg.best_of > 1:  # n samples, seeded from the evaluation seed up; the run's ranker picks
        sampling = dataclasses.replace(
            sampling, seeds=tuple(sampling.seeds[0] + k for k in range(cfg.best_of)))
        instructions = [r["instruction"] for r in eval_set(cfg.limit)]
        picked = best_of_n(instructions, functools.partial(sample, sampling=sampling),
                           lambda xs, cs: ctx.ranker().score(xs, cs), cfg.best_of, out,
                           release=ctx.release)
        chosen = dict(zip(instructions, picked, strict=True))

        def answer(instructions: list[str]) -> list[str]:
            return [chosen[x] for x in instructions]

    result = evaluate(ctx.model_name(t), ctx.policy_path(t), answer, sampling.as_dict(seed_rule), out,
                      annotator=cfg.annotator, limit=cfg.limit,
                      best_of=(cfg.best_of, ctx.config.ranker if cfg.best_of > 1 else None),
                      dtype=ctx.config.sampling.dtype, provenance=provenance)
    m = result["metrics"]
    return {k: m[k] for k in ("win_rate", "standard_error", "length_controlled_winrate")}


def _note(metrics: dict[str, Any], metric: str, version: str) -> str | None:
    return metrics.get("lc_unavailable") if metric == "length_controlled_winrate" else None


# Published numbers: the official annotator against gpt4_1106_preview on all 805. Published
# best-of-n answers (the SPPO paper's and Snorkel's best-of-16) were picked by PairRM: the
# harness's best-of-n with its default ranker, never the single-answer column.
OFFICIAL_PROTOCOL = {"annotator": OFFICIAL_ANNOTATOR, "judge": "gpt-4-1106-preview", "baseline": BASELINE,
                     "n_examples": 805, "limit": None, "profile": "full"}
PUBLISHED_BEST_OF_RANKER = "pairrm"


def _published_protocol(row: dict[str, str]) -> tuple[str, dict[str, Any]]:
    n = re.search(r"best-of-(\d+)", f"{row.get('method', '')} {row.get('model', '')}")
    return (result_version(int(n[1]), PUBLISHED_BEST_OF_RANKER) if n else VERSION), OFFICIAL_PROTOCOL


BENCHMARK = register(Benchmark(
    NAME, "AlpacaEval 2.0",
    (Metric("length_controlled_winrate", "lc_standard_error", "AlpacaEval 2.0 LC (%)"),
     Metric("win_rate", "standard_error", "AlpacaEval 2.0 WR (%)")),
    note=_note,
    published_metrics={("alpaca_eval_2.0", "lc_win_rate"): "length_controlled_winrate",
                       ("alpaca_eval_2.0", "win_rate"): "win_rate"},
    published_protocol=_published_protocol,
    preflight=lambda config: check_annotator(settings(config, NAME).annotator),
    stage=run_stage, config=AlpacaEvalConfig, cli="harness.commands.eval_alpaca_eval"))
