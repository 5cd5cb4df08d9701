"""The SPPO loop: generate → rank → probabilities → train → evaluate → report, per iteration.

Iteration t samples from π_{t-1}, trains π_t against the reference π_{t-1}, then evaluates π_t.
Every stage writes its artifact atomically and is recorded in ``run.json``; ``--resume`` skips
what finished and redoes an interrupted stage from its start.
"""

from __future__ import annotations

import logging
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from harness import benchmarks, distributed, evaluate, report, sharded
from harness.artifacts import (
    append_jsonl,
    atomic_dir,
    partial_path,
    read_jsonl,
    read_partial_jsonl,
    write_json,
    write_jsonl,
)
from harness.config import RunConfig, deep_merge
from harness.errors import ConfigError, DataError, RunStateError
from harness.faults import crash_point
from harness.generate import Generation, Sampling
from harness.models import load_tokenizer, resolve_source
from harness.probabilities import check_preferences, row_from_scores
from harness.prompts import Prompt, heldout_prompts, iteration_prompts
from harness.rank import Ranker, check_ranker, get_ranker, score_pairwise
from harness.run_dir import RunDir
from harness.under_test import ModelUnderTest, choose_backend, open_model
from trainers import TrainRequest, get_trainer, launch

log = logging.getLogger("harness")
RANK_CHUNK = 64  # prompts ranked and committed together (a crash loses one chunk at most)


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
                   "training": {"layout": "clean", "last_batch": "wrap"}}


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
    def _open(self) -> None:
        snapshot = self.config.model_dump(mode="json")
        if self.dir.meta_path.exists():
            if not self.opts.resume:
                raise RunStateError(
                    f"{self.dir.root} already holds a run; pass --resume to continue it or "
                    "--out to start a new one"
                )
            self.dir.load()
            diff = _config_diff(_stored_config(self.dir.meta["config"]), snapshot)
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
            self.dir.meta["args"]["iters"] = max(self.dir.meta["args"]["iters"], self.opts.iters)
            self.dir.save()
        else:
            self.dir.create(snapshot, {"iters": self.opts.iters, "seed": self.opts.seed,
                                       "generator": self.opts.generator})

    def _sampling(self) -> Sampling:
        s = Sampling.from_config(self.config.sampling)
        return replace(s, seeds=tuple(x + self.opts.seed for x in s.seeds))

    def _eval_sampling(self) -> Sampling:
        s = self._sampling()
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
                trust_remote_code=self.config.model.trust_remote_code, vllm=self.config.vllm,
                seed=self.opts.seed, progress=self.opts.progress)
        return self._model

    def _release(self) -> None:
        if self._model is not None:
            self._model.close()
            self._model = None

    def _ranker_kwargs(self) -> dict[str, Any]:
        return {"device": self.opts.device, "dtype": self.config.sampling.dtype,
                "progress": self.opts.progress, "policy_tokenizer": self.config.model.source,
                "yes": self.opts.yes}

    def _get_ranker(self) -> Ranker:
        if self._ranker is None:
            self._ranker = get_ranker(self.config.ranker, **self._ranker_kwargs())
        return self._ranker

    def _check_prompt_lengths(self, prompts: list[Prompt], path: str) -> None:
        from harness.generate import chat_prompt

        tok = load_tokenizer(path, self.config.model.trust_remote_code)
        limit = self.config.training.max_prompt_length
        for p in prompts:
            n = len(tok(chat_prompt(tok, p.prompt), add_special_tokens=False)["input_ids"])
            if n > limit:
                raise DataError(
                    f"prompt {p.prompt_id} is {n} tokens with its chat template, more than "
                    f"training.max_prompt_length={limit}; drop it from the prompt source or "
                    "raise the limit"
                )

    # stages -----------------------------------------------------------------------------
    def _processes(self) -> int:
        """Processes for generation, ranking and training (1 without ``--launcher accelerate``)."""
        return self.opts.num_processes if self.opts.launcher == "accelerate" else 1

    def _generate(self, t: int, prompts: list[Prompt]) -> dict[str, Any]:
        path = self.policy_path(t - 1)
        sampling = self._sampling()
        n = self._processes()
        resumed = 0
        if n > 1 and choose_backend(self.opts.generator) == "transformers":
            self._release()
            outs = sharded.generate(
                path, prompts, sampling, dtype=self.config.sampling.dtype,
                batch_size=self.config.sampling.batch_size,
                trust_remote_code=self.config.model.trust_remote_code, device=self.opts.device,
                work=self.dir.iter_dir(t), processes=n, config=self.opts.accelerate_config)
            generator = {"backend": "transformers", "model": path, "processes": n}
            seed_rule = sampling.as_dict()["seed_rule"]
        else:  # one model under test (vLLM spreads over its GPUs itself)
            model = self._under_test(path)
            generator, seed_rule = model.provenance(), model.seed_rule
            # batch by batch into a partial file: a crash loses one batch at most
            partial = partial_path(self.dir.generations(t))
            done = {r["prompt_id"]: Generation(r["responses"], r["num_tokens"], r["finished"])
                    for r in read_partial_jsonl(partial)}
            resumed = len(done)

            def commit(batch: list[tuple[Prompt, Generation]]) -> None:
                append_jsonl(partial, (self._generation_row(p, g, generator, sampling, seed_rule)
                                       for p, g in batch))
                crash_point("generate/chunk")

            outs = model.sample(prompts, sampling, done=done, on_batch=commit)
        write_jsonl(self.dir.generations(t), (self._generation_row(p, g, generator, sampling, seed_rule)
                                              for p, g in zip(prompts, outs, strict=True)))
        partial_path(self.dir.generations(t)).unlink(missing_ok=True)
        n_tok = sum(sum(g.num_tokens) for g in outs)
        cut = sum(not f for g in outs for f in g.finished)
        return {"prompts": len(prompts), "responses": len(prompts) * len(sampling.seeds),
                "new_tokens": n_tok, "cut_at_max_new_tokens": cut, "processes": generator.get(
                    "processes", 1), "resumed_prompts": resumed}

    @staticmethod
    def _generation_row(p: Prompt, g: Generation, generator: dict[str, Any],
                        sampling: Sampling, seed_rule: str) -> dict[str, Any]:
        return {"prompt_id": p.prompt_id, "prompt": p.prompt, "responses": g.responses,
                "num_tokens": g.num_tokens, "finished": g.finished, "generator": generator,
                "sampling": sampling.as_dict(seed_rule)}

    def _pairwise(self) -> bool:
        return self.config.preferences.probabilities == "pairwise"

    def _rank(self, t: int) -> dict[str, Any]:
        rows = read_jsonl(self.dir.generations(t))
        k = self.config.sampling.k
        for n, r in enumerate(rows, 1):
            got = r.get("responses")
            if not isinstance(got, list) or len(got) != k or not all(isinstance(x, str) for x in got):
                raise DataError(f"{self.dir.generations(t)}:{n}: prompt {r.get('prompt_id')}: expected "
                                f"k = {k} responses (strings), found {got!r:.80}")
        n = self._processes()
        resumed = 0
        if n > 1:
            name = self.config.ranker
            ranked = self._rank_sharded(rows, t, n)
            details: dict[str, Any] = {}
        else:  # fixed chunks of prompts into a partial file: a crash loses one chunk at most
            ranker = self._get_ranker()
            name = ranker.name
            partial = partial_path(self.dir.scores(t))
            # (a row without the matrix this estimator needs is ranked again)
            done = {r["prompt_id"]: r for r in read_partial_jsonl(partial)
                    if not self._pairwise() or "pairwise" in r}
            resumed = len(done)
            for start in range(0, len(rows), RANK_CHUNK):
                chunk = rows[start:start + RANK_CHUNK]
                if all(r["prompt_id"] in done for r in chunk):
                    continue
                got = self._rank_chunk(ranker, chunk)
                append_jsonl(partial, got)
                done.update({r["prompt_id"]: r for r in got})
                crash_point("rank/chunk")
            ranked = [done[r["prompt_id"]] for r in rows]
            details = dict(getattr(ranker, "details", {}))
        write_jsonl(self.dir.scores(t), ({**r, "ranker": name} for r in ranked))
        partial_path(self.dir.scores(t)).unlink(missing_ok=True)
        return {"ranker": name, "ranker_dtype": self.config.sampling.dtype, "processes": n,
                "probabilities": self.config.preferences.probabilities, "resumed_prompts": resumed,
                **({"ranker_details": details} if details else {})}

    @staticmethod
    def _score_rows(rows: list[dict[str, Any]], scores: list[list[float]],
                    matrices: list[list[list[float]]] | None = None) -> list[dict[str, Any]]:
        """``scores.jsonl`` rows (less the ranker's name): scores, and the pairwise matrix if any."""
        if matrices is None:
            return [{"prompt_id": r["prompt_id"], "scores": s} for r, s in zip(rows, scores, strict=True)]
        return [{"prompt_id": r["prompt_id"], "scores": s, "pairwise": m}
                for r, s, m in zip(rows, scores, matrices, strict=True)]

    def _rank_chunk(self, ranker: Ranker, chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
        prompts, cands = [r["prompt"] for r in chunk], [r["responses"] for r in chunk]
        if self._pairwise():
            return self._score_rows(chunk, *score_pairwise(ranker, prompts, cands))
        return self._score_rows(chunk, ranker.score(prompts, cands))

    def _rank_sharded(self, rows: list[dict[str, Any]], t: int, n: int) -> list[dict[str, Any]]:
        args = (self.config.ranker, [r["prompt"] for r in rows], [r["responses"] for r in rows],
                self._ranker_kwargs())
        kw = {"work": self.dir.iter_dir(t), "processes": n, "config": self.opts.accelerate_config}
        if self._pairwise():
            return self._score_rows(rows, *sharded.score_pairwise(*args, **kw))
        return self._score_rows(rows, sharded.score(*args, **kw))

    def _probabilities(self, t: int) -> dict[str, Any]:
        gens = read_jsonl(self.dir.generations(t))
        scores = {r["prompt_id"]: r for r in read_jsonl(self.dir.scores(t))}
        prefs = self.config.preferences
        rows = []
        for g in gens:
            if g["prompt_id"] not in scores:
                raise DataError(f"{self.dir.scores(t)}: no scores for prompt {g['prompt_id']}")
            try:
                rows.append(row_from_scores(g, scores[g["prompt_id"]], prefs.probabilities, prefs.ties))
            except DataError as exc:
                raise DataError(f"{self.dir.scores(t)}: {exc}") from None
        write_jsonl(self.dir.preferences(t), rows)
        mean_gap = sum(r["chosen_probs"] for r in rows) / len(rows)
        return {"pairs": len(rows), "mean_chosen_probs": mean_gap,
                "probabilities": prefs.probabilities, "ties": prefs.ties,
                "same_chosen_and_rejected": sum(r["chosen_index"] == r["rejected_index"] for r in rows)}

    def _train(self, t: int) -> dict[str, Any]:
        prefs = self.config.preferences
        check_preferences(read_jsonl(self.dir.preferences(t)), read_jsonl(self.dir.generations(t)),
                          {r["prompt_id"]: r for r in read_jsonl(self.dir.scores(t))},
                          str(self.dir.preferences(t)), probabilities=prefs.probabilities,
                          ties=prefs.ties)
        self._release()  # free the model under test (and shut vLLM down) before training
        trainer = get_trainer(self.config.trainer)
        ckpt = self.dir.checkpoint(t)
        with atomic_dir(ckpt) as tmp:
            request = TrainRequest(
                model_path=self.policy_path(t - 1),
                reference_path=self.policy_path(t - 1),
                preferences=self.dir.preferences(t),
                output_dir=tmp,
                log_path=self.dir.train_log(t),
                config=self.config.training,
                seed=self.opts.seed + t,
                device=self.opts.device,
                trust_remote_code=self.config.model.trust_remote_code,
                progress=self.opts.progress,
                state_dir=self.dir.train_state(t) if self.config.training.save_steps else None,
            )
            if self.opts.launcher == "accelerate":
                result = launch.run(trainer.name, request, self._processes(),
                                    self.opts.accelerate_config)
            else:
                result = trainer.train(request)
        state = self.dir.train_state(t)  # the checkpoint is committed: the resumable state is spent
        for d in (state, state.with_name(state.name + ".next")):
            shutil.rmtree(d, ignore_errors=True)
        info = result.as_dict()
        info["train_seconds"] = round(info.pop("seconds"), 2)
        info["trainer"] = trainer.name
        info["processes"] = self._processes()
        info["final_loss"] = result.losses[-1] if result.losses else None
        info["losses"] = [round(x, 6) for x in result.losses]
        return info

    def _heldout_generations(self, t: int, prompts: list[Prompt]) -> list[dict[str, Any]]:
        path = self.dir.eval_dir(t, evaluate.BENCHMARK) / "generations.jsonl"
        if path.exists():
            return read_jsonl(path)
        sampling = self._eval_sampling()
        model = self._under_test(self.policy_path(t))
        outs = model.sample(prompts, sampling)
        rows = [{"prompt_id": p.prompt_id, "prompt": p.prompt, "response": g.responses[0],
                 "num_tokens": g.num_tokens[0], "finished": g.finished[0],
                 "generator": model.provenance(), "sampling": sampling.as_dict(model.seed_rule)}
                for p, g in zip(prompts, outs, strict=True)]
        write_jsonl(path, rows)
        return rows

    def _evaluate(self, t: int, prompts: list[Prompt]) -> dict[str, Any]:
        base = self._heldout_generations(0, prompts)
        new = self._heldout_generations(t, prompts)
        ranker = self._get_ranker()
        scores = ranker.score([b["prompt"] for b in base],
                              [[b["response"], n["response"]] for b, n in zip(base, new, strict=True)])
        out = self.dir.eval_dir(t, evaluate.BENCHMARK)
        write_jsonl(out / "scores.jsonl", (
            {"prompt_id": b["prompt_id"], "base_score": s[0], "score": s[1]}
            for b, s in zip(base, scores, strict=True)))
        # from the ranker's scores under either preferences.probabilities: the estimator shapes
        # training, not this measurement, so it is not part of the protocol ("judge" names the ranker)
        metrics = evaluate.win_rate([s[0] for s in scores], [s[1] for s in scores])
        sampling = self._eval_sampling().as_dict()
        results = {
            "benchmark": evaluate.BENCHMARK,
            "version": evaluate.VERSION,
            "metrics": metrics,
            "provenance": {
                "model": self.policy_path(t),
                "iteration": t,
                "baseline": f"base policy ({self.config.model.source})",
                "judge": ranker.name,
                "judge_dtype": self.config.sampling.dtype,
                "n_examples": len(prompts),
                "prompts": f"{self.config.prompts.heldout} (held out, last "
                           f"{self.config.prompts.heldout_size})",
                "decoding": sampling,
                "profile": self.config.profile,
                "base_config": self.config.name,
                "git_sha": self.dir.meta.get("git_sha"),
                "packages": self.dir.meta.get("packages"),
            },
        }
        write_json(out / "results.json", results)
        return {k: metrics[k] for k in ("win_rate", "standard_error")}

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
        self._release()

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
        """Iteration ``t``'s checkpoint answering chat requests (MT-Bench, Arena-Hard)."""
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
    def run(self) -> Path:
        if self.opts.iters < 1:
            raise ConfigError("--iters must be at least 1")
        for t in range(1, self.opts.iters + 1):
            self.config.prompt_source(t)  # fail now, not after hours of work
        trainer = get_trainer(self.config.trainer)
        if hasattr(trainer, "check"):  # what the backend cannot do, before any work
            trainer.check(self.config.training)
        if self.opts.launcher == "accelerate":
            n, tc = self.opts.num_processes, self.config.training
            if n < 1:
                raise ConfigError("--num-processes must be at least 1")
            if tc.global_batch_size % (tc.per_device_batch_size * n):
                raise ConfigError(
                    f"training.global_batch_size ({tc.global_batch_size}) must be a multiple of "
                    f"per_device_batch_size × --num-processes ({tc.per_device_batch_size} × {n})")
            distributed.accelerate_config(self.opts.accelerate_config, self.opts.device)
        check_ranker(self.config.ranker, pairwise=self._pairwise())
        for b in benchmarks.runnable(self.config.evaluation.benchmarks):
            if b.preflight is not None:
                b.preflight(self.config)
        self._open()
        with self.dir.lock(self.opts.break_lock, _say):
            try:
                table = self._iterations()
            finally:
                self._release()  # an engine left running would hold its memory and processes
        print(table)
        return self.dir.root

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
        if self.config.training.layout == "clean":  # (the official layout cuts long prompts)
            for prompts in prompts_of.values():  # (checkpoints keep the base's tokenizer)
                self._check_prompt_lengths(prompts, self.base_path)
        in_loop = evaluate.BENCHMARK in self.config.evaluation.benchmarks
        base_steps = self._benchmark_stages(0)
        if in_loop:  # the base's held-out answers, while it is loaded
            base_steps.insert(0, (f"eval/{evaluate.BENCHMARK}",
                                  lambda: {"heldout": len(self._heldout_generations(0, heldout))}))
        for name, fn in base_steps:
            self._stage("iter-0", name, fn)
        n = self.opts.iters
        for t in range(1, n + 1):
            prompts = prompts_of[t]
            tag = f"iter-{t}"
            steps = [
                ("generate", lambda t=t, p=prompts: self._generate(t, p)),
                ("rank", lambda t=t: self._rank(t)),
                ("probabilities", lambda t=t: self._probabilities(t)),
                ("train", lambda t=t: self._train(t)),
            ]
            if in_loop:
                steps.append((f"eval/{evaluate.BENCHMARK}",
                              lambda t=t: self._evaluate(t, heldout)))
            steps += self._benchmark_stages(t)
            for name, fn in steps:
                self._stage(tag, name, fn)
        self._release()
        return report.write_leaderboard(self.dir)

    def _benchmark_stages(self, t: int) -> list[tuple[str, Any]]:
        """The registered benchmarks' stages of iteration ``t`` (0: the base model), in run order."""
        return [(f"eval/{b.name}", lambda b=b: b.stage(self, t))
                for b in benchmarks.runnable(self.config.evaluation.benchmarks)]

    def _stage(self, tag: str, name: str, fn: Any) -> None:
        stage = f"{tag}/{name}"
        if self.dir.done(stage):
            _say(f"[{tag}] {name}: done before, skipped")
            return
        _say(f"[{tag}] {name} ...")
        self.dir.run_stage(stage, fn)
        _say(f"[{tag}] {name}: {self.dir.meta['stages'][stage]['seconds']} s")

