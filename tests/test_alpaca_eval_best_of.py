"""AlpacaEval best-of-n (the SPPO paper's "best-of-16" rows): the ranker's pick of n samples, kept
and resumable, filed under its own version, in the column of the published best-of-16 rows and
never in the single-answer one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness import leaderboard
from harness.artifacts import partial_path, read_jsonl
from harness.benchmarks import alpaca_eval
from harness.results import protocol_key

N = 4
INSTRUCTIONS = [f"instruction {i}" for i in range(70)]  # two chunks of answer_in_chunks


def _sample(calls: list[str]):
    def sample(xs: list[str]) -> list[list[str]]:
        calls.append(f"sample {len(xs)}")
        return [[f"{x}: answer {k}" for k in range(N)] for x in xs]
    return sample


def _score(x: str, k: int) -> float:
    i = int(x.split()[-1])
    return float((i * 7 + k * 3) % 5) if i % 3 else 1.0  # every third instruction: all tied


def _rank(calls: list[str]):
    def rank(xs: list[str], candidates: list[list[str]]) -> list[list[float]]:
        calls.append(f"rank {len(xs)}")
        assert all(len(c) == N for c in candidates)
        return [[_score(x, k) for k in range(N)] for x in xs]
    return rank


def test_the_rankers_highest_scored_sample_is_submitted(tmp_path: Path) -> None:
    calls: list[str] = []
    picked = alpaca_eval.best_of_n(INSTRUCTIONS, _sample(calls), _rank(calls), N, tmp_path,
                                   release=lambda: calls.append("release"))
    # np.argmax: the highest score, the first of ties
    want = [f"{x}: answer {int(np.argmax([_score(x, k) for k in range(N)]))}" for x in INSTRUCTIONS]
    assert picked == want
    assert any(p.endswith("answer 0") for p in picked) and any(not p.endswith("answer 0") for p in picked)
    assert calls == ["sample 64", "sample 6", "release", "rank 64", "rank 6"]  # sampler freed first
    rows = read_jsonl(tmp_path / "best_of_n.jsonl")
    assert [r["instruction"] for r in rows] == INSTRUCTIONS
    assert rows[5]["candidates"] == [f"instruction 5: answer {k}" for k in range(N)]
    assert rows[5]["scores"] == [_score("instruction 5", k) for k in range(N)]
    assert not list(tmp_path.glob("*.partial*"))
    calls.clear()  # done: read back, nothing sampled or ranked again
    assert alpaca_eval.best_of_n(INSTRUCTIONS, _sample(calls), _rank(calls), N, tmp_path) == want
    assert calls == []


def test_an_interrupted_selection_resumes_where_it_stopped(tmp_path: Path) -> None:
    whole = alpaca_eval.best_of_n(INSTRUCTIONS, _sample([]), _rank([]), N, tmp_path / "whole")
    calls: list[str] = []

    def failing_rank(xs: list[str], candidates: list[list[str]]) -> list[list[float]]:
        if calls.count("rank") == 1:
            raise RuntimeError("killed")
        calls.append("rank")
        return _rank([])(xs, candidates)

    with pytest.raises(RuntimeError, match="killed"):
        alpaca_eval.best_of_n(INSTRUCTIONS, _sample(calls), failing_rank, N, tmp_path / "cut")
    assert partial_path(tmp_path / "cut" / "best_of_n.scores.jsonl").is_file()
    calls.clear()
    again = alpaca_eval.best_of_n(INSTRUCTIONS, _sample(calls), _rank(calls), N, tmp_path / "cut")
    assert again == whole
    assert calls == ["rank 6"]  # every sample and the first chunk of scores reused


def test_best_of_n_is_its_own_column_beside_the_published_best_of_16() -> None:
    assert alpaca_eval.result_version() == "2.0"
    assert alpaca_eval.result_version(16, "pairrm") == "2.0 best-of-16 (pairrm)"
    cells, _ = leaderboard.published_cells()
    lc = [c for c in cells if c.benchmark == "alpaca_eval" and c.metric == "length_controlled_winrate"]
    best = {c.model: c for c in lc if "best-of-16" in c.model}
    single = {c.model: c for c in lc if "best-of" not in c.model}
    assert best["Mistral-7B-SPPO Iter3 (best-of-16)"].value == 32.13  # the paper's Table 1
    assert len({c.key for c in best.values()}) == 1 and len({c.key for c in single.values()}) == 1
    assert next(iter(best.values())).key != next(iter(single.values())).key
    # a run's best-of-16 with PairRM and the official annotator on all 805: the published column
    official = alpaca_eval.OFFICIAL_PROTOCOL
    ours = protocol_key("alpaca_eval", alpaca_eval.result_version(16, "pairrm"), dict(official))
    assert ours == next(iter(best.values())).key
    assert json.loads(ours)["version"] == "2.0 best-of-16 (pairrm)"
