"""The SPPO loop: generate → rank → probabilities → train → evaluate → report, per iteration.

Iteration t samples from π_{t-1}, trains π_t against the reference π_{t-1}, then evaluates π_t.
Every stage writes its artifact atomically and is recorded in ``run.json``; ``--resume`` skips
what finished, and an interrupted stage continues from what it committed (generation batches,
ranking and answer chunks, training state with ``training.save_steps``) or else starts again.
The stages are :mod:`harness.stages` and the registered benchmarks'; this module drives them and
is the context they run in.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from harness import benchmarks, evaluate, report
from harness.allocator import release_free_memory
from harness.config import RunConfig, deep_merge
from harness.errors import RunStateError
from harness.generate import Sampling
from harness.models import resolve_source
from harness.plan import describe
from harness.prompts import heldout_prompts, iteration_prompts
from harness.rank import Ranker, get_ranker
from harness.run_dir import RunDir
from harness.stages import generate, preflight, probabilities, rank, train
from harness.stages import heldout as heldout_stage
from harness.under_test import ModelUnderTest, open_model

log = logging.getLogger("harness")


@dataclass
class RunOptions:
    iters: int
    out: Path
    resume: bool = False
    seed: int = 0
    generator: str = "auto"  # auto | transformers | vllm
    progress: bool = True
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    launcher: str = "none"  # none | accelerate (training in num_processes processes)
    num_processes: int = 1
    accelerate_config: str | None = None  # shipped name (zero3, fsdp) or a file
    yes: bool = False  # accept the cost of a paid judge without asking
    break_lock: bool = False  # take over a lock left on another host (the user vouches it is dead)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _config_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


# Settings added after runs were made, at the values such runs used (what they did before).
_ADDED_SETTINGS = {"preferences": {"probabilities": "scores", "ties": "distinct"},
                   "training": {"layout": "clean", "last_batch": "wrap", "weight_rounding": "single"}}


def _stored_config(config: dict[str, Any]) -> dict[str, Any]:
    """A run's stored configuration, with the settings it predates at what it did."""
    return deep_merge(_ADDED_SETTINGS, config)


class SPPORun:
    def __init__(self, config: RunConfig, options: RunOptions) -> None:
        self.config = config
        self.opts = options
        self.dir = RunDir(options.out)
        self._model: ModelUnderTest | None = None  # the checkpoint under test, one at a time
        self._ranker: Ranker | None = None
        self.base_path = ""

    # setup ------------------------------------------------------------------------------
    def _check_out(self) -> None:
        """Refuse what opening the run directory would refuse; load a run that may be resumed
        (reads only)."""
        if not self.dir.meta_path.exists():
            return
        if not self.opts.resume:
            raise RunStateError(
                f"{self.dir.root} already holds a run; pass --resume to continue it or "
                "--out to start a new one"
            )
        self.dir.load()
        diff = _config_diff(_stored_config(self.dir.meta["config"]),
                            benchmarks.config_snapshot(self.config))
        if diff:
            raise RunStateError(
                f"{self.dir.meta_path}: the run was started with another configuration; "
                "resume with the same flags. Differences: " + "; ".join(diff)
            )
        if self.dir.meta["args"].get("seed") != self.opts.seed:
            raise RunStateError(
                f"{self.dir.meta_path}: started with --seed "
                f"{self.dir.meta['args'].get('seed')}, resumed with --seed {self.opts.seed}"
            )

    def _open(self) -> None:
        self._check_out()
        if self.dir.meta:
            self.dir.meta["args"]["iters"] = max(self.dir.meta["args"]["iters"], self.opts.iters)
            self.dir.save()
        else:
            self.dir.create(benchmarks.config_snapshot(self.config),
                            {"iters": self.opts.iters, "seed": self.opts.seed,
                             "generator": self.opts.generator})

    def policy_sampling(self) -> Sampling:
        """K samples per prompt: the config's decoding, its seeds offset by ``--seed``."""
        s = Sampling.from_config(self.config.sampling)
        return replace(s, seeds=tuple(x + self.opts.seed for x in s.seeds))

    def _eval_sampling(self) -> Sampling:
        s = self.policy_sampling()
        return replace(s, seeds=s.seeds[:1])

    def policy_path(self, t: int) -> str:
        return self.base_path if t == 0 else str(self.dir.checkpoint(t))

    # the model under test ---------------------------------------------------------------
    def _under_test(self, path: str) -> ModelUnderTest:
        """The checkpoint at ``path``, loaded once: it serves every generation until another
        checkpoint is needed or training starts."""
        if self._model is None or self._model.path != path:
            self._release()
            self._model = open_model(
                path, self.opts.generator, dtype=self.config.sampling.dtype, device=self.opts.device,
                batch_size=self.config.sampling.batch_size,
                rows_per_pass=self.config.sampling.batch_size * self.config.sampling.k,
                trust_remote_code=self.config.model.trust_remote_code, vllm=self.config.vllm,
                seed=self.opts.seed, progress=self.opts.progress)
        return self._model

    def _release(self) -> None:
        if self._model is not None:
            self._model.close()
            self._model = None

    def ranker_kwargs(self) -> dict[str, Any]:
        return {"device": self.opts.device, "dtype": self.config.sampling.dtype,
                "progress": self.opts.progress, "policy_tokenizer": self.config.model.source,
                "yes": self.opts.yes}

    def _get_ranker(self) -> Ranker:
        if self._ranker is None:
            self._ranker = get_ranker(self.config.ranker, **self.ranker_kwargs())
        return self._ranker

    def processes(self) -> int:
        """Processes for generation, ranking and training (1 without ``--launcher accelerate``)."""
        return self.opts.num_processes if self.opts.launcher == "accelerate" else 1

    def pairwise(self) -> bool:
        return self.config.preferences.probabilities == "pairwise"

    # what a benchmark's stage gets (harness.benchmarks.StageContext) ----------------------
    @property
    def yes(self) -> bool:
        return self.opts.yes

    @property
    def device(self) -> str:
        return self.opts.device

    def model_name(self, t: int) -> str:
        return f"{self.config.name}-sppo-iter{t}" if t else self.config.name

    def model(self, t: int) -> ModelUnderTest:
        return self._under_test(self.policy_path(t))

    def release(self) -> None:
        """Free the model under test, the ranker and any local judge (before training: each is
        loaded again when next needed) and the memory they held."""
        from harness.judges.local import release_local_judges

        self._release()
        self._ranker = None
        release_local_judges()
        release_free_memory()

    def ranker(self) -> Ranker:
        return self._get_ranker()

    def eval_dir(self, t: int, benchmark: str) -> Path:
        return self.dir.eval_dir(t, benchmark)

    def sampling(self, override: Any = None) -> Sampling:
        """One sample per prompt: the run's decoding, with a benchmark's overrides."""
        s = self._eval_sampling()
        changes = {k: v for k, v in override.model_dump().items() if v is not None} if override else {}
        return replace(s, **changes)

    def chat(self, t: int) -> Any:
        """Iteration ``t``'s checkpoint answering a benchmark's chat requests."""
        def chat(requests: list[Any]) -> dict[str, str]:
            return {rid: j.text for rid, j in self.model(t).chat(requests).judgments.items()}
        return chat

    def provenance(self, t: int) -> dict[str, Any]:
        """What every benchmark result records of the model it measured."""
        return {"model": self.policy_path(t), "iteration": t, "profile": self.config.profile,
                "dtype": self.config.sampling.dtype, "base_config": self.config.name,
                "git_sha": self.dir.meta.get("git_sha"), "packages": self.dir.meta.get("packages"),
                "generator": self.model(t).provenance()}

    # driver -----------------------------------------------------------------------------
    def plan(self) -> str:
        """What :meth:`run` would do (``--dry-run``): the pre-flight checks, then every stage with
        its settings; nothing is loaded or written."""
        preflight.check(self)
        self._check_out()
        return describe(self)

    def run(self) -> Path:
        preflight.check(self)
        self._open()
        with self.dir.lock(self.opts.break_lock, _say):
            try:
                table = self._iterations()
            finally:
                self._release()  # an engine left running would hold its memory and processes
        print(table)
        return self.dir.root

    def stages(self) -> list[tuple[int, str]]:
        """Every stage of the run, in run order, as (iteration, name); iteration 0 is the base,
        which is only evaluated."""
        evals = [f"eval/{b.name}" for b in benchmarks.runnable(self.config.evaluation.benchmarks)]
        if evaluate.BENCHMARK in self.config.evaluation.benchmarks:  # the in-loop win rate first
            evals.insert(0, f"eval/{evaluate.BENCHMARK}")
        order = [(0, name) for name in evals]
        for t in range(1, self.opts.iters + 1):
            order += [(t, name) for name in ("generate", "rank", "probabilities", "train", *evals)]
        return order

    def _iterations(self) -> str:
        """Every stage of the base and of each iteration, then the run's leaderboard."""
        for p in self.dir.remove_stale_tmp():
            _say(f"removed {p.relative_to(self.dir.root)}, left by an interrupted process")
        self.base_path = resolve_source(self.config.model.source)
        self.dir.meta["base_model_path"] = self.base_path
        self.dir.save()
        heldout = heldout_prompts(self.config)
        # every iteration's prompts read now: a bad source fails before any model is loaded
        prompts_of = {t: iteration_prompts(self.config, t) for t in range(1, self.opts.iters + 1)}
        preflight.check_prompt_lengths(self, prompts_of)

        def step(t: int, name: str) -> Any:
            if name == "generate":
                return generate.run_stage(self, t, prompts_of[t])
            if name == "rank":
                return rank.run_stage(self, t)
            if name == "probabilities":
                return probabilities.run_stage(self, t)
            if name == "train":
                return train.run_stage(self, t)
            if name == f"eval/{evaluate.BENCHMARK}":
                if t == 0:  # the base's held-out answers, the reference of every later win rate
                    return {"heldout": len(heldout_stage.heldout_generations(self, 0, heldout))}
                return heldout_stage.run_stage(self, t, heldout)
            return benchmarks.get(name.removeprefix("eval/")).stage(self, t)

        for t, name in self.stages():
            self._stage(f"iter-{t}", name, lambda t=t, name=name: step(t, name))
        self._release()
        return report.write_leaderboard(self.dir)

    def _stage(self, tag: str, name: str, fn: Any) -> None:
        stage = f"{tag}/{name}"
        if self.dir.done(stage):
            _say(f"[{tag}] {name}: done before, skipped")
            return
        _say(f"[{tag}] {name} ...")
        self.dir.run_stage(stage, fn)
        release_free_memory()  # what the stage freed, not kept for the next one
        _say(f"[{tag}] {name}: {self.dir.meta['stages'][stage]['seconds']} s")

