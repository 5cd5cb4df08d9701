"""Open LLM Leaderboard v1 and v2 through lm-evaluation-harness, used as a library.

The v1 suite is lm-eval's ``openllm`` group: ARC-Challenge 25-shot acc_norm, HellaSwag 10-shot
acc_norm, MMLU 5-shot acc, TruthfulQA 0-shot mc2, Winogrande 5-shot acc, GSM8K 5-shot exact match;
the v1 score is their unweighted mean. The checkpoint object is handed to lm-eval's ``HFLM``
directly, so nothing is loaded twice.

With a data mirror, each task runs from local files: a task YAML rendered into the output folder
``include``s lm-eval's own task file and overrides only the dataset location (``dataset_path: json``
with ``data_files``), and a small converter writes the raw mirror files in the schema the task
expects. Each file is checked against its checksum; a file the mirror lacks is taken from the
download cache or downloaded from its official source (HellaSwag from rowanz/hellaswag, checked by
the git object id that repository records; Winogrande's train_xl, the few-shot pool). Tasks whose
data cannot be had are reported as unavailable, with the reason, and the average is then marked
partial. Without Winogrande's train split, its shots are drawn as lm-eval does for a task with no
train split, and results.json and its table column say so. Without a mirror, lm-eval's hub
datasets are used unchanged.

v2 is lm-eval's ``leaderboard`` group (IFEval, BBH, MATH level 5, GPQA, MuSR, MMLU-Pro, shots as
its task files set them) scored as the leaderboard normalises: a multiple-choice score x with c
choices becomes max(0, (x − 1/c)/(1 − 1/c))·100, per subtask for BBH and MuSR (then averaged),
on the group score for GPQA and MMLU-Pro; IFEval is the mean of prompt- and instruction-level strict
accuracy, MATH the exact match, both in percent; the v2 score is the mean of the six. The number
of choices is read from the evaluated questions (the most any question of the (sub)task offers).
No mirror here holds v2 data, so with a mirror set the v2 tasks are reported unavailable.

Each task's result is committed to ``results.json.partial`` as soon as it is in; a call killed
midway reuses the tasks committed with the same settings and runs only the others.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import Field, model_validator

from harness.artifacts import write_json
from harness.benchmarks import Benchmark, Metric, StageContext, register, settings
from harness.commits import Commits
from harness.config import Section
from harness.errors import ConfigError, DataError, DataUnavailable

if TYPE_CHECKING:
    from harness.under_test import ModelUnderTest

NAME = "open_llm"
NAME_V2 = "open_llm_v2"  # its own benchmark in tables: v2 numbers never share a column with v1's
# v1 with the leaderboard's own settings: lm-eval's default seeds (few-shot 1234), GSM8K's old stop
# sequences, MMLU as the mean of its 57 subjects. Numbers made before these carry "v1": another
# column.
VERSION = "v1-leaderboard"

OpenLLMTask = Literal["arc_challenge", "hellaswag", "mmlu", "truthfulqa_mc2", "winogrande", "gsm8k",
                      "ifeval", "bbh", "math_lvl5", "gpqa", "musr", "mmlu_pro"]


class OpenLLMConfig(Section):
    """``evaluation.open_llm`` (the tasks of the version are checked by the preflight)."""

    version: Literal["v1", "v2"] = "v1"
    tasks: list[OpenLLMTask] | None = Field(None, description="tasks of the version (default: all six)")
    limit: int | dict[OpenLLMTask | Literal["*"], int] | None = Field(
        None, description="first N examples of each (sub)task (smoke runs); or N per task, '*' "
        "for the others, e.g. {'*': 3, mmlu: 2}: 2 examples of each of MMLU's 57 subjects")
    batch_size: int = Field(8, ge=1)
    apply_chat_template: bool = False

    @model_validator(mode="after")
    def _limits(self) -> OpenLLMConfig:
        limits = self.limit.values() if isinstance(self.limit, dict) else [self.limit]
        if any(n is not None and n < 1 for n in limits):
            raise ValueError(f"limit: every limit must be at least 1 (got {self.limit})")
        return self

# simple_evaluate's defaults, which the leaderboard ran with (whatever the run's --seed)
LM_EVAL_SEEDS = {"random_seed": 0, "numpy_random_seed": 1234, "torch_random_seed": 1234,
                 "fewshot_random_seed": 1234}
# The v1 leaderboard's harness (lm-evaluation-harness b281b09, lm_eval/tasks/gsm8k.py) stopped
# GSM8K answers at these; lm-eval 0.4's gsm8k.yaml stops at "Question:", "</s>", "<|im_end|>".
GSM8K_V1_GENERATION = {"until": [":", "Question:", "Question"], "do_sample": False, "temperature": 0.0}


@dataclass(frozen=True)
class V1Task:
    name: str  # lm-eval task
    shots: int
    metric: str  # lm-eval metric key in results


V1_TASKS = (
    # Few-shot examples come from each task's own split (train; MMLU dev), as in the openllm group;
    # without Winogrande's train split, see ``FEWSHOT_NOTES``.
    V1Task("arc_challenge", 25, "acc_norm,none"),
    V1Task("hellaswag", 10, "acc_norm,none"),
    V1Task("mmlu", 5, "acc,none"),
    V1Task("truthfulqa_mc2", 0, "acc,none"),
    V1Task("winogrande", 5, "acc,none"),
    V1Task("gsm8k", 5, "exact_match,strict-match"),
)


# Where a mirrored task draws its few-shot examples from elsewhere than the leaderboard: recorded
# in results.json and in the table's protocol, so such numbers never pass for the official ones.
FEWSHOT_NOTES = {
    "winogrande": "few-shot examples drawn from the validation split, excluding the question "
                  "itself (lm-eval's rule when a task has no train split); the leaderboard draws them "
                  "from winogrande_xl train, which could not be had here",
}


@dataclass(frozen=True)
class V2Task:
    name: str
    group: str  # lm-eval task or group
    metrics: tuple[str, ...]  # lm-eval metric keys, averaged
    normalise: str  # "none", "task" (the group's score) or "subtasks" (each, then averaged)


V2_TASKS = (
    V2Task("ifeval", "leaderboard_ifeval", ("prompt_level_strict_acc,none", "inst_level_strict_acc,none"),
           "none"),
    V2Task("bbh", "leaderboard_bbh", ("acc_norm,none",), "subtasks"),
    V2Task("math_lvl5", "leaderboard_math_hard", ("exact_match,none",), "none"),
    V2Task("gpqa", "leaderboard_gpqa", ("acc_norm,none",), "task"),
    V2Task("musr", "leaderboard_musr", ("acc_norm,none",), "subtasks"),
    V2Task("mmlu_pro", "leaderboard_mmlu_pro", ("acc,none",), "task"),
)


def normalise(value: float, choices: int) -> float:
    """The leaderboard's normalisation of a multiple-choice score (0–1) to 0–100 above chance."""
    if choices < 2:
        raise DataError(f"cannot normalise a score over {choices} choice(s)")
    lower = 1.0 / choices
    return 100.0 * max(0.0, (value - lower) / (1.0 - lower))


def _choices(samples: list[dict[str, Any]]) -> int:
    return max(len(s["arguments"]) for s in samples)


def v2_score(task: V2Task, results: dict[str, dict[str, Any]], subtasks: list[str],
             samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """One v2 task's normalised score (and the raw ones) from lm-eval's results and samples."""
    def raw(name: str) -> float:
        return sum(float(results[name][m]) for m in task.metrics) / len(task.metrics)

    out: dict[str, Any] = {"raw": 100 * raw(task.group)}
    if task.normalise == "none":
        out["score"] = out["raw"]
    elif task.normalise == "task":
        c = max(_choices(samples[s]) for s in (subtasks or [task.group]))
        out.update(score=normalise(raw(task.group), c), choices=c)
    else:
        parts = {s: {"raw": 100 * raw(s), "choices": _choices(samples[s]),
                     "score": normalise(raw(s), _choices(samples[s]))} for s in subtasks}
        out.update(score=sum(p["score"] for p in parts.values()) / len(parts), subtasks=parts)
    return out


def _lm_eval_tasks_dir() -> Path:
    try:
        import lm_eval.tasks
    except ImportError as exc:
        raise ConfigError("the Open LLM Leaderboard needs lm-eval: pip install 'lm-eval>=0.4.13'") from exc
    return Path(lm_eval.tasks.__file__).parent


# converters: raw mirror files → the schema of lm-eval's task ---------------------------------
def mmlu_rows(csv_path: Path, subject: str) -> list[dict[str, Any]]:
    """cais/mmlu schema from a ``question,choice0..3,answer`` CSV."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and set(rows[0]) != {"question", "choice0", "choice1", "choice2", "choice3", "answer"}:
        raise DataError(f"{csv_path}: unexpected MMLU columns {sorted(rows[0])}")
    return [{"question": r["question"], "subject": subject,
             "choices": [r[f"choice{i}"] for i in range(4)], "answer": int(r["answer"])} for r in rows]


def truthfulqa_rows(mc_task_json: Path) -> list[dict[str, Any]]:
    """truthful_qa ``multiple_choice`` schema from the original ``mc_task.json``.

    The original maps each answer to 0/1 in a dict; the hub dataset lists them as choices and
    labels in the same order (correct answers first), which lm-eval's mc2 scoring relies on.
    """
    out = []
    for r in json.loads(mc_task_json.read_text(encoding="utf-8")):
        row: dict[str, Any] = {"question": r["question"]}
        for key in ("mc1_targets", "mc2_targets"):
            row[key] = {"choices": list(r[key]), "labels": [int(v) for v in r[key].values()]}
        out.append(row)
    return out


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def winogrande_rows(path: Path) -> list[dict[str, Any]]:
    """allenai/winogrande schema (sentence, option1, option2, answer) from a WinoGrande 1.1 file."""
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    keys = ("sentence", "option1", "option2", "answer")
    if rows and not set(keys) <= set(rows[0]):
        raise DataError(f"{path}: unexpected WinoGrande fields {sorted(rows[0])}")
    return [{k: str(r[k]) for k in keys} for r in rows]


@dataclass
class LocalTasks:
    """The v1 tasks that run from local files: their local task names, why the others cannot,
    and where a task's few-shot pool differs from the leaderboard's."""

    names: dict[str, str] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    fewshot_deviations: dict[str, str] = field(default_factory=dict)


def render_local_tasks(mirror: Path, out: Path) -> LocalTasks:
    """Write local task YAMLs (and converted data) into ``out``.

    Each file comes from the mirror, else the download cache, else its official source, and is
    checked against its checksum (:func:`harness.datafiles.fetch`); a task whose files cannot be
    had is left out, with the reason.
    """
    from harness import datafiles

    lm = _lm_eval_tasks_dir()
    root = mirror / "open_llm"
    data = out / "data"
    local = LocalTasks()

    def task_yaml(name: str, include: Path, files: dict[str, Path], extra: dict | None = None) -> None:
        cfg = {"include": str(include), "task": name, "dataset_path": "json", "dataset_name": None,
               "dataset_kwargs": {"data_files": {k: str(v) for k, v in files.items()}}, **(extra or {})}
        (out / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")

    def official(task: str, *relpaths: str) -> list[Path] | None:
        """These official files, checksum-verified; None (and the reason) if any cannot be had."""
        try:
            return [datafiles.fetch(r, mirror) for r in relpaths]
        except DataUnavailable as exc:
            local.unavailable[task] = str(exc)
            return None

    out.mkdir(parents=True, exist_ok=True)
    if arc := official("arc_challenge", "open_llm/arc_challenge/train.jsonl",
                       "open_llm/arc_challenge/test.jsonl"):
        task_yaml("arc_challenge_local", lm / "arc" / "arc_challenge.yaml",
                  {"train": arc[0], "test": arc[1]}, {"validation_split": None})
        local.names["arc_challenge"] = "arc_challenge_local"
    if hs := official("hellaswag", "open_llm/hellaswag/hellaswag_train.jsonl",
                      "open_llm/hellaswag/hellaswag_val.jsonl"):  # the hub's schema already
        task_yaml("hellaswag_local", lm / "hellaswag" / "hellaswag.yaml",
                  {"train": hs[0], "validation": hs[1]})
        local.names["hellaswag"] = "hellaswag_local"
    if gsm := official("gsm8k", "open_llm/gsm8k/train.jsonl", "open_llm/gsm8k/test.jsonl"):
        task_yaml("gsm8k_local", lm / "gsm8k" / "gsm8k.yaml", {"train": gsm[0], "test": gsm[1]},
                  {"generation_kwargs": GSM8K_V1_GENERATION})
        local.names["gsm8k"] = "gsm8k_local"
    if tqa := official("truthfulqa_mc2", "open_llm/truthfulqa/mc_task.json"):
        path = _write_jsonl(data / "truthfulqa_mc.jsonl", truthfulqa_rows(tqa[0]))
        task_yaml("truthfulqa_mc2_local", lm / "truthfulqa" / "truthfulqa_mc2.yaml",
                  {"validation": path}, {"tag": []})
        local.names["truthfulqa_mc2"] = "truthfulqa_mc2_local"
    if wino := official("winogrande", "open_llm/winogrande/dev.jsonl"):  # already in the hub schema
        files, extra = {"validation": wino[0]}, {}
        try:  # the leaderboard's few-shot pool
            train = datafiles.fetch("open_llm/winogrande/train_xl.jsonl", mirror)
            files["train"] = _write_jsonl(data / "winogrande_train_xl.jsonl", winogrande_rows(train))
        except DataUnavailable:
            extra = {"training_split": None}
            local.fewshot_deviations["winogrande"] = FEWSHOT_NOTES["winogrande"]
        task_yaml("winogrande_local", lm / "winogrande" / "default.yaml", files, extra)
        local.names["winogrande"] = "winogrande_local"
    subjects = sorted(p.name[: -len("_test.csv")] for p in (root / "mmlu" / "test").glob("*_test.csv"))
    for s in subjects:
        csvs = [datafiles.fetch(f"open_llm/mmlu/{split}/{s}_{split}.csv", mirror)
                for split in ("test", "dev")]  # a missing dev file is refused
        files = {"test": _write_jsonl(data / "mmlu" / f"{s}_test.jsonl", mmlu_rows(csvs[0], s)),
                 "dev": _write_jsonl(data / "mmlu" / f"{s}_dev.jsonl", mmlu_rows(csvs[1], s))}
        task_yaml(f"mmlu_{s}_local", lm / "mmlu" / "default" / f"mmlu_{s}.yaml", files, {"tag": []})
    if subjects:
        group = {"group": "mmlu_local", "task": [f"mmlu_{s}_local" for s in subjects],
                 "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
                 "metadata": {"version": 2}}
        (out / "mmlu_local.yaml").write_text(yaml.safe_dump(group, sort_keys=False), encoding="utf-8")
        local.names["mmlu"] = "mmlu_local"
    else:
        local.unavailable["mmlu"] = f"no MMLU test files in {root / 'mmlu' / 'test'}"
    return local


def selected_tasks(tasks: list[str] | None, version: str = "v1") -> list[Any]:
    """The tasks of ``version`` to run, in suite order; unknown names are refused."""
    if version not in ("v1", "v2"):
        raise ConfigError(f"Open LLM Leaderboard version {version!r} is not known (v1 or v2)")
    suite = V1_TASKS if version == "v1" else V2_TASKS
    unknown = set(tasks or []) - {t.name for t in suite}
    if unknown:
        raise ConfigError(f"unknown Open LLM {version} task(s) {sorted(unknown)}; "
                          f"choose from {[t.name for t in suite]}")
    return [t for t in suite if tasks is None or t.name in tasks]


def v1_average(scores: dict[str, float | None]) -> tuple[float | None, bool]:
    """Unweighted mean of the six v1 task scores (percent); partial when any is missing."""
    have = [v for v in scores.values() if v is not None]
    partial = len(have) < len(V1_TASKS)
    return (sum(have) / len(have) if have else None), partial


def _task_log(out_dir: Path, call: dict[str, Any]) -> Commits:
    """Per-task results committed to the partial file of ``results.json`` as they come in; those
    an interrupted call committed with the same settings ``call`` (model path included) are reused."""
    return Commits(out_dir / "results.json", "task", "open_llm/task", what="task",
                   keep=lambda r: r.get("settings") == call, list_keys=True)


def task_limit(limit: int | dict[str, int] | None, task: str) -> int | None:
    """A task's example limit: ``limit`` itself, or its entry in a per-task mapping (``*``: the rest)."""
    return limit.get(task, limit.get("*")) if isinstance(limit, dict) else limit


def evaluate(model: ModelUnderTest, out_dir: Path, limit: int | dict[str, int] | None = None,
             tasks: list[str] | None = None, batch_size: int = 8,
             apply_chat_template: bool = False, version: str = "v1",
             provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the tasks of ``version`` through lm-eval on the loaded model under test (its
    :meth:`~harness.under_test.ModelUnderTest.lm_eval`); write results.json."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    if version == "v2":
        return _evaluate_v2(model, out_dir, limit, tasks, batch_size, apply_chat_template, provenance)
    wanted = selected_tasks(tasks)
    mirror = os.environ.get("SPPO_DATA_DIR")
    local = (render_local_tasks(Path(mirror), out_dir / "tasks") if mirror
             else LocalTasks(names=render_hub_overrides(out_dir / "tasks")))
    # With a mirror every task that runs is a rendered one, whose includes name lm-eval's files
    # by path: indexing lm-eval's own tasks too would add 10-20 s to each call and change nothing.
    manager = TaskManager(include_path=str(out_dir / "tasks"), include_defaults=not mirror)
    call = {"version": VERSION, "model": model.path, "limit": limit, "batch_size": batch_size,
                "apply_chat_template": apply_chat_template, "data_dir": mirror}
    log = _task_log(out_dir, call)
    lm = None
    per_task: dict[str, Any] = {}
    for t in wanted:
        if mirror and t.name not in local.names:
            per_task[t.name] = {"score": None, "unavailable": local.unavailable.get(
                t.name, f"no data for {t.name} in the mirror {mirror}")}
            continue
        if t.name in log:
            per_task[t.name] = log.rows[t.name]["result"]
            continue
        lm = lm or model.lm_eval(batch_size)
        name = local.names.get(t.name, t.name)
        start = time.perf_counter()
        r = simple_evaluate(model=lm, tasks=[name], num_fewshot=t.shots, limit=task_limit(limit, t.name),
                            task_manager=manager, apply_chat_template=apply_chat_template,
                            log_samples=False, **LM_EVAL_SEEDS)
        res = r["results"][name]
        metric, _, flt = t.metric.partition(",")
        per_task[t.name] = {
            "task": name, "score": 100 * res[t.metric], "metric": metric, "filter": flt,
            "stderr": _percent(res.get(f"{metric}_stderr,{flt}")),
            "n": sum(r["n-samples"][k]["effective"] for k in r["n-samples"]),
            "n_shot": t.shots, "versions": r.get("versions", {}),
            "seconds": round(time.perf_counter() - start, 2),
        }
        if t.name == "mmlu":  # the leaderboard's MMLU: the plain mean of the subject accuracies
            per_task[t.name].update(subject_mean(r, name))
        if t.name == "gsm8k":  # strict (the leaderboard's) and flexible extraction
            per_task[t.name]["flexible_extract"] = _percent(res.get("exact_match,flexible-extract"))
        if t.name in local.fewshot_deviations:
            per_task[t.name]["fewshot_deviation"] = local.fewshot_deviations[t.name]
        log.commit([{"task": t.name, "settings": call, "result": per_task[t.name]}])
    avg, partial = v1_average({t.name: per_task[t.name]["score"] for t in wanted})
    deviating = sorted(k for k, v in per_task.items() if "fewshot_deviation" in v)
    from importlib.metadata import version

    flat = {}
    for name, v in per_task.items():
        flat[name] = v["score"]
        flat[f"{name}_stderr"] = v.get("stderr")
    record = {
        "benchmark": NAME, "version": VERSION,
        "metrics": {"average": avg, "average_is_partial": partial, **flat, "tasks": per_task},
        "provenance": {
            "lm_eval": version("lm-eval"),
            "limit": limit,
            "tasks": sorted(k for k, v in per_task.items() if v["score"] is not None),
            "apply_chat_template": apply_chat_template,
            "seeds": LM_EVAL_SEEDS,
            "data": _data_description(mirror, deviating),
            "data_dir": mirror,
            "n_examples": sum(v.get("n", 0) for v in per_task.values()),
            **(provenance or {}),
        },
    }
    log.finish(lambda path: write_json(path, record))
    return record


def _percent(x: Any) -> float | None:
    return 100 * x if isinstance(x, float) else None  # lm-eval writes "N/A" where it has none


def _leaves(groups: dict[str, list[str]], name: str) -> list[str]:
    """The tasks under ``name`` in lm-eval's ``group_subtasks``, groups expanded."""
    return [leaf for c in groups.get(name, []) for leaf in (_leaves(groups, c) if c in groups else [c])]


def subject_mean(result: dict[str, Any], group: str) -> dict[str, Any]:
    """MMLU as the v1 leaderboard reported it: the unweighted mean of its subjects' accuracies
    (lm-eval's group score weights them by size: professional_law is 10.9 % of it, 1/57 here);
    the standard error of that mean, sqrt(Σ se²)/57; lm-eval's weighted score kept beside."""
    subjects = _leaves(result.get("group_subtasks", {}), group)
    accs = [result["results"][s]["acc,none"] for s in subjects]
    ses = [result["results"][s].get("acc_stderr,none") for s in subjects]
    se = (sum(x * x for x in ses) ** 0.5 / len(ses)
          if ses and all(isinstance(x, float) for x in ses) else None)
    weighted = result["results"][group]
    return {"score": 100 * sum(accs) / len(accs), "stderr": _percent(se), "subjects": len(subjects),
            "score_weighted": 100 * weighted["acc,none"],
            "stderr_weighted": _percent(weighted.get("acc_stderr,none"))}


def render_hub_overrides(out: Path) -> dict[str, str]:
    """Without a mirror: lm-eval's hub tasks, with the leaderboard's GSM8K generation settings."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = {"include": str(_lm_eval_tasks_dir() / "gsm8k" / "gsm8k.yaml"), "task": "gsm8k_v1",
           "generation_kwargs": GSM8K_V1_GENERATION}
    (out / "gsm8k_v1.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return {"gsm8k": "gsm8k_v1"}


def _data_description(mirror: str | None, deviating: list[str]) -> str:
    """The data part of the protocol: numbers with other few-shot pools get another column."""
    if not mirror:
        return "lm-eval hub datasets"
    return "local mirror, converted" + (f"; few-shot pool differs for {', '.join(deviating)}"
                                         if deviating else "")


def _evaluate_v2(model: ModelUnderTest, out_dir: Path, limit: int | dict[str, int] | None,
                 tasks: list[str] | None,
                 batch_size: int, apply_chat_template: bool,
                 provenance: dict[str, Any] | None) -> dict[str, Any]:
    from importlib.metadata import version

    from lm_eval import simple_evaluate

    wanted = selected_tasks(tasks, "v2")
    mirror = os.environ.get("SPPO_DATA_DIR")
    call = {"version": "v2", "model": model.path, "limit": limit, "batch_size": batch_size,
                "apply_chat_template": apply_chat_template}
    log = _task_log(out_dir, call)
    per_task: dict[str, Any] = {}
    lm = None
    for t in wanted:
        if mirror:
            per_task[t.name] = {"score": None,
                                "unavailable": f"no v2 data ({t.group}) in the mirror {mirror}"}
            continue
        if t.name in log:
            per_task[t.name] = log.rows[t.name]["result"]
            continue
        lm = lm or model.lm_eval(batch_size)
        start = time.perf_counter()
        r = simple_evaluate(model=lm, tasks=[t.group], limit=task_limit(limit, t.name),
                            apply_chat_template=apply_chat_template,
                            log_samples=True, **LM_EVAL_SEEDS)
        subtasks = list(r.get("group_subtasks", {}).get(t.group, []))
        per_task[t.name] = {**v2_score(t, r["results"], subtasks, r["samples"]), "task": t.group,
                            "n": sum(v["effective"] for v in r["n-samples"].values()),
                            "n_shot": r.get("n-shot", {}), "versions": r.get("versions", {}),
                            "seconds": round(time.perf_counter() - start, 2)}
        log.commit([{"task": t.name, "settings": call, "result": per_task[t.name]}])
    scores = [v["score"] for v in per_task.values() if v["score"] is not None]
    record = {
        "benchmark": NAME_V2, "version": "v2",
        "metrics": {"average": sum(scores) / len(scores) if scores else None,
                    "average_is_partial": len(scores) < len(V2_TASKS),
                    **{k: v["score"] for k, v in per_task.items()}, "tasks": per_task},
        "provenance": {"lm_eval": version("lm-eval"), "limit": limit,
                       "tasks": sorted(k for k, v in per_task.items() if v["score"] is not None),
                       "apply_chat_template": apply_chat_template, "seeds": LM_EVAL_SEEDS,
                       "normalisation": "open-llm-leaderboard v2",
                       "data": "lm-eval hub datasets" if not mirror else "local mirror (no v2 data)",
                       "data_dir": mirror,
                       "n_examples": sum(v.get("n", 0) for v in per_task.values()), **(provenance or {})},
    }
    log.finish(lambda path: write_json(path, record))
    return record


# in a run, and in the registry -----------------------------------------------------------------
def run_stage(ctx: StageContext, t: int) -> dict[str, Any]:
    """The Open LLM Leaderboard (v1 or v2) on iteration ``t``'s checkpoint, handed to lm-eval."""
    cfg: OpenLLMConfig = settings(ctx.config, NAME)
    result = evaluate(ctx.model(t), ctx.eval_dir(t, NAME if cfg.version == "v1" else NAME_V2),
                      limit=cfg.limit, tasks=cfg.tasks, batch_size=cfg.batch_size, version=cfg.version,
                      apply_chat_template=cfg.apply_chat_template, provenance=ctx.provenance(t))
    m = result["metrics"]
    return {"average": m["average"], "average_is_partial": m["average_is_partial"]}


def _note(metrics: dict[str, Any], metric: str, version: str) -> str | None:
    if metric == "average" and metrics.get("average_is_partial"):
        return f"partial average: not all six {version} tasks ran"
    return (metrics.get("tasks", {}).get(metric) or {}).get("unavailable")


BENCHMARK = register(Benchmark(
    NAME, "Open LLM v1",
    (Metric("average", None, "Open LLM v1 avg (%)"),
     Metric("arc_challenge", "arc_challenge_stderr", "ARC-C 25-shot (%)"),
     Metric("hellaswag", "hellaswag_stderr", "HellaSwag 10-shot (%)"),
     Metric("mmlu", "mmlu_stderr", "MMLU 5-shot (%)"),
     Metric("truthfulqa_mc2", "truthfulqa_mc2_stderr", "TruthfulQA mc2 (%)"),
     Metric("winogrande", "winogrande_stderr", "Winogrande 5-shot (%)"),
     Metric("gsm8k", "gsm8k_stderr", "GSM8K 5-shot (%)")),
    note=_note, stage=run_stage, cli="harness.commands.eval_open_llm",
    preflight=lambda config: selected_tasks(settings(config, NAME).tasks, settings(config, NAME).version),
    config=OpenLLMConfig))
register(Benchmark(  # v2 numbers are their own benchmark: never in a column with v1's
    NAME_V2, "Open LLM v2",
    (Metric("average", None, "Open LLM v2 avg (normalised)"), Metric("ifeval", None, "IFEval (strict, %)"),
     Metric("bbh", None, "BBH (normalised)"), Metric("math_lvl5", None, "MATH lvl 5 (%)"),
     Metric("gpqa", None, "GPQA (normalised)"), Metric("musr", None, "MuSR (normalised)"),
     Metric("mmlu_pro", None, "MMLU-Pro (normalised)")),
    note=_note))
