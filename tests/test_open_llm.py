"""Open LLM Leaderboard through lm-eval: v1 converters on real mirror rows, local task configs, and
the harness's numbers equal to lm-eval called directly (same model, task, shots, limit, seed); the
shared-prefix log-likelihoods equal HFLM's per request; v2's normalisation against hand-computed
values."""

from __future__ import annotations

import inspect
import io
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import datafiles
from harness.benchmarks import open_llm
from harness.logprobs import Scored, families
from harness.models import load_model, load_tokenizer
from harness.under_test.hf import TransformersModel
from harness.under_test.hf_lm_eval import PrefixSharingHFLM


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """No network and an empty download cache: the URLs the harness tried to download."""
    tried: list[str] = []

    def refuse(url: str, timeout: float = 0) -> None:
        tried.append(url)
        raise OSError("network unreachable")

    monkeypatch.setattr(datafiles.urllib.request, "urlopen", refuse)
    monkeypatch.setenv("SPPO_CACHE_DIR", str(tmp_path / "cache"))
    return tried


@pytest.fixture(scope="module")
def mirror() -> Path:
    value = os.environ.get("SPPO_DATA_DIR")
    if not value:
        pytest.fail("SPPO_DATA_DIR must point at the benchmark data mirror (../shared/data in CI)")
    return Path(value)


def test_mmlu_converter_on_real_rows(mirror: Path) -> None:
    rows = open_llm.mmlu_rows(mirror / "open_llm" / "mmlu" / "test" / "anatomy_test.csv", "anatomy")
    assert len(rows) == 135  # MMLU anatomy test size
    first = rows[0]
    assert first["subject"] == "anatomy" and first["answer"] == 0
    assert first["question"].startswith("A lesion causing compression of the facial nerve")
    assert first["choices"][0] == "paralysis of the facial muscles." and len(first["choices"]) == 4


def test_truthfulqa_converter_keeps_choice_order_and_labels(mirror: Path) -> None:
    raw = json.loads((mirror / "open_llm" / "truthfulqa" / "mc_task.json").read_text())
    rows = open_llm.truthfulqa_rows(mirror / "open_llm" / "truthfulqa" / "mc_task.json")
    assert len(rows) == 817
    for r, q in zip(rows[:50], raw[:50], strict=True):
        assert r["mc2_targets"]["choices"] == list(q["mc2_targets"])
        assert r["mc2_targets"]["labels"] == list(q["mc2_targets"].values())
        assert r["mc1_targets"]["labels"][0] == 1 and sum(r["mc1_targets"]["labels"]) == 1


def test_local_tasks_cover_the_mirrored_v1_tasks(mirror: Path, tmp_path: Path,
                                                 offline: list[str]) -> None:
    local = open_llm.render_local_tasks(mirror, tmp_path)
    assert local.names == {"arc_challenge": "arc_challenge_local", "gsm8k": "gsm8k_local",
                           "truthfulqa_mc2": "truthfulqa_mc2_local", "mmlu": "mmlu_local",
                           "winogrande": "winogrande_local"}
    # what the mirror lacks is looked for at its official source, checksummed (see below)
    manifest = datafiles.manifest()
    assert offline == [manifest[f"open_llm/{r}"]["url"] for r in (
        "hellaswag/hellaswag_train.jsonl", "winogrande/train_xl.jsonl")]
    assert set(local.unavailable) == {"hellaswag"}
    assert "download from https://raw.githubusercontent.com/rowanz/hellaswag/" in \
        local.unavailable["hellaswag"]
    assert "winogrande_xl train" in local.fewshot_deviations["winogrande"]
    import yaml

    arc = yaml.safe_load((tmp_path / "arc_challenge_local.yaml").read_text())
    assert arc["include"].endswith("arc/arc_challenge.yaml") and arc["dataset_path"] == "json"
    assert set(arc) == {"include", "task", "dataset_path", "dataset_name", "dataset_kwargs",
                        "validation_split"}  # only the dataset location is overridden
    assert len(yaml.safe_load((tmp_path / "mmlu_local.yaml").read_text())["task"]) == 57
    wino = yaml.safe_load((tmp_path / "winogrande_local.yaml").read_text())
    assert wino["training_split"] is None  # no train split mirrored: shots come from validation
    assert list(wino["dataset_kwargs"]["data_files"]) == ["validation"]


def test_a_corrupt_mirror_file_is_refused_by_name(mirror: Path, tmp_path: Path, offline: list[str]) -> None:
    fake = tmp_path / "mirror"
    (fake / "open_llm" / "truthfulqa").mkdir(parents=True)
    raw = (mirror / "open_llm" / "truthfulqa" / "mc_task.json").read_bytes()
    (fake / "open_llm" / "truthfulqa" / "mc_task.json").write_bytes(raw.replace(b"Yes", b"No", 1))
    with pytest.raises(open_llm.DataError, match=r"mc_task\.json: sha256 mismatch"):
        open_llm.render_local_tasks(fake, tmp_path / "tasks")
    (fake / "open_llm" / "truthfulqa" / "mc_task.json").write_bytes(raw)
    assert open_llm.render_local_tasks(fake, tmp_path / "tasks").names == {
        "truthfulqa_mc2": "truthfulqa_mc2_local"}


def test_v1_average_is_unweighted_and_partial_when_tasks_are_missing() -> None:
    full = {t.name: 10.0 * (i + 1) for i, t in enumerate(open_llm.V1_TASKS)}
    assert open_llm.v1_average(full) == (35.0, False)
    full["hellaswag"] = None
    assert open_llm.v1_average(full) == (pytest.approx((10 + 30 + 40 + 50 + 60) / 5), True)


def test_harness_numbers_equal_lm_eval_called_directly(
    mirror: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: list[str]
) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("SPPO_DATA_DIR", str(mirror))
    model, tok = load_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))
    tasks = ["arc_challenge", "truthfulqa_mc2", "winogrande", "hellaswag"]
    limits = {"*": 3, "winogrande": 2}  # per-task limits, '*' for the rest
    got = open_llm.evaluate(TransformersModel(model, tok, str(tiny_model_dir)), tmp_path / "ol",
                            limit=limits, tasks=tasks, batch_size=4)
    m = got["metrics"]
    assert m["tasks"]["hellaswag"]["score"] is None
    assert "hellaswag_train.jsonl: not in the data mirror" in m["tasks"]["hellaswag"]["unavailable"]
    assert m["average_is_partial"] is True

    manager = TaskManager(include_path=str(tmp_path / "ol" / "tasks"))
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=4, device="cpu")
    for name, local, shots, key in [("arc_challenge", "arc_challenge_local", 25, "acc_norm,none"),
                                    ("truthfulqa_mc2", "truthfulqa_mc2_local", 0, "acc,none"),
                                    ("winogrande", "winogrande_local", 5, "acc,none")]:
        n = limits.get(name, 3)
        direct = simple_evaluate(model=lm, tasks=[local], num_fewshot=shots, limit=n,
                                 task_manager=manager)  # lm-eval's default seeds, as the leaderboard
        # the harness scores with PrefixSharingHFLM: the same inputs, the forward split at a shared
        # prefix, so equal to rounding (fp32 here; per-request agreement is tested below)
        assert m["tasks"][name]["score"] == pytest.approx(100 * direct["results"][local][key], abs=1e-3)
        assert m["tasks"][name]["n"] == n and m["tasks"][name]["n_shot"] == shots
    assert m["average"] == pytest.approx(sum(m["tasks"][t]["score"] for t in tasks[:3]) / 3)
    assert "validation split" in m["tasks"]["winogrande"]["fewshot_deviation"]
    assert "fewshot_deviation" not in m["tasks"]["arc_challenge"]
    assert got["provenance"]["data"] == "local mirror, converted; few-shot pool differs for winogrande"
    assert got["provenance"]["limit"] == limits  # in the protocol key: another limit, another column
    defaults = {k: p.default for k, p in inspect.signature(simple_evaluate).parameters.items()
                if k.endswith("seed")}
    assert got["provenance"]["seeds"] == defaults and defaults["fewshot_random_seed"] == 1234
    assert json.loads((tmp_path / "ol" / "results.json").read_text())["metrics"] == m


def test_families_share_the_longest_prefix_that_reads_no_scored_logit() -> None:
    intro = tuple(range(100, 112))  # what every subject's instruction starts with
    shots = {s: intro + tuple(range(1000 * s, 1000 * s + 40)) for s in (1, 2)}
    inputs = [Scored(shots[1] + (7, 8, 9), 52), Scored(shots[2] + (5, 5), 52),
              Scored(shots[1] + (7, 9, 9, 9), 53), Scored(shots[2] + (6,), 52),
              Scored((1, 2, 3), 2),  # shares nothing with anyone
              # one context, two multi-token continuations: capped below the first scored position
              Scored((*range(50, 80), 1, 2), 28), Scored((*range(50, 80), 1, 3), 29)]
    got = sorted((shared, sorted(m)) for shared, m in families(inputs))
    assert got == [(0, [4]), (28, [5, 6]), (52, [0, 2]), (52, [1, 3])]
    for shared, members in families(inputs):
        assert all(shared <= inputs[i].first for i in members)
        assert all(inputs[i].tokens[:shared] == inputs[members[0]].tokens[:shared] for i in members)


def test_shared_prefix_log_likelihoods_equal_hflms_per_request(tiny_model_dir: Path) -> None:
    """Few-shot-like requests (shared shots, choices of one context, one- and multi-token
    continuations, a context cut to max_length): the same (log p, greedy) as HFLM within 1e-4 nats
    in fp32, with fewer tokens forwarded."""
    import random

    from lm_eval.models.huggingface import HFLM

    model, tok = load_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))
    rng = random.Random(0)
    draw = lambda n: [rng.randrange(5, 4000) for _ in range(n)]  # noqa: E731
    requests = []
    for s in range(3):
        shots = draw(120)
        for q in range(3):
            context = shots + draw(rng.randrange(5, 30))
            for c in range(4):
                requests.append(((f"{s}/{q}/{c}", ""), context, draw(1 if s == 0 else rng.randrange(1, 6))))
    requests += [(("long", ""), draw(600), draw(3)), (("short", ""), [7, 8], [9, 10, 11])]
    forwarded: list[int] = []
    hook = model.register_forward_pre_hook(  # HFLM passes the ids by position, we by name
        lambda _, args, kwargs: forwarded.append(kwargs.get("input_ids", args[0] if args else None).numel()),
        with_kwargs=True)
    try:
        ours = PrefixSharingHFLM(pretrained=model, tokenizer=tok, batch_size=4, device="cpu")
        got = ours._loglikelihood_tokens(requests, disable_tqdm=True)
        shared_tokens, forwarded[:] = sum(forwarded), []
        want = HFLM(pretrained=model, tokenizer=tok, batch_size=4, device="cpu")._loglikelihood_tokens(
            requests, disable_tqdm=True)
        full_tokens = sum(forwarded)
    finally:
        hook.remove()
    assert ours.max_length == 512  # the long request was cut from the left, as HFLM cuts it
    assert [g[1] for g in got] == [w[1] for w in want]
    assert max(abs(g[0] - w[0]) for g, w in zip(got, want, strict=True)) < 1e-4
    assert shared_tokens < 0.5 * full_tokens


def test_the_lm_head_runs_only_where_a_row_reads(tiny_model_dir: Path) -> None:
    """Rows of one batch read different positions (a judge's verdict after prompts of different
    lengths, a choice's tokens): the LM head sees those positions only, and each row's log-probs
    equal those of the row scored alone (fp32, 1e-5)."""
    import torch

    from harness.logprobs import next_token_logprobs, shared_prefix_logprobs

    model = load_model(str(tiny_model_dir))
    head_rows: list[int] = []
    hook = model.get_output_embeddings().register_forward_pre_hook(
        lambda _, args: head_rows.append(args[0].shape[0] * args[0].shape[1]))
    shared = list(range(40, 70))  # a common prefix: the rows continue from its KV cache
    seqs = [shared + list(range(100, 100 + n)) for n in (3, 17, 9, 30)]
    try:
        batched, _, _ = next_token_logprobs(model, seqs, [5, 6, 7], batch_size=4)
        assert head_rows == [1, 4 * 4]  # the prefix's last position; 4 rows × 4 distinct ends
        alone = torch.cat([next_token_logprobs(model, [s], [5, 6, 7], batch_size=1)[0] for s in seqs])
        inputs = [Scored(tuple(s), first) for s, first in zip(seqs, (31, 45, 33, 59), strict=True)]
        head_rows.clear()
        spans = shared_prefix_logprobs(model, inputs, 4, torch.float32, lambda _, lp: lp.clone())
        kept = sorted({p for s in inputs for p in range(s.first - 30, len(s.tokens) - 30)})
        assert head_rows == [1, 4 * len(kept)] and len(kept) < max(map(len, seqs)) - 30 - 1
        for s, span in zip(inputs, spans, strict=True):
            assert span.shape[0] == len(s.tokens) - s.first
            one = shared_prefix_logprobs(model, [s], 1, torch.float32, lambda _, lp: lp.clone())[0]
            assert torch.allclose(span, one, atol=1e-5)
    finally:
        hook.remove()
    assert torch.allclose(batched, alone, atol=1e-5)


def test_cli_runs_open_llm_on_a_checkpoint(
    mirror: Path, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from harness.cli import main

    out = tmp_path / "ol"
    argv = ["eval", "open_llm", "--model", str(tiny_model_dir), "--tasks", "truthfulqa_mc2,gsm8k",
            "--limit", "2", "--dtype", "float32", "--data-dir", str(mirror), "--out", str(out), "--json"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "results.json").read_text())
    assert printed["truthfulqa_mc2"] == saved["metrics"]["truthfulqa_mc2"]
    assert saved["metrics"]["tasks"]["gsm8k"]["metric"] == "exact_match"
    assert saved["metrics"]["tasks"]["gsm8k"]["filter"] == "strict-match"
    assert isinstance(saved["metrics"]["tasks"]["gsm8k"]["flexible_extract"], float)
    # the v1 leaderboard's harness (b281b09, lm_eval/tasks/gsm8k.py) stopped at these
    from lm_eval.tasks import TaskManager

    gsm = TaskManager(include_path=str(out / "tasks")).load(["gsm8k_local"])["tasks"]["gsm8k_local"]
    assert gsm.config.generation_kwargs["until"] == [":", "Question:", "Question"]
    assert saved["provenance"]["tasks"] == ["gsm8k", "truthfulqa_mc2"]  # lm-eval's comma form
    assert saved["provenance"]["limit"] == 2 and saved["provenance"]["lm_eval"].startswith("0.4")
    assert main(["eval", "open_llm", "--model", str(tiny_model_dir), "--tasks", "piqa"]) == 2
    assert main(["eval", "open_llm", "--model", str(tiny_model_dir), "--tasks", "mmlu,piqa"]) == 2


def test_mmlu_is_the_leaderboards_unweighted_subject_mean() -> None:
    # The v1 leaderboard averaged the 57 hendrycksTest subject accuracies; lm-eval's group score
    # weights them by size. Two subjects of 10 and 90 questions: 0.9 and 0.5.
    result = {"group_subtasks": {"mmlu": ["mmlu_stem", "mmlu_other"], "mmlu_stem": ["mmlu_a"],
                                 "mmlu_other": ["mmlu_b"]},
              "results": {"mmlu": {"acc,none": (9 + 45) / 100, "acc_stderr,none": 0.04},
                          "mmlu_a": {"acc,none": 0.9, "acc_stderr,none": 0.1},
                          "mmlu_b": {"acc,none": 0.5, "acc_stderr,none": 0.05}}}
    got = open_llm.subject_mean(result, "mmlu")
    assert got["score"] == pytest.approx(70.0) and got["score_weighted"] == pytest.approx(54.0)
    assert got["stderr"] == pytest.approx(100 * (0.1 ** 2 + 0.05 ** 2) ** 0.5 / 2)
    assert got["subjects"] == 2 and got["stderr_weighted"] == pytest.approx(4.0)
    result["results"]["mmlu_a"]["acc_stderr,none"] = "N/A"  # one example: lm-eval has none
    assert open_llm.subject_mean(result, "mmlu")["stderr"] is None


# v2 ------------------------------------------------------------------------------------------
def _samples(*choices: int) -> list[dict]:
    return [{"arguments": [("ctx", f" c{i}") for i in range(c)]} for c in choices]


def test_v2_normalisation_against_hand_computed_values() -> None:
    tasks = {t.name: t for t in open_llm.V2_TASKS}
    assert [t.name for t in open_llm.V2_TASKS] == ["ifeval", "bbh", "math_lvl5", "gpqa", "musr", "mmlu_pro"]
    # BBH: per subtask, then averaged: (0.75 − ½)/(1 − ½) = 50; 0.2 is below chance (¼) → 0
    results = {"leaderboard_bbh": {"acc_norm,none": 0.5}, "bbh_a": {"acc_norm,none": 0.75},
               "bbh_b": {"acc_norm,none": 0.2}}
    bbh = open_llm.v2_score(tasks["bbh"], results, ["bbh_a", "bbh_b"],
                            {"bbh_a": _samples(2, 2), "bbh_b": _samples(4, 4, 4)})
    assert bbh["score"] == pytest.approx(25.0) and bbh["raw"] == pytest.approx(50.0)
    assert bbh["subtasks"]["bbh_a"] == {"raw": 75.0, "choices": 2, "score": pytest.approx(50.0)}
    # GPQA: the group's score over 4 choices: (0.4 − ¼)/(¾) = 20
    gpqa = open_llm.v2_score(tasks["gpqa"], {"leaderboard_gpqa": {"acc_norm,none": 0.4}},
                             ["g1", "g2"], {"g1": _samples(4), "g2": _samples(4, 4)})
    assert gpqa["score"] == pytest.approx(20.0) and gpqa["choices"] == 4
    # MMLU-Pro: up to 10 options (some questions have fewer): (0.28 − 0.1)/0.9 = 20
    pro = open_llm.v2_score(tasks["mmlu_pro"], {"leaderboard_mmlu_pro": {"acc,none": 0.28}}, [],
                            {"leaderboard_mmlu_pro": _samples(10, 7, 10)})
    assert pro["score"] == pytest.approx(20.0) and pro["choices"] == 10
    # IFEval: mean of prompt- and instruction-level strict accuracy; MATH: exact match, in percent
    ifeval = open_llm.v2_score(tasks["ifeval"], {"leaderboard_ifeval": {
        "prompt_level_strict_acc,none": 0.3, "inst_level_strict_acc,none": 0.5}}, [], {})
    assert ifeval["score"] == pytest.approx(40.0)
    math = open_llm.v2_score(tasks["math_lvl5"], {"leaderboard_math_hard": {"exact_match,none": 0.07}},
                             ["m1"], {"m1": []})
    assert math["score"] == pytest.approx(7.0)
    assert open_llm.normalise(1.0, 3) == pytest.approx(100.0)
    with pytest.raises(open_llm.DataError):
        open_llm.normalise(0.5, 1)


def test_v2_tasks_are_checked_per_version(tmp_path: Path) -> None:
    from harness.config import EvaluationConfig
    from harness.errors import ConfigError

    assert [t.name for t in open_llm.selected_tasks(["musr", "bbh"], "v2")] == ["bbh", "musr"]
    # checked before a run starts, by the benchmark's preflight
    config = SimpleNamespace(evaluation=EvaluationConfig(
        open_llm={"version": "v2", "tasks": ["arc_challenge"]}))
    with pytest.raises(ConfigError, match=r"unknown Open LLM v2 task\(s\) \['arc_challenge'\]"):
        open_llm.BENCHMARK.preflight(config)
    with pytest.raises(ConfigError, match="version 'v3' is not known"):
        open_llm.selected_tasks(None, "v3")


def test_v2_without_its_data_in_the_mirror_is_reported_unavailable(
    mirror: Path, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from harness.cli import main

    out = tmp_path / "ol2"
    assert main(["eval", "open_llm", "--version", "v2", "--model", str(tiny_model_dir), "--dtype", "float32",
                 "--data-dir", str(mirror), "--out", str(out), "--json"]) == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["benchmark"] == "open_llm_v2" and saved["metrics"]["average"] is None
    assert saved["metrics"]["tasks"]["bbh"]["unavailable"].startswith("no v2 data (leaderboard_bbh)")
    assert main(["eval", "open_llm", "--version", "v2", "--model", str(tiny_model_dir),
                 "--tasks", "mmlu"]) == 2
    assert "unknown Open LLM v2 task(s) ['mmlu']" in capsys.readouterr().err


def test_committed_tasks_are_reused_only_under_the_same_settings(tmp_path: Path) -> None:
    settings = {"version": "v1", "limit": 3, "batch_size": 2, "seed": 0}
    log = open_llm._task_log(tmp_path, settings)
    assert log.rows == {}
    log.commit([{"task": "arc_challenge", "settings": settings, "result": {"score": 25.0, "n": 3}}])
    with open(log.partial, "a") as f:
        f.write('{"task": "mmlu", "sett')  # killed mid-append
    again = open_llm._task_log(tmp_path, dict(settings))
    assert {k: r["result"] for k, r in again.rows.items()} == {"arc_challenge": {"score": 25.0, "n": 3}}
    assert open_llm._task_log(tmp_path, {**settings, "limit": 4}).rows == {}  # other settings: rerun
    again.finish(lambda path: path.write_text("{}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def _hellaswag_row(i: int, split: str) -> dict:
    """A row in rowanz/hellaswag's own schema (data/hellaswag_*.jsonl)."""
    return {"ind": i, "activity_label": f"Activity {i % 3}", "ctx_a": f"A person picks up tool {i}.",
            "ctx_b": "then they", "ctx": f"A person picks up tool {i}. then they", "split": split,
            "split_type": "indomain", "endings": [f"use tool {i} [title] well.", "sleep.", "run away.",
                                                   "sing."],
            "label": i % 4, "source_id": f"activitynet~v_{i}"}


def _winogrande_row(i: int) -> dict:
    """A row of WinoGrande 1.1's train_xl.jsonl (qID included, which the hub schema lacks)."""
    return {"qID": f"q{i}-1", "sentence": f"Tom gave Ann book {i} because _ was leaving.",
            "option1": "Tom", "option2": "Ann", "answer": str(1 + i % 2)}


def test_files_the_mirror_lacks_are_downloaded_checksummed_and_used(
    mirror: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HellaSwag (both splits) and Winogrande's train_xl, served as their official URLs would
    serve them: the tasks run from them, Winogrande's shots come from train_xl as the
    leaderboard's did, and nothing is marked as deviating."""
    bodies = {"open_llm/hellaswag/hellaswag_train.jsonl": [_hellaswag_row(i, "train") for i in range(12)],
              "open_llm/hellaswag/hellaswag_val.jsonl": [_hellaswag_row(100 + i, "val") for i in range(3)],
              "open_llm/winogrande/train_xl.jsonl": [_winogrande_row(i) for i in range(8)]}
    by_url = {}
    for rel, rows in bodies.items():
        body = "".join(json.dumps(r) + "\n" for r in rows).encode()
        path = tmp_path / "served" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        entry = datafiles.manifest()[rel]
        kind = datafiles.checksum(entry)[0]  # the served stand-ins get the manifest's kind of checksum
        monkeypatch.setitem(datafiles.manifest(), rel, {**entry, kind: datafiles.CHECKSUMS[kind](path)})
        by_url[entry["url"]] = body
    monkeypatch.setattr(datafiles.urllib.request, "urlopen", lambda url, timeout=0: io.BytesIO(by_url[url]))
    monkeypatch.setenv("SPPO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SPPO_DATA_DIR", str(mirror))

    local = open_llm.render_local_tasks(mirror, tmp_path / "tasks")
    assert local.names["hellaswag"] == "hellaswag_local" and not local.unavailable
    assert local.fewshot_deviations == {}
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(tmp_path / "tasks"))
    tasks = manager.load(["hellaswag_local", "winogrande_local"])["tasks"]
    hs, wino = tasks["hellaswag_local"], tasks["winogrande_local"]
    assert len(hs.training_docs()) == 12 and len(hs.validation_docs()) == 3
    doc = hs.validation_docs()[0]  # lm-eval's own preprocessing ran on the official schema
    assert doc["query"] == "Activity 1: A person picks up tool 100. Then they"
    assert doc["choices"][0] == "use tool 100. well." and doc["gold"] == 0
    assert len(wino.training_docs()) == 8 and len(wino.validation_docs()) == 1267
    assert set(wino.training_docs()[0]) == {"sentence", "option1", "option2", "answer"}

    model, tok = load_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))
    got = open_llm.evaluate(TransformersModel(model, tok, str(tiny_model_dir)), tmp_path / "ol",
                            limit=2, tasks=["hellaswag", "winogrande"], batch_size=4)
    m = got["metrics"]["tasks"]
    assert m["hellaswag"]["score"] is not None and m["hellaswag"]["n_shot"] == 10
    assert "fewshot_deviation" not in m["winogrande"]
    assert got["provenance"]["data"] == "local mirror, converted"
