"""What a run will do, stage by stage, without doing it (``harness run --dry-run``).

The plan is read from the validated configuration and, for ``--resume``, from the run directory's
``run.json``; no model, dataset or judge is touched, so it answers on a laptop what a GPU job will
run, with which settings, and which stages a resumed run would skip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness import benchmarks, evaluate

if TYPE_CHECKING:
    from harness.pipeline import SPPORun


def _settings(values: dict[str, Any], prefix: str = "") -> str:
    """``key value`` pairs, nested keys dotted; unset (None) values left out."""
    parts = []
    for key, value in values.items():
        if isinstance(value, dict):
            parts.append(_settings(value, f"{prefix}{key}."))
        elif value is not None:
            parts.append(f"{prefix}{key} {value}")
    return ", ".join(p for p in parts if p)


def _stage_line(run: SPPORun, t: int, name: str) -> str:
    c = run.config
    if name == "generate":
        s = run.policy_sampling()
        source = "the base" if t == 1 else f"iter-{t - 1}"
        decoding = _settings({"seeds": list(s.seeds), "temperature": s.temperature,
                              "top_p": s.top_p, "max_new_tokens": s.max_new_tokens,
                              "generator": run.opts.generator})
        return f"{c.sampling.k} samples per prompt of {c.prompt_source(t)} from {source} ({decoding})"
    if name == "rank":
        return f"ranker {c.ranker}"
    if name == "probabilities":
        return _settings(c.preferences.model_dump())
    if name == "train":
        launch = (f", {run.opts.num_processes} processes ({run.opts.accelerate_config or 'DDP'})"
                  if run.opts.launcher == "accelerate" else "")
        return f"trainer {c.trainer}{launch}, reference iter-{t - 1}: " + _settings(
            c.training.model_dump())
    bench = name.removeprefix("eval/")
    if bench == evaluate.BENCHMARK:
        return "the held-out prompts' answers" + (" (the reference)" if t == 0 else
                                                   ", judged by the ranker against the base's")
    b = benchmarks.get(bench)
    return _settings(benchmarks.settings(c, bench).model_dump()) if b and b.config else ""


def describe(run: SPPORun) -> str:
    """The plan of ``run`` as text: the base, then every stage in run order with its settings,
    each marked done where the run directory (loaded for ``--resume``) has it finished."""
    c, opts = run.config, run.opts
    lines = [f"plan: {c.name} (profile {c.profile}), {opts.iters} iteration(s) into {run.dir.root}",
             f"base model: {c.model.source}" + (f" @ {c.model.revision}" if c.model.revision else "")
             + f", {c.sampling.dtype}, device {opts.device}"]
    for t, name in run.stages():
        stage = f"iter-{t}/{name}"
        mark = "done, skipped" if run.dir.done(stage) else "to run"
        lines.append(f"  {stage:<28} [{mark}] {_stage_line(run, t, name)}")
    lines.append("then the run's leaderboard (leaderboard.md, .csv, .html). A paid judge's cost is "
                 "estimated and asked for before its first call (--yes accepts it).")
    return "\n".join(lines)
