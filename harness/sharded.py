"""Generation and ranking in N processes (``--launcher accelerate --num-processes N``).

Each process loads the model (or ranker) on its own device, takes its :func:`~harness.distributed.shard`
of the prompts, and the results are gathered back into prompt order; the main process writes
them. Generation stays seeded: every sample is seeded by its prompt and seed_k, so the process
count changes only how prompts are batched (and so the last bits of the arithmetic).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness import distributed, rank
from harness.artifacts import write_json
from harness.generate import Generation, Sampling
from harness.plugins import load_plugins
from harness.prompts import Prompt
from harness.rank import Matrix, get_ranker


def _run(kind: str, spec: dict[str, Any], work: Path, processes: int,
         config: str | None) -> Any:
    return distributed.run_module("harness.sharded", {"kind": kind, **spec},
                                  work / f"{kind}_request.json", work / f"{kind}_result.json",
                                  processes, config, what=kind)


def generate(model: str, prompts: list[Prompt], sampling: Sampling, *, dtype: str,
             batch_size: int, trust_remote_code: bool, device: str, work: Path,
             processes: int, config: str | None = None) -> list[Generation]:
    spec = {"model": model, "prompts": [asdict(p) for p in prompts],
            "sampling": asdict(sampling), "dtype": dtype,
            "batch_size": batch_size, "trust_remote_code": trust_remote_code, "device": device}
    return [Generation(**g) for g in _run("generate", spec, work, processes, config)]


def score(ranker: str, prompts: list[str], candidates: list[list[str]], ranker_kwargs: dict[str, Any],
          *, work: Path, processes: int, config: str | None = None) -> list[list[float]]:
    """``ranker_kwargs`` as :func:`harness.rank.get_ranker` takes them (``device`` included)."""
    spec = {"ranker": ranker, "prompts": prompts, "candidates": candidates,
            "ranker_kwargs": ranker_kwargs, "device": ranker_kwargs["device"], "pairwise": False}
    return _run("rank", spec, work, processes, config)


def score_pairwise(ranker: str, prompts: list[str], candidates: list[list[str]],
                   ranker_kwargs: dict[str, Any], *, work: Path, processes: int,
                   config: str | None = None) -> tuple[list[list[float]], list[Matrix]]:
    """Scores and pairwise probability matrices (:func:`harness.rank.score_pairwise`)."""
    spec = {"ranker": ranker, "prompts": prompts, "candidates": candidates,
            "ranker_kwargs": ranker_kwargs, "device": ranker_kwargs["device"], "pairwise": True}
    rows = _run("rank", spec, work, processes, config)
    return [r["scores"] for r in rows], [r["pairwise"] for r in rows]


def main(argv: list[str] | None = None) -> None:
    from accelerate import PartialState

    req_path, out_path = (argv if argv is not None else sys.argv[1:])
    load_plugins()
    spec = json.loads(Path(req_path).read_text())
    state = PartialState(cpu=spec["device"] == "cpu")
    device = str(state.device)
    if spec["kind"] == "generate":
        from harness.under_test.hf import TransformersModel

        model = TransformersModel.load(spec["model"], dtype=spec["dtype"], device=device,
                                       batch_size=spec["batch_size"],
                                       trust_remote_code=spec["trust_remote_code"], progress=False)
        s = spec["sampling"]
        sampling = Sampling(**{**s, "seeds": tuple(s["seeds"])})
        mine = distributed.shard([Prompt(**p) for p in spec["prompts"]])
        result: list[Any] = [asdict(g) for g in model.sample(mine, sampling)]
    else:
        ranker = get_ranker(spec["ranker"], **{**spec["ranker_kwargs"], "device": device,
                                               "progress": False})
        prompts, candidates = distributed.shard(spec["prompts"]), distributed.shard(spec["candidates"])
        if spec.get("pairwise"):
            scores, matrices = rank.score_pairwise(ranker, prompts, candidates)
            result = [{"scores": s, "pairwise": m} for s, m in zip(scores, matrices, strict=True)]
        else:
            result = ranker.score(prompts, candidates)
    result = distributed.gather(result)
    if state.is_main_process:
        write_json(Path(out_path), result)
    distributed.close()


if __name__ == "__main__":
    main()
    distributed.exit_launched()
