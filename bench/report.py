"""``bench/REPORT.md`` from the suite's raw figures (``bench/results/*.json``).

Every figure in the report is read from those files; the targets are checked here, and each miss
is printed with the evidence that explains it (profiles and the measured ceilings).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REPORT = HERE / "REPORT.md"


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def generation_section(g: dict[str, Any], targets: list[list[str]]) -> list[str]:
    c, b1, bb, nv = g["ceilings"], g["harness_batch1"], g["harness_batched"], g["naive"]
    prof = g["batch1_step_profile"]
    lines = [
        "## 1. Generation",
        "",
        f"Embedded model ({g['parameters'] / 1e6:.1f} M parameters, {g['weight_bytes'] / 2**20:.0f} MiB of "
        f"{g['dtype']} weights), K = {g['k']} samples per prompt, at most {g['max_new_tokens']} new tokens, "
        f"T {g['sampling']['temperature']}, top-p {g['sampling']['top_p']}. Tokens/s counts the new tokens "
        "kept. The harness's path makes one pass of K·B rows per batch of B prompts, their prefill shared "
        "by the K samples, each sample seeded on its own (the official recipe's K seeded passes over all "
        "prompts are section 4's official side).",
        "",
        *_table(["path", "prompts", "samples", "new tokens", "time", "tokens/s", "of its roofline"], [
            ["harness, batch 1", b1["prompts"], b1["samples"], b1["new_tokens"], f"{b1['seconds']} s",
             f"**{b1['tokens_per_s']}**", f"{_pct(b1['share_of_memory_roofline'])} of memory"],
            [f"harness, batch {bb['batch_size']} (the run's)", bb["prompts"], bb["samples"], bb["new_tokens"],
             f"{bb['seconds']} s", f"**{bb['tokens_per_s']}**",
             f"{_pct(bb['share_of_compute_roofline'])} of compute"],
            ["naive: per prompt, `num_return_sequences=K`", nv["prompts"], nv["samples"], nv["new_tokens"],
             f"{nv['seconds']} s", f"**{nv['tokens_per_s']}**", ""],
        ]),
        "",
        f"Ceilings measured in the same run: matmul {c['matmul_gflops']} GFLOP/s ({g['dtype']}), memory "
        f"read {c['read_gb_per_s']} GB/s. Roofline at batch 1 (weights read once per step): "
        f"{c['batch1_memory_roofline_tokens_per_s']} tokens/s; compute roofline (2·N FLOPs per token): "
        f"{c['compute_roofline_tokens_per_s']} tokens/s.",
        "",
        f"Profile of a batch-1 decoding step (torch.profiler, {prof['steps']} greedy steps): "
        f"{prof['ms_per_step']} ms per step, {prof['op_calls_per_step']} operator calls per step, "
        f"matmuls {_pct(prof['matmul_share_of_op_time'])} of operator time. Top operators by self time: "
        + ", ".join(f"`{o['op']}` {_pct(o['share'])}" for o in prof["top_ops"][:6]) + ".",
        "",
    ]
    targets += [
        ["generation, batch 1 ≥ 50 % of the memory roofline", _pct(b1["share_of_memory_roofline"]),
         _verdict(b1["share_of_memory_roofline"] >= 0.5)],
        [f"generation, batch {bb['batch_size']} ≥ 25 % of the compute roofline",
         _pct(bb["share_of_compute_roofline"]), _verdict(bb["share_of_compute_roofline"] >= 0.25)],
        [f"generation, batch {bb['batch_size']} ≥ 5× the naive baseline", f"{bb['speedup_vs_naive']}×",
         _verdict(bb["speedup_vs_naive"] >= 5)],
    ]
    return lines


def ranking_section(r: dict[str, Any]) -> list[str]:
    e = r["embedded"]
    lines = [
        "## 2. Ranking",
        "",
        f"Offline default ranker `smollm-judge` (the embedded model asked Yes/No, {e['dtype']}, about "
        f"{e['tokens_per_candidate']} tokens per candidate, {e['prompts']} prompts × 5 answers) and "
        f"PairRM's architecture (random weights, {r['parameters'] / 1e6:.0f} M parameters, {r['dtype']}, "
        f"{r['prompts']} prompt(s) × {r['k']} answers = {r['pair_sequences']} pair sequences of about "
        f"{r['approx_tokens_per_pair_sequence']} tokens).",
        "",
        *_table(["ranker", "batch", "time", "candidates/s", "speed-up", "max \\|Δ score\\|"], [
            ["smollm-judge", 1, f"{e['batch1']['seconds']} s", e["batch1"]["candidates_per_s"], "", ""],
            ["smollm-judge", e["batched"]["batch_size"], f"{e['batched']['seconds']} s",
             f"**{e['batched']['candidates_per_s']}**", f"{e['speedup']}×", f"{e['max_abs_score_diff']:.2g}"],
            ["PairRM (llm-blender `rank(batch_size=1)`, official)", 1,
             f"{r['official_batch1']['seconds']:.1f} s", f"{r['official_batch1']['candidates_per_s']:.3f}",
             "", ""],
            ["PairRM (harness, its GPU batch; on CPU it ranks at 1)", r["harness_batched"]["batch_size"],
             f"{r['harness_batched']['seconds']:.1f} s",
             f"{r['harness_batched']['candidates_per_s']:.3f}", f"{r['speedup']:.2f}×",
             f"{r['max_abs_score_diff']:.2g}"],
        ]),
        "",
        f"PairRM at batch 1 already runs at {r['gflops_per_s_official']:.0f} GFLOP/s: one pair sequence of "
        "DeBERTa-v3-large keeps both cores busy, so batching it on this CPU buys nothing and the harness "
        "ranks PairRM one sequence at a time on CPU (16 on GPU). The small judge is another matter: at "
        "batch 1 its matmuls are too thin to fill the cores.",
        "",
    ]
    return lines


def training_section(t: dict[str, Any], targets: list[list[str]]) -> list[str]:
    rows = {r["backend"]: r for r in t["results"]}
    peak = t["matmul_peak_gflops"]
    dtype = t["config"]["dtype"]
    lines = [
        "## 3. Training",
        "",
        f"{t['pairs']} fixed pairs (embedded prompts, {t['response_tokens']}-token responses), SPPO loss, "
        f"global batch {t['config']['global_batch_size']}, {t['config']['epochs']} epochs, max length "
        f"{t['config']['max_length']}, {dtype} autocast over fp32 master weights; each backend in its own "
        "process. Tokens/s counts the tokens the policy forwards in the optimizer loop, padding "
        "excluded: the native backend forwards a pair's prompt once for both responses (they "
        "continue from its KV cache, and gradients flow back through it), TRL forwards it with each, "
        "so the backends compare by loop time. MFU = 6·N·tokens/s of that loop over the measured "
        f"{dtype} matmul peak ({peak[dtype]} GFLOP/s). Both backends compute the reference's "
        "log-probabilities once, before the loop (2·N per token, once per pair rather than once per "
        "step and epoch), so the reference adds no FLOPs to the loop; section 4 times a trainer that "
        "forwards it at every step."
        + (" `native-split` is the native backend with `training.weight_rounding: split` (each fp32 "
           "master weight read as two bf16 parts and fp32 logits, `trainers/split_weights.py`): its "
           "forward matmuls are twice as deep, a step about 4/3 of the matmul work, and its MFU still "
           "counts 6·N."
           if "native-split" in rows else ""),
        "",
        *_table(["backend", "steps", "tokens", "loop time", "tokens/s", "MFU", "peak memory", "final loss"], [
            [b, r["steps"], r["tokens"], f"{r['loop_seconds']} s", f"**{r['tokens_per_second']}**",
             _pct(r["mfu"]), f"{r['peak_memory_gib']} GiB ({r['peak_memory_kind']})",
             f"{r['final_loss']:.1f}"] for b, r in rows.items()]),
        "",
    ]
    a = t.get("logratio_agreement")
    if a:
        lines += [f"Log-probability agreement with fp32 (native backend, after its {rows['native']['steps']} "
                  f"steps, so the policy differs from its reference): each of {a['sequences']} log-ratios "
                  "log π − log π_ref (every pair's chosen and rejected response), computed with the same "
                  f"weights in {dtype} autocast and in fp32, differs by at most {a['max_abs_difference']} "
                  f"nats (mean {a['mean_abs_difference']}), against an fp32 spread (std across them) of "
                  f"{a['fp32_logratio_std']} nats; correlation {a['correlation']}. Tolerance, fixed before "
                  f"measuring: {a['tolerance']}.", ""]
        if a.get("variants"):
            lines += ["Each rounding of a bf16 matmul's operands alone (fp32 arithmetic on operands rounded "
                      "as named, `bench/logratio_precision.py`), and the trainer's two arithmetics on the "
                      "same weights:", "", *_rounding_table(a), ""]
        targets.append([f"{dtype} log-ratios agree with fp32 ({a['tolerance']})",
                        f"largest difference {a['max_abs_difference']} (std {a['fp32_logratio_std']})",
                        _verdict(a["passed"])])
    sp = rows.get("native-split", {}).get("logratio_agreement")
    if sp:
        lines += [f"The same check on `native-split`'s policy, computed as it trains (split weights): at "
                  f"most {sp['max_abs_difference']} nats (mean {sp['mean_abs_difference']}) against an "
                  f"fp32 spread of {sp['fp32_logratio_std']}; correlation {sp['correlation']}.", ""]
        targets.append([f"{dtype} log-ratios agree with fp32, `weight_rounding: split`",
                        f"largest difference {sp['max_abs_difference']} (std {sp['fp32_logratio_std']})",
                        _verdict(sp["passed"])])
    for name in ("native", "native-split"):
        if name in rows:
            targets.append([f"training ≥ 40 % MFU ({dtype} peak), {name}", _pct(rows[name]["mfu"]),
                            _verdict(rows[name]["mfu"] >= 0.4)])
    return lines


ROUNDING_MEANING = {
    "weights": "weights rounded to bf16, activations kept",
    "activations": "activations rounded to bf16, weights kept",
    "both": "both rounded: what a bf16 matmul reads",
    "split weights": "activations rounded, each weight the sum of two bf16 parts: two matmuls",
    "bfloat16 autocast": "the trainer's default, `weight_rounding: single`",
    "bfloat16 autocast, split weights": "the trainer's `weight_rounding: split`: real bf16 matmuls, "
                                        "fp32 logits",
}


def _rounding_table(found: dict[str, Any]) -> list[str]:
    """One row per variant of :func:`bench.logratio_precision.decompose`."""
    return _table(["variant", "largest difference", "mean difference", "largest / fp32 std", "correlation",
                   "within tolerance"], [
        [f"{name} ({ROUNDING_MEANING[name]})" if name in ROUNDING_MEANING else name,
         f"{v['max_abs_difference']} nats", f"{v['mean_abs_difference']} nats",
         f"{v['max_over_fp32_std']:.3f}" if "max_over_fp32_std" in v else "",
         v["correlation"], "yes" if v["passed"] else "no"]
        for name, v in found["variants"].items()])


def precision_section(p: dict[str, Any]) -> list[str]:
    command = f"python -m bench.logratio_precision --run {p['run']}"
    command += " --autocast" if p.get("autocast") else ""
    made_by = (p.get("run_git_sha") or "unknown")[:7]
    return [
        "## 6. Where bf16 log-ratios depart from fp32",
        "",
        f"`{command}`: the policy of iteration {p['iteration']} of that run (made by harness {made_by}; "
        f"{p['training_steps']} {p['optimizer']} steps at learning rate {p['learning_rate']}) "
        f"against its reference (the iteration before), on the {p['pairs']} preference pairs it trained "
        f"on: {p['sequences']} log-ratios log π − log π_ref, whose fp32 values spread with a standard "
        f"deviation of {p['fp32_logratio_std']} nats (mean magnitude {p['fp32_logratio_mean_abs']}). "
        "Each variant computes every linear layer of both models in fp32 on operands rounded as named, "
        "so each source of a bf16 matmul's error shows alone; `bfloat16 autocast` is the trainer's own "
        f"arithmetic. Tolerance, as section 3's: {p['tolerance']}. Machine: "
        + ", ".join(f"{k} {v}" for k, v in p["machine"].items()) + f"; {p['threads']} thread(s).",
        "",
        *_rounding_table(p),
        "",
    ]


def end_to_end_section(e: dict[str, Any], targets: list[list[str]]) -> list[str]:
    h, o = e["harness"], e["official"]
    stages = ["generate", "rank", "probabilities", "train"]
    lines = [
        "## 4. End to end",
        "",
        f"One SPPO iteration on {e['prompts']} prompts, smoke profile ({e['dtype']}), seed {e['seed']}, both "
        "paths in their own process on the same machine, one after the other. Harness: `python -m harness "
        "run --iters 1` (batched ranking, reference log-probabilities computed once, native trainer). "
        "Official shape: K seeded passes over all prompts, ranking one candidate at a time, TRL's "
        "DPOTrainer with the reference model forwarded at every step."
        + (f" Both with {e['allocator']}." if e.get("allocator") else ""),
        "",
        *_table(["stage", "harness", "official shape", "harness / official"], [
            [s, f"{h['stages'][s]} s", f"{o['stages'][s]} s",
             f"{e['stage_ratios'][s]:.2f}" if s in e["stage_ratios"] else "—"] for s in stages]
            + [["whole iteration (process wall time)", f"**{h['seconds']} s**", f"**{o['seconds']} s**",
                f"**{e['ratio_harness_over_official']:.2f}**"],
               ["peak memory (max RSS)", f"{h['peak_rss_gib']} GiB", f"{o['peak_rss_gib']} GiB", ""],
               ["optimizer steps", h.get("train_steps"), o.get("train_steps"), ""]]),
        "",
    ]
    targets += [
        ["end-to-end ≤ 0.5× the official-recipe time", f"{e['ratio_harness_over_official']:.2f}×",
         _verdict(e["ratio_harness_over_official"] <= 0.5)],
        ["peak memory of a smoke iteration < 6 GB", f"{h['peak_rss_gib'] * 2**30 / 1e9:.1f} GB",
         _verdict(h["peak_rss_gib"] * 2**30 / 1e9 < 6)],
    ]
    return lines


def backends_section(b: dict[str, Any]) -> list[str]:
    t, v = b["transformers"], b["vllm"]
    ratio = v["sampling"]["tokens_per_s"] / t["sampling"]["tokens_per_s"]
    return [
        "## 5. Backends of the model under test: transformers vs vLLM",
        "",
        f"`python -m bench.backends` (in the vLLM environment), {b['model']} on {b['device']}, {b['dtype']}, "
        f"the same {b['prompts']} prompts: SPPO sampling (K = {b['k']} seeded samples per prompt, T 0.7, "
        f"top-p 0.9) and benchmark answering (one chat per prompt, T 0.7), at most {b['max_new_tokens']} "
        "new tokens. Each backend in its own process; peak memory is the RSS of its process tree "
        "(vLLM's engine processes included), sampled every 0.2 s. vLLM: "
        + ", ".join(f"{k} {v['provenance'][k]}" for k in ("vllm", "enforce_eager", "kv_cache_gib",
                                                           "engine_in_process", "max_model_len")) + ".",
        "",
        *_table(["backend", "load", "sampling tokens/s", "answering tokens/s", "new tokens (sampling)",
                 "peak memory"], [
            [name, f"{r['load_seconds']} s", f"**{r['sampling']['tokens_per_s']}**",
             f"**{r['answering']['tokens_per_s']}**", r["sampling"]["new_tokens"], f"{r['peak_rss_gib']} GiB"]
            for name, r in (("transformers", t), ("vllm", v))]),
        "",
        f"vLLM samples at {ratio:.2f}× the transformers backend's rate here. vLLM's CPU build is not what "
        "it is made for: on a GPU node run `bench/gpu_check.sh`, whose figures go beside these.",
        "",
    ]


def write_report(results: Path = RESULTS, out: Path = REPORT, analysis: Path = HERE / "ANALYSIS.md") -> Path:
    gen, rank = _load(results, "generation"), _load(results, "rank_throughput")
    train, e2e = _load(results, "train_throughput"), _load(results, "end_to_end")
    backends, precision = _load(results, "backends"), _load(results, "logratio_precision")
    any_run = gen or rank or train or e2e
    targets: list[list[str]] = []
    lines = ["# Benchmark report", "",
             "Written by `python -m bench` from the raw figures in `bench/results/` (one run of each "
             "section; re-render with `python -m bench --report-only`). Do not edit by hand.", ""]
    if any_run:
        m, p = any_run["machine"], any_run["packages"]
        lines += ["Machine: " + ", ".join(f"{k} {v}" for k, v in m.items()) + ". Packages: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(p.items())) + ".", ""]
    for data, section in ((gen, lambda d: generation_section(d, targets)), (rank, ranking_section),
                          (train, lambda d: training_section(d, targets)),
                          (e2e, lambda d: end_to_end_section(d, targets)), (backends, backends_section),
                          (precision, precision_section)):
        if data is not None:
            lines += section(data)
    lines += ["## Targets", "", *_table(["target", "measured", ""], targets), ""]
    if analysis.is_file():
        lines += [analysis.read_text().strip(), ""]
    out.write_text("\n".join(lines))
    return out
