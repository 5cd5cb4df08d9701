"""Generation throughput of the harness's sampler against a naive loop and the hardware's ceilings.

Four ways to draw K = 5 samples per prompt from the embedded model, same prompts, same lengths:

- ``harness_batch1``: the harness's ``TransformersModel.sample`` one prompt at a time;
- ``harness_batched``: the same at the run's batch (the smoke profile's 48 prompts per batch): one
  pass of K·48 rows per batch, the prompts' prefill run once and shared by their K samples, each
  sample drawn from its own seeded generator (the official recipe's shape, K seeded passes over
  all prompts, is section 4's official side);
- ``naive``: what a user would write first: per prompt, ``model.generate`` with
  ``num_return_sequences=K`` and transformers' own temperature/top-p;
- the rooflines: at batch 1 a decoding step reads every weight once, so tokens/s ≤ bandwidth /
  weight bytes; at any batch each token costs 2·N FLOPs, so tokens/s ≤ matmul peak / 2·N.

Tokens/s counts the new tokens kept (up to each sample's end of sequence). The embedded model is
converted once into the cache; loading is not timed.

    python -m bench.generation                       # bf16, 64 new tokens, 48 prompts batched
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from bench.hardware import matmul_gflops, read_bandwidth_gbs, thin_matmul_gflops
from harness.artifacts import write_json
from harness.generate import Sampling, chat_prompt, eos_token_ids
from harness.models import load_model, load_tokenizer, resolve_source
from harness.prompts import load_source
from harness.provenance import machine, package_versions
from harness.under_test.decode_attention import decode_grouped_on_cpu
from harness.under_test.hf import TransformersModel

EMBEDDED = "embedded:smollm2-135m"
SEEDS = (0, 50, 100, 150, 200)


def harness_path(model, tok, prompts, sampling: Sampling, batch: int) -> dict[str, Any]:
    gen = TransformersModel(model, tok, batch_size=batch, progress=False)
    start = time.perf_counter()
    outs = gen.sample(prompts, sampling)
    seconds = time.perf_counter() - start
    tokens = sum(sum(g.num_tokens) for g in outs)
    return {"batch_size": batch, "prompts": len(prompts), "samples": len(prompts) * len(sampling.seeds),
            "new_tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1)}


@torch.inference_mode()
def naive_path(model, tok, prompts, sampling: Sampling) -> dict[str, Any]:
    eos = eos_token_ids(model.generation_config, tok)
    tokens = 0
    start = time.perf_counter()
    for i, p in enumerate(prompts):
        torch.manual_seed(i)
        ids = tok(chat_prompt(tok, p.prompt), return_tensors="pt", add_special_tokens=False)
        out = model.generate(**ids, do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                             top_k=0, num_return_sequences=len(sampling.seeds),
                             max_new_tokens=sampling.max_new_tokens, eos_token_id=eos,
                             pad_token_id=tok.pad_token_id)
        for row in out[:, ids["input_ids"].shape[1]:].tolist():
            tokens += next((j for j, t in enumerate(row) if t in eos), len(row))
    seconds = time.perf_counter() - start
    return {"prompts": len(prompts), "samples": len(prompts) * len(sampling.seeds), "new_tokens": tokens,
            "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1)}


@torch.inference_mode()
def step_profile(model, tok, prompts: list[str], steps: int = 32) -> dict[str, Any]:
    """Where a decoding step's time goes at ``len(prompts)`` rows (torch.profiler, CPU, greedy, the
    prompts' prefill included), top operators by self time."""
    from torch.profiler import ProfilerActivity, profile

    tok.padding_side = "left"
    ids = tok([chat_prompt(tok, p) for p in prompts], return_tensors="pt", add_special_tokens=False,
              padding=True)
    kwargs = dict(do_sample=False, max_new_tokens=steps, min_new_tokens=steps,
                  pad_token_id=tok.pad_token_id)
    model.generate(**ids, **kwargs)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        model.generate(**ids, **kwargs)
        seconds = time.perf_counter() - start
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    matmul = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm",
                                                                    "aten::linear", "aten::matmul"))
    return {"rows": len(prompts), "steps": steps, "ms_per_step": round(1000 * seconds / steps, 2),
            "matmul_share_of_op_time": round(matmul / total, 3),
            "op_calls_per_step": round(sum(e.count for e in events) / steps),
            "top_ops": [{"op": e.key, "share": round(e.self_cpu_time_total / total, 3), "calls": e.count}
                        for e in events[:8]]}


def linear_shapes(model, dtype: str, k: int, batch: int) -> dict[str, float]:
    """GFLOP/s of the MLP up-projection's matmul at the row counts decoding gives it: 1 (batch 1),
    K (the naive loop), the run's batch, and K × the run's batch (all K samples in one pass)."""
    cfg = model.config
    return {str(m): round(thin_matmul_gflops(m, cfg.hidden_size, cfg.intermediate_size, dtype), 1)
            for m in (1, k, batch, k * batch)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=48, help="the run's batch (smoke profile: 48)")
    ap.add_argument("--batch1-prompts", type=int, default=3)
    ap.add_argument("--naive-prompts", type=int, default=6)
    ap.add_argument("--out", type=Path, default=Path("bench/results/generation.json"))
    args = ap.parse_args()
    path = resolve_source(EMBEDDED)
    # as a model under test is loaded (the CPU decoding attention); the naive loop shares it
    model = load_model(path, args.dtype)
    decode_grouped_on_cpu(model)
    tok = load_tokenizer(path)
    params = sum(p.numel() for p in model.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    prompts = load_source("embedded")
    sampling = Sampling(SEEDS, temperature=0.7, top_p=0.9, max_new_tokens=args.max_new_tokens)
    peak = matmul_gflops(args.dtype)
    bandwidth = read_bandwidth_gbs()
    warm = harness_path(model, tok, prompts[:1], sampling, 1)  # noqa: F841 (first call allocates)
    batch1 = harness_path(model, tok, prompts[: args.batch1_prompts], sampling, 1)
    print(json.dumps({"harness_batch1": batch1}), flush=True)
    batched = harness_path(model, tok, prompts[: args.batch_size], sampling, args.batch_size)
    print(json.dumps({"harness_batched": batched}), flush=True)
    naive = naive_path(model, tok, prompts[: args.naive_prompts], sampling)
    print(json.dumps({"naive": naive}), flush=True)
    memory_roofline = bandwidth * 1e9 / weight_bytes
    compute_roofline = peak * 1e9 / (2 * params)
    result = {
        "benchmark": "generation", "model": EMBEDDED, "dtype": args.dtype, "parameters": params,
        "weight_bytes": weight_bytes, "k": len(SEEDS), "max_new_tokens": args.max_new_tokens,
        "sampling": sampling.as_dict(),
        "ceilings": {"matmul_gflops": round(peak, 1), "read_gb_per_s": round(bandwidth, 1),
                     "batch1_memory_roofline_tokens_per_s": round(memory_roofline, 1),
                     "compute_roofline_tokens_per_s": round(compute_roofline, 1)},
        "harness_batch1": {**batch1,
                           "share_of_memory_roofline": round(batch1["tokens_per_s"] / memory_roofline, 3)},
        "harness_batched": {**batched,
                            "share_of_compute_roofline": round(batched["tokens_per_s"] / compute_roofline, 3),
                            "speedup_vs_naive": round(batched["tokens_per_s"] / naive["tokens_per_s"], 2)},
        "naive": naive,
        "batch1_step_profile": step_profile(model, tok, [prompts[0].prompt]),
        "batched_step_profile": step_profile(model, tok, [p.prompt for p in prompts[: args.batch_size]]),
        "linear_gflops_by_rows": linear_shapes(model, args.dtype, len(SEEDS), args.batch_size),
        "threads": torch.get_num_threads(), "machine": machine(), "packages": package_versions(),
    }
    write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "packages")}, indent=1))


if __name__ == "__main__":
    main()
