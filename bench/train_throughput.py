"""Training throughput and peak memory of each trainer backend on the embedded model.

Every backend trains on the same preference pool with the same hyper-parameters, batch and
sequence lengths, each in its own process (so peak memory is its own). Tokens/s counts the
tokens forwarded through the policy in the optimizer loop, padding excluded (the native backend
forwards a pair's prompt once for both responses; the reference pass, loading and saving are
excluded). Peak memory is the process's maximum
resident set (CPU) or ``torch.cuda.max_memory_allocated`` (GPU). Model-FLOPs utilisation is
6·N·tokens/s over the measured matmul peak of the training dtype (``bench.hardware``). The
``native-split`` row is the native backend with ``training.weight_rounding: split``: its forward
matmuls are twice as deep (a step ~4/3 of the matmul work), and its MFU still counts 6·N.

    python -m bench.train_throughput                       # every row, bf16, 2 epochs
    python -m bench.train_throughput --dtype float32 --out bench/results/train_fp32.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from bench.hardware import matmul_gflops
from bench.logratio_precision import ROUNDINGS, decompose
from harness.artifacts import write_json, write_jsonl
from harness.config import TrainingConfig, load_config
from harness.models import load_model, load_tokenizer, resolve_source
from harness.prompts import load_source
from harness.provenance import machine, package_versions

EMBEDDED = "embedded:smollm2-135m"


def preference_pool(path: Path, pairs: int, response_tokens: int) -> None:
    """A fixed pool: embedded prompts, with other prompts' text cut to ``response_tokens`` tokens
    as responses (throughput depends on lengths, not on what the words say)."""
    prompts = [p.prompt for p in load_source("embedded")]
    tok = load_tokenizer(resolve_source(EMBEDDED))

    def cut(text: str) -> str:
        ids = tok(text * 4, add_special_tokens=False)["input_ids"][:response_tokens]
        return tok.decode(ids)

    write_jsonl(path, ({
        "prompt_id": str(i), "prompt": prompts[i],
        "chosen": cut(prompts[(i + 1) % len(prompts)]),
        "rejected": cut(prompts[(i + 2) % len(prompts)]),
        "chosen_probs": 0.7, "chosen_probs_win": 0.65, "chosen_probs_lose": 0.4,
    } for i in range(pairs)))


def logratio_agreement(policy: str, reference: str, prefs: Path, cfg: TrainingConfig) -> dict[str, Any]:
    """Each pair's chosen and rejected log-ratio of the trained policy against the reference,
    computed as the trainer computed them (``cfg.dtype``, ``cfg.weight_rounding``) and in fp32
    with the same weights, how far apart, and (weight_rounding single) how far each rounding of a
    bf16 matmul's operands alone takes them (:mod:`bench.logratio_precision`)."""
    from trainers.data import load_pairs

    tok = load_tokenizer(reference)
    pairs = load_pairs(prefs, tok, cfg.max_length, cfg.max_prompt_length)
    split = cfg.weight_rounding == "split"
    found = decompose(load_model(policy, "float32"), load_model(reference, "float32"), pairs,
                      tok.pad_token_id, cfg.per_device_batch_size, cfg.dtype,
                      roundings=() if split else tuple(ROUNDINGS))
    own = f"{cfg.dtype} autocast" + (", split weights" if split else "")
    return {**found, **found["variants"][own], "arithmetic": own}


# a row of the table: (trainer backend, training.weight_rounding)
ROWS = {"native": ("native", "single"), "native-split": ("native", "split"), "trl": ("trl", "single")}


def one(row: str, prefs: Path, cfg: TrainingConfig, device: str) -> dict[str, Any]:
    from trainers import TrainRequest, get_trainer

    backend, rounding = ROWS[row]
    cfg = cfg.model_copy(update={"weight_rounding": rounding})

    params = sum(p.numel() for p in load_model(resolve_source(EMBEDDED)).parameters())  # freed
    agreement = None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ckpt"
        out.mkdir()
        path = resolve_source(EMBEDDED)
        r = get_trainer(backend).train(TrainRequest(
            model_path=path, reference_path=path, preferences=prefs, output_dir=out,
            log_path=Path(tmp) / "log.jsonl", config=cfg, seed=0, device=device, progress=False))
        if device.startswith("cuda"):
            peak = torch.cuda.max_memory_allocated() / 2**30
            kind = "cuda max_memory_allocated"
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB
            kind = "max RSS"
        if backend == "native" and cfg.dtype != "float32" and device == "cpu":
            agreement = logratio_agreement(str(out), path, prefs, cfg)  # after the peak is read
    # Model-FLOPs utilisation: 6·N per token (forward + backward) over the dtype's measured peak.
    achieved = 6 * params * r.tokens / r.seconds / 1e9
    return {"backend": row, "weight_rounding": rounding, "steps": r.steps, "tokens": r.tokens,
            "loop_seconds": round(r.seconds, 2), "tokens_per_second": round(r.tokens / r.seconds, 1),
            "model_gflops_per_second": round(achieved, 1),
            "peak_memory_gib": round(peak, 2), "peak_memory_kind": kind,
            "first_loss": r.losses[0], "final_loss": r.losses[-1], "logratio_agreement": agreement}


def step_profile(prefs: Path, cfg: TrainingConfig) -> dict[str, Any]:
    """Where one native optimizer step's time goes (torch.profiler, CPU): the first micro-batch of
    the pool, forward under autocast, backward, optimizer step; top operators by self time."""
    from torch.profiler import ProfilerActivity, profile

    from trainers.data import autocast, load_pairs, pair_forward
    from trainers.native import _optimizer

    path = resolve_source(EMBEDDED)
    tok = load_tokenizer(path)
    model = load_model(path, "float32", attn_implementation=cfg.attn_implementation)
    pairs = load_pairs(prefs, tok, cfg.max_length, cfg.max_prompt_length)[: cfg.per_device_batch_size]
    opt = _optimizer(list(model.parameters()), cfg)
    forwarded = 0

    def step() -> None:
        nonlocal forwarded
        with autocast(torch.device("cpu"), cfg.dtype):
            logps, _, tokens = pair_forward(model, pairs, tok.pad_token_id,
                                            not cfg.gradient_checkpointing)
        forwarded = int(tokens.sum())
        logps.float().sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    mm = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))
    whole = sum(2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    return {"pairs": len(pairs), "tokens_forwarded": forwarded, "tokens_of_whole_sequences": whole,
            "step_seconds": round(total / 1e6, 2), "matmul_share_of_op_time": round(mm / total, 3),
            "top_ops": [{"op": e.key, "share": round(e.self_cpu_time_total / total, 3), "calls": e.count}
                        for e in events[:10]]}


def smoke_training(micro_batch: int | None, epochs: float | None, dtype: str) -> TrainingConfig:
    """The embedded model's smoke-profile training config (the README run's), with the bench's
    overrides."""
    cfg = load_config("smollm2-135m", profile="smoke").training
    changes = {"per_device_batch_size": micro_batch, "epochs": epochs, "dtype": dtype}
    return cfg.model_copy(update={k: v for k, v in changes.items() if v is not None})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", nargs="+", default=list(ROWS), choices=list(ROWS),
                    help="rows: a trainer backend (native-split: native with weight_rounding: split)")
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--response-tokens", type=int, default=64)
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--micro-batch", type=int, help="pairs per forward (default: the smoke profile's)")
    ap.add_argument("--epochs", type=float, help="default: the smoke profile's")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=Path("bench/results/train_throughput.json"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    cfg = smoke_training(args.micro_batch, args.epochs, args.dtype)
    if args.child:
        prefs = Path(args.child)
        print(json.dumps(one(args.backends[0], prefs, cfg, args.device)))
        return
    peak = matmul_gflops(args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        prefs = Path(tmp) / "preferences.jsonl"
        preference_pool(prefs, args.pairs, args.response_tokens)
        profiled = step_profile(prefs, cfg)
        rows = []
        for backend in args.backends:
            cmd = [sys.executable, "-m", "bench.train_throughput", "--child", str(prefs),
                   "--backends", backend, "--dtype", args.dtype, "--micro-batch",
                   str(cfg.per_device_batch_size), "--epochs", str(cfg.epochs), "--device", args.device]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{backend} failed:\n{done.stderr[-3000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["mfu"] = round(row["model_gflops_per_second"] / peak, 3)
            rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
        native = next((r for r in rows if r["backend"] == "native"), {})
        agreement = native.get("logratio_agreement")
        for r in rows:
            if r.get("logratio_agreement"):
                print(json.dumps({r["backend"]: r["logratio_agreement"]}), flush=True)
    write_json(args.out, {
        "benchmark": "train_throughput", "model": EMBEDDED, "pairs": args.pairs,
        "response_tokens": args.response_tokens, "config": cfg.model_dump(mode="json"),
        "device": args.device, "machine": machine(),
        "matmul_peak_gflops": {args.dtype: round(peak, 1)}, "threads": torch.get_num_threads(),
        "packages": package_versions(), "results": rows, "logratio_agreement": agreement,
        "native_step_profile": profiled})
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
