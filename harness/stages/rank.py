"""Rank stage: the run's ranker scores each prompt's K responses (and, for the pairwise
estimator, gives their comparison matrix), in fixed chunks committed as they finish."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness import sharded
from harness.artifacts import partial_path, read_jsonl, write_jsonl
from harness.commits import Commits, in_chunks
from harness.errors import DataError
from harness.rank import Ranker, score_pairwise

if TYPE_CHECKING:
    from harness.pipeline import SPPORun


RANK_CHUNK = 64  # prompts ranked and committed together (a crash loses one chunk at most)


def run_stage(run: SPPORun, t: int) -> dict[str, Any]:
    rows = read_jsonl(run.dir.generations(t))
    k = run.config.sampling.k
    for n, r in enumerate(rows, 1):
        got = r.get("responses")
        if not isinstance(got, list) or len(got) != k or not all(isinstance(x, str) for x in got):
            raise DataError(f"{run.dir.generations(t)}:{n}: prompt {r.get('prompt_id')}: expected "
                            f"k = {k} responses (strings), found {got!r:.80}")
    n = run.processes()
    resumed = 0
    if n > 1:
        name = run.config.ranker
        ranked = rank_sharded(run, rows, t, n)
        details: dict[str, Any] = {}
    else:  # fixed chunks of prompts into a partial file: a crash loses one chunk at most
        ranker = run.ranker()
        name = ranker.name
        # (a row without the matrix this estimator needs is ranked again)
        commits = Commits(run.dir.scores(t), "prompt_id", "rank/chunk", what="ranked prompt",
                          keep=lambda r: not run.pairwise() or "pairwise" in r)
        resumed = commits.resumed
        in_chunks(commits, rows, RANK_CHUNK, lambda r: r["prompt_id"],
                  lambda chunk: rank_chunk(run, ranker, list(chunk)))
        ranked = [commits.rows[r["prompt_id"]] for r in rows]
        details = dict(getattr(ranker, "details", {}))
    write_jsonl(run.dir.scores(t), ({**r, "ranker": name} for r in ranked))
    partial_path(run.dir.scores(t)).unlink(missing_ok=True)
    return {"ranker": name, "ranker_dtype": run.config.sampling.dtype, "processes": n,
            "probabilities": run.config.preferences.probabilities, "resumed_prompts": resumed,
            **({"ranker_details": details} if details else {})}


def score_rows(rows: list[dict[str, Any]], scores: list[list[float]],
                matrices: list[list[list[float]]] | None = None) -> list[dict[str, Any]]:
    """``scores.jsonl`` rows (less the ranker's name): scores, and the pairwise matrix if any."""
    if matrices is None:
        return [{"prompt_id": r["prompt_id"], "scores": s} for r, s in zip(rows, scores, strict=True)]
    return [{"prompt_id": r["prompt_id"], "scores": s, "pairwise": m}
            for r, s, m in zip(rows, scores, matrices, strict=True)]


def rank_chunk(run: SPPORun, ranker: Ranker, chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
    prompts, cands = [r["prompt"] for r in chunk], [r["responses"] for r in chunk]
    if run.pairwise():
        return score_rows(chunk, *score_pairwise(ranker, prompts, cands))
    return score_rows(chunk, ranker.score(prompts, cands))


def rank_sharded(run: SPPORun, rows: list[dict[str, Any]], t: int, n: int) -> list[dict[str, Any]]:
    args = (run.config.ranker, [r["prompt"] for r in rows], [r["responses"] for r in rows],
            run.ranker_kwargs())
    kw = {"work": run.dir.iter_dir(t), "processes": n, "config": run.opts.accelerate_config}
    if run.pairwise():
        return score_rows(rows, *sharded.score_pairwise(*args, **kw))
    return score_rows(rows, sharded.score(*args, **kw))
