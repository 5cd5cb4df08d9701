"""Where a trained policy's bf16 log-ratios depart from fp32, and what would close the gap.

A bf16 matmul reads its two operands rounded to bf16 and accumulates in fp32 (autocast on CPU
and GPU alike). Each of the variants below replaces every ``nn.Linear`` of the policy and of its
reference with fp32 arithmetic on operands rounded as named, so each source of the departure is
measured alone, at fp32 speed, on any CPU:

- ``weights``: the weights rounded to bf16, activations kept;
- ``activations``: the activations rounded, weights kept;
- ``both``: both rounded: the operands a bf16 matmul reads;
- ``split weights``: activations rounded, each weight as the sum of two bf16 parts (its bf16
  rounding and the bf16 rounding of what that leaves), i.e. two bf16 matmuls per layer.

``--autocast`` adds the real thing, slow on a CPU without bf16 matmul instructions: the trainer's
two ways of computing in bf16, autocast (``training.weight_rounding: single``) and
``weight_rounding: split`` (:mod:`trainers.split_weights`: real bf16 matmuls reading both parts).
The policy and reference are a run's checkpoints (iteration t against t − 1) and the pairs those
of its iteration t, cut as its training cut them::

    python -m bench.logratio_precision --run runs/ci-smoke          # its last iteration
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from harness.artifacts import read_json, write_json
from harness.models import load_model, load_tokenizer
from harness.provenance import machine, package_versions

# bf16 log-ratios (log π − log π_ref, the quantity SPPO trains on) pass when every pair's is
# within this share of the fp32 log-ratios' standard deviation across pairs
LOGRATIO_TOLERANCE = 0.1
TOLERANCE_TEXT = f"every pair's difference ≤ {LOGRATIO_TOLERANCE} × the fp32 std"


def _bf16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16).to(t.dtype)


def _split(w: torch.Tensor) -> torch.Tensor:
    high = _bf16(w)
    return high + _bf16(w - high)


ROUNDINGS = {  # name: (how a Linear's input is read, how its weight is read)
    "weights": (lambda x: x, _bf16),
    "activations": (_bf16, lambda w: w),
    "both": (_bf16, _bf16),
    "split weights": (_bf16, _split),
}


@contextmanager
def rounded_linears(models: list[torch.nn.Module], rounding: str) -> Iterator[None]:
    """Every ``nn.Linear`` of ``models`` computes in fp32 on operands rounded as ``rounding``
    (:data:`ROUNDINGS`) says; the original forwards are restored on exit."""
    read_x, read_w = ROUNDINGS[rounding]
    linears = [m for model in models for m in model.modules() if isinstance(m, torch.nn.Linear)]
    saved = [(m, m.forward) for m in linears]
    for m in linears:
        m.forward = (lambda x, m=m: F.linear(read_x(x), read_w(m.weight),
                                             None if m.bias is None else read_w(m.bias)))
    try:
        yield
    finally:
        for m, forward in saved:
            m.forward = forward


def departure(exact: torch.Tensor, other: torch.Tensor) -> dict[str, Any]:
    """How far ``other``'s log-ratios are from the fp32 ones, against the tolerance."""
    spread = float(exact.std())
    gap = (other - exact).abs()
    return {"max_abs_difference": round(float(gap.max()), 4),
            "mean_abs_difference": round(float(gap.mean()), 4),
            "max_over_fp32_std": round(float(gap.max()) / spread, 4),
            "correlation": round(float(torch.corrcoef(torch.stack([exact, other]))[0, 1]), 5),
            "passed": float(gap.max()) <= LOGRATIO_TOLERANCE * spread}


@torch.no_grad()
def logratios(policy: torch.nn.Module, reference: torch.nn.Module, pairs: list[Any], pad_id: int,
              batch_size: int, dtype: str = "float32") -> torch.Tensor:
    """Every pair's chosen and rejected log π − log π_ref (flattened, float64), each model's
    log-probabilities computed as the trainer computes them under ``dtype`` autocast."""
    from trainers.data import accelerator, pair_logps

    acc = accelerator("cpu", 1)
    logps = [pair_logps(m, pairs, batch_size, pad_id, acc, dtype, False, name, False).double().flatten()
             for name, m in (("policy", policy), ("reference", reference))]
    return logps[0] - logps[1]


def decompose(policy: torch.nn.Module, reference: torch.nn.Module, pairs: list[Any], pad_id: int,
              batch_size: int, autocast: str | None = None,
              roundings: tuple[str, ...] = tuple(ROUNDINGS)) -> dict[str, Any]:
    """:func:`departure` from the fp32 log-ratios of each of ``roundings`` (:data:`ROUNDINGS`)
    and, if ``autocast`` names a dtype, of the trainer's two ways of computing in it: autocast
    (each weight rounded once) and ``weight_rounding: split`` (:mod:`trainers.split_weights`)."""
    from harness.models import DTYPES
    from trainers.split_weights import split_weight_linears

    exact = logratios(policy, reference, pairs, pad_id, batch_size)
    if not float(exact.std()) > 0:
        raise ValueError("the fp32 log-ratios do not vary across pairs: is the policy its reference?")
    out: dict[str, Any] = {"sequences": len(exact), "fp32_logratio_std": round(float(exact.std()), 4),
                           "fp32_logratio_mean_abs": round(float(exact.abs().mean()), 4),
                           "tolerance": TOLERANCE_TEXT, "variants": {}}
    for rounding in roundings:
        with rounded_linears([policy, reference], rounding):
            out["variants"][rounding] = departure(exact, logratios(policy, reference, pairs, pad_id,
                                                                   batch_size))
    if autocast:
        out["variants"][f"{autocast} autocast"] = departure(
            exact, logratios(policy, reference, pairs, pad_id, batch_size, autocast))
        undo = [split_weight_linears(m, DTYPES[autocast]) for m in (policy, reference)]
        try:
            out["variants"][f"{autocast} autocast, split weights"] = departure(
                exact, logratios(policy, reference, pairs, pad_id, batch_size, autocast))
        finally:
            for u in undo:
                u()
    return out


def run_checkpoints(run: Path, iteration: int | None) -> tuple[int, str, str, Path, dict[str, Any]]:
    """(t, policy path, reference path, iteration t's preferences, training config) of ``run``."""
    meta = read_json(run / "run.json")
    done = sorted(int(p.parent.name.split("-")[1]) for p in run.glob("iter-*/checkpoint"))
    t = iteration or (done[-1] if done else 0)
    if t not in done:
        raise SystemExit(f"{run}: no checkpoint of iteration {t} (found {done or 'none'})")
    reference = str(run / f"iter-{t - 1}" / "checkpoint") if t > 1 else meta["base_model_path"]
    return t, str(run / f"iter-{t}" / "checkpoint"), reference, run / f"iter-{t}" / "preferences.jsonl", \
        meta["config"]["training"]


def main() -> None:
    from trainers.data import load_pairs

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=Path("runs/ci-smoke"))
    ap.add_argument("--iteration", type=int, help="default: the run's last trained iteration")
    ap.add_argument("--pairs", type=int, help="the first N pairs (default: all)")
    ap.add_argument("--autocast", action="store_true", help="also real bf16 autocast (slow without "
                                                              "bf16 matmul instructions)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/logratio_precision.json"))
    args = ap.parse_args()
    t, policy_path, reference_path, prefs, training = run_checkpoints(args.run, args.iteration)
    tok = load_tokenizer(reference_path)
    pairs = load_pairs(prefs, tok, training["max_length"], training["max_prompt_length"])[: args.pairs]
    policy, reference = load_model(policy_path, "float32"), load_model(reference_path, "float32")
    result = decompose(policy, reference, pairs, tok.pad_token_id, training["per_device_batch_size"],
                       "bfloat16" if args.autocast else None)
    steps = sum(1 for _ in (args.run / f"iter-{t}" / "train_log.jsonl").open())
    write_json(args.out, {
        "benchmark": "logratio_precision", "run": str(args.run), "autocast": args.autocast,
        "run_git_sha": read_json(args.run / "run.json").get("git_sha"), "iteration": t,
        "training_steps": steps, "learning_rate": training["learning_rate"],
        "optimizer": training["optimizer"], "pairs": len(pairs), "machine": machine(),
        "threads": torch.get_num_threads(), "packages": package_versions(), **result})
    print(json.dumps(result, indent=1))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
