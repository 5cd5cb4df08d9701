"""PairRM through llm-blender: fidelity to llm-blender under transformers 4, batching, symmetry,
order invariance, the official chat-templated source, and the ranker inside a run.

The fixture (tests/fixtures/pairrm_tiny, built by its make_fixture.py) is a randomly initialised
PairRM of the real architecture: a DeBERTa-v3 backbone with a sentencepiece tokenizer and
llm-blender's pair-ranker head. ``reference.json`` holds the scores and pairwise logits that
llm-blender 0.0.2 gave for it under transformers 4.44.2 at batch size 1 (the official SPPO call).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness.rank import get_ranker
from harness.rank.pairrm import PairRMRanker, chat_source, load_blender

FIXTURE = Path(__file__).parent / "fixtures" / "pairrm_tiny"
REF = json.loads((FIXTURE / "reference.json").read_text())
TOL = 1e-5  # float32 sums in other batch shapes; a wrong sequence is off by > 1e-2


@pytest.fixture(scope="module")
def blender():
    return load_blender(str(FIXTURE))


def test_reference_was_made_by_llm_blender_under_transformers_4() -> None:
    env = REF["environment"]
    assert env["llm_blender"] == "0.0.2" and env["transformers"].startswith("4.")
    assert len(REF["inputs"]) == 6 and all(len(c) == 4 for c in REF["candidates"])


def test_tokenizer_matches_transformers_4(blender) -> None:
    tok, prefix = blender.ranker_tokenizer, blender.ranker_collator.candidate_prefix
    for name, case in REF["tokenizer_cases"].items():
        assert tok.encode(prefix + case["text"]) == case["ids"], name


def test_llm_blender_itself_reproduces_the_reference(blender) -> None:
    scores = blender.rank(REF["inputs"], REF["candidates"], return_scores=True, batch_size=1,
                          disable_tqdm=True)
    assert np.abs(np.asarray(scores) - np.asarray(REF["scores"])).max() <= TOL


@pytest.mark.parametrize("batch_size", [1, 7, 128])
def test_batched_scores_equal_llm_blender_batch_1(blender, batch_size: int) -> None:
    ranker = PairRMRanker(blender, None, batch_size=batch_size, progress=False)
    logits = ranker.pair_logits(REF["inputs"], REF["candidates"])
    assert np.abs(np.stack(logits) - np.asarray(REF["logits"])).max() <= TOL
    scores = ranker.score_sources(REF["inputs"], REF["candidates"])
    assert np.abs(np.asarray(scores) - np.asarray(REF["scores"])).max() <= TOL


def test_score_matrix_is_antisymmetric_and_scores_follow_candidate_order(blender) -> None:
    ranker = PairRMRanker(blender, None, progress=False)
    logits = ranker.pair_logits(REF["inputs"], REF["candidates"])
    for c in logits:
        assert np.all(np.diag(c) == 0)
        m = c - c.T
        assert np.allclose(m, -m.T)
    scores = np.asarray(ranker.score_sources(REF["inputs"], REF["candidates"]))
    assert np.allclose(scores.sum(axis=1), 0, atol=1e-5)
    perm = [2, 0, 3, 1]
    shuffled = [[c[i] for i in perm] for c in REF["candidates"]]
    again = np.asarray(ranker.score_sources(REF["inputs"], shuffled))
    assert np.abs(again - scores[:, perm]).max() <= TOL
    # identical candidates score the same (input 2 has a duplicate)
    dup = REF["candidates"][2]
    i, j = [k for k, c in enumerate(dup) if dup.count(c) == 2]
    assert scores[2, i] == pytest.approx(scores[2, j], abs=TOL)


def test_source_is_the_official_chat_templated_prompt(chat_tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(chat_tokenizer_dir)
    prompt = "Give me three facts about owls."
    official = tok.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": "None"}],
        tokenize=False).split("None")[0]
    assert chat_source(tok, prompt) == official
    assert official.endswith("<|im_start|>assistant\n") and prompt in official
    # the official split truncates a prompt containing "None"; this does not
    tricky = "Is None a valid Python value?"
    assert tricky in chat_source(tok, tricky)


def test_ranker_by_name_templates_prompts(chat_tokenizer_dir: Path, blender) -> None:
    ranker = get_ranker(f"pairrm:{FIXTURE}", policy_tokenizer=str(chat_tokenizer_dir), progress=False)
    assert ranker.name == f"pairrm:{FIXTURE}" and ranker.details["candidate_maxlength"] == 24
    prompts = ["Name a colour.", "Describe the sea in one sentence."]
    cands = [["Blue.", "Red.", "I like turtles."], ["It is wide and blue.", "Salty.", "The sea."]]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(chat_tokenizer_dir)
    direct = PairRMRanker(blender, None, progress=False).score_sources(
        [chat_source(tok, p) for p in prompts], cands)
    assert np.abs(np.asarray(ranker.score(prompts, cands)) - np.asarray(direct)).max() <= TOL


def test_sharded_ranking_equals_in_process(chat_tokenizer_dir: Path, tmp_path: Path, blender) -> None:
    from harness import sharded

    prompts = [f"Question number {i}: what is {i} plus {i}?" for i in range(5)]
    cands = [[f"{2 * i}", f"It is {2 * i}.", "No idea."] for i in range(5)]
    kwargs = {"device": "cpu", "dtype": "float32", "progress": False,
              "policy_tokenizer": str(chat_tokenizer_dir)}
    got = sharded.score(f"pairrm:{FIXTURE}", prompts, cands, kwargs, work=tmp_path, processes=2)
    want = get_ranker(f"pairrm:{FIXTURE}", **kwargs).score(prompts, cands)
    assert np.abs(np.asarray(got) - np.asarray(want)).max() <= TOL


def test_sppo_iteration_ranks_with_pairrm(tiny_model_dir: Path, tmp_path: Path) -> None:
    from harness.artifacts import read_json, read_jsonl
    from harness.config import load_config
    from harness.pipeline import RunOptions, SPPORun

    path = _pairrm_config(tmp_path, tiny_model_dir)
    out = tmp_path / "run"
    SPPORun(load_config(str(path)), RunOptions(iters=1, out=out, progress=False)).run()
    stage = read_json(out / "run.json")["stages"]["iter-1/rank"]
    assert stage["ranker"] == f"pairrm:{FIXTURE}" and stage["ranker_details"]["dtype"] == "float32"
    rows = read_jsonl(out / "iter-1" / "scores.jsonl")
    assert len(rows) == 4 and all(len(r["scores"]) == 3 and abs(sum(r["scores"])) < 1e-4 for r in rows)


# --- the pairwise estimator (preferences.probabilities: pairwise) -------------------------------
def _sym(c: np.ndarray) -> np.ndarray:
    """P_ij = ½(σ(C_ij) + σ(−C_ji)), P_ii = ½, written out in numpy."""
    p = 0.5 * (1 / (1 + np.exp(-c)) + 1 / (1 + np.exp(c.T)))
    np.fill_diagonal(p, 0.5)
    return p


def test_pairwise_probabilities_are_llm_blenders_logits_symmetrised(blender) -> None:
    ranker = PairRMRanker(blender, None, batch_size=7, progress=False)
    scores, matrices = ranker.pairwise_sources(REF["inputs"], REF["candidates"])
    assert np.abs(np.asarray(scores) - np.asarray(REF["scores"])).max() <= TOL  # one pass, both
    for p, c in zip(matrices, REF["logits"], strict=True):
        p = np.asarray(p)
        assert np.all(np.diag(p) == 0.5) and np.allclose(p + p.T, 1.0, atol=1e-12)
        assert np.abs(p - _sym(np.asarray(c))).max() <= TOL


def _pairrm_config(tmp_path: Path, model: Path, **extra) -> Path:
    cfg = {"name": "tiny-pairrm", "model": {"source": str(model)},
           "sampling": {"k": 3, "seeds": [0, 1, 2], "max_new_tokens": 6, "batch_size": 4,
                        "dtype": "float32"},
           "training": {"learning_rate": 1e-3, "global_batch_size": 4, "per_device_batch_size": 2,
                        "max_length": 256, "max_prompt_length": 192, "dtype": "float32"},
           "prompts": {"iterations": ["embedded"], "per_iteration": 4, "heldout_size": 2},
           "ranker": f"pairrm:{FIXTURE}", **extra}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_run_with_pairwise_probabilities(tiny_model_dir: Path, tmp_path: Path) -> None:
    from harness.artifacts import read_json, read_jsonl
    from harness.cli import main

    out = tmp_path / "run"
    assert main(["run", "--base", str(_pairrm_config(tmp_path, tiny_model_dir)), "--iters", "1",
                 "--out", str(out), "--device", "cpu", "--no-progress",
                 "--probabilities", "pairwise", "--ties", "first"]) == 0
    meta = read_json(out / "run.json")
    assert meta["config"]["preferences"] == {"probabilities": "pairwise", "ties": "first"}
    assert meta["stages"]["iter-1/rank"]["probabilities"] == "pairwise"
    assert {k: meta["stages"]["iter-1/probabilities"][k] for k in ("probabilities", "ties")} == {
        "probabilities": "pairwise", "ties": "first"}
    gens = read_jsonl(out / "iter-1" / "generations.jsonl")
    ranked = read_jsonl(out / "iter-1" / "scores.jsonl")
    prefs = read_jsonl(out / "iter-1" / "preferences.jsonl")
    # the stored matrices are PairRM's logits on the templated prompts, symmetrised
    ranker = PairRMRanker(load_blender(str(FIXTURE)), None, progress=False)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    logits = ranker.pair_logits([chat_source(tok, g["prompt"]) for g in gens],
                                [g["responses"] for g in gens])
    for g, r, pref, c in zip(gens, ranked, prefs, logits, strict=True):
        p = np.asarray(r["pairwise"])
        assert r["prompt_id"] == pref["prompt_id"] == g["prompt_id"] and p.shape == (3, 3)
        assert np.abs(p - _sym(c)).max() <= TOL
        means = p.mean(axis=1)  # chosen/rejected by the row means, numpy's first on ties
        w, lo = int(np.argmax(means)), int(np.argmin(means))
        assert (pref["chosen_index"], pref["rejected_index"]) == (w, lo)
        assert pref["chosen_probs"] == p[w, lo] and pref["probability"] == r["pairwise"]
        assert pref["chosen_probs_win"] == pytest.approx(means[w], abs=1e-12)
    assert main(["card", str(out), "--iter", "1"]) == 0
    card = (out / "iter-1" / "checkpoint" / "README.md").read_text()
    assert "its pairwise comparisons, both orders, symmetrised (the paper's estimator); ties `first`" \
        in " ".join(card.split())


def test_pairwise_rank_resumes_from_its_committed_chunks(tiny_model_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.commits as commits
    import harness.pipeline as pipeline
    import harness.stages.rank as rank_stage
    from harness.artifacts import read_json, read_jsonl
    from harness.config import load_config

    class Crash(Exception):
        pass

    def crash(name: str) -> None:
        if name == "rank/chunk":
            raise Crash(name)

    cfg = load_config(str(_pairrm_config(tmp_path, tiny_model_dir,
                                         preferences={"probabilities": "pairwise"},
                                         evaluation={"benchmarks": []})))
    out = tmp_path / "run"
    monkeypatch.setattr(rank_stage, "RANK_CHUNK", 2)  # 4 prompts: 2 chunks
    monkeypatch.setattr(commits, "crash_point", crash)
    with pytest.raises(Crash):
        pipeline.SPPORun(cfg, pipeline.RunOptions(iters=1, out=out, progress=False)).run()
    partial = read_jsonl(out / "iter-1" / "scores.jsonl.partial")
    assert len(partial) == 2 and all(len(r["pairwise"]) == 3 for r in partial)
    monkeypatch.setattr(commits, "crash_point", lambda name: None)
    pipeline.SPPORun(cfg, pipeline.RunOptions(iters=1, out=out, resume=True, progress=False)).run()
    stage = read_json(out / "run.json")["stages"]["iter-1/rank"]
    assert stage["resumed_prompts"] == 2 and stage["state"] == "done"
    ranked = read_jsonl(out / "iter-1" / "scores.jsonl")
    assert ranked[:2] == [{**r, "ranker": f"pairrm:{FIXTURE}"} for r in partial]
    assert not (out / "iter-1" / "scores.jsonl.partial").exists()
    gens = read_jsonl(out / "iter-1" / "generations.jsonl")
    scores, matrices = get_ranker(f"pairrm:{FIXTURE}", policy_tokenizer=str(tiny_model_dir),
                                  progress=False).score_pairwise(
        [g["prompt"] for g in gens], [g["responses"] for g in gens])
    assert np.abs(np.asarray([r["pairwise"] for r in ranked]) - np.asarray(matrices)).max() <= TOL
    assert np.abs(np.asarray([r["scores"] for r in ranked]) - np.asarray(scores)).max() <= TOL


def test_sharded_pairwise_ranking_equals_in_process(chat_tokenizer_dir: Path, tmp_path: Path) -> None:
    from harness import sharded

    prompts = [f"What is {i} times three?" for i in range(3)]
    cands = [[f"{3 * i}", f"It is {3 * i}.", "Seven."] for i in range(3)]
    kwargs = {"device": "cpu", "dtype": "float32", "progress": False,
              "policy_tokenizer": str(chat_tokenizer_dir)}
    scores, matrices = sharded.score_pairwise(f"pairrm:{FIXTURE}", prompts, cands, kwargs,
                                              work=tmp_path, processes=2)
    want_scores, want_matrices = get_ranker(f"pairrm:{FIXTURE}", **kwargs).score_pairwise(prompts, cands)
    assert np.abs(np.asarray(scores) - np.asarray(want_scores)).max() <= TOL
    assert np.abs(np.asarray(matrices) - np.asarray(want_matrices)).max() <= TOL
