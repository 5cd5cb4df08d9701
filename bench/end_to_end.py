"""One SPPO iteration on 64 prompts: the harness against the same iteration done the official way.

Both sides start from the embedded model, use the smoke profile's lengths, hyper-parameters and
dtype (bf16), the same prompts and the same seeds, and each runs in its own process so its peak
memory is its own:

- **harness**: ``python -m harness run --iters 1`` with the smoke profile cut to 64 prompts and no
  benchmarks: generate (one K·48-row pass per batch of 48 prompts, prefill shared), rank (the
  offline default ranker, batches of 16), probabilities, train (``native``: reference
  log-probabilities computed once, then the policy alone in the loop), checkpoint.
- **official**: the shape of the SPPO repository's scripts: K seeded generation passes over all
  prompts, ranking one candidate at a time (the official script calls PairRM with
  ``batch_size=1``; here the same ranker as the harness's), the same probability arithmetic, and
  TRL's ``DPOTrainer`` (the official trainer is a subclass) with the reference model forwarded at
  every step, on text it tokenises itself, then the checkpoint.

    python -m bench.end_to_end                       # 64 prompts, bf16
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from harness.allocator import keep_large_blocks
from harness.artifacts import write_json
from harness.provenance import machine, package_versions

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("generate", "rank", "probabilities", "train")


def harness_config(work: Path, prompts: int) -> Path:
    """The embedded model's config with its smoke profile cut to ``prompts`` prompts, no benchmarks."""
    cfg = yaml.safe_load((ROOT / "model_configs" / "smollm2-135m.yaml").read_text())
    smoke = cfg["profiles"]["smoke"]
    smoke["prompts"] = {"per_iteration": prompts, "heldout_size": 64}
    smoke["evaluation"] = {"benchmarks": []}
    path = work / "bench-e2e.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_harness(work: Path, prompts: int, seed: int) -> dict[str, Any]:
    out = work / "harness-run"
    cmd = [sys.executable, "-m", "harness", "run", "--base", str(harness_config(work, prompts)),
           "--iters", "1", "--profile", "smoke", "--seed", str(seed), "--out", str(out), "--no-progress"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    total = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"harness run failed:\n{done.stderr[-3000:]}")
    stages = json.loads((out / "run.json").read_text())["stages"]
    return {"seconds": round(total, 2),
            "stages": {s: stages[f"iter-1/{s}"]["seconds"] for s in STAGES},
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 2),
            "train_steps": stages["iter-1/train"].get("steps"),
            "out": str(out)}


def official(work: Path, prompts: int, seed: int) -> dict[str, Any]:
    """The official recipe's shape, in this process (run as a child by :func:`main`)."""
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from harness.config import load_config
    from harness.generate import Sampling, chat_prompt
    from harness.models import load_model, load_tokenizer, resolve_source
    from harness.probabilities import preference_row
    from harness.prompts import iteration_prompts
    from harness.rank.embedded import YesNoJudgeRanker
    from harness.under_test.hf import TransformersModel

    cfg = load_config(str(harness_config(work, prompts)), profile="smoke")
    path = resolve_source(cfg.model.source)
    tok = load_tokenizer(path)
    chosen = iteration_prompts(cfg, 1)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    # loaded as the harness loads a model under test (its CPU decoding attention): the two sides
    # differ in how they batch, rank and train, not in their kernels
    gen = TransformersModel.load(path, dtype=cfg.sampling.dtype, device="cpu",
                                 batch_size=cfg.sampling.batch_size, progress=False)
    per_seed = [gen.sample(chosen, Sampling((s,), cfg.sampling.temperature, cfg.sampling.top_p,
                                              cfg.sampling.max_new_tokens))
                for s in cfg.sampling.seeds]  # K passes over all prompts, one seed each
    responses = [[g[i].responses[0] for g in per_seed] for i in range(len(chosen))]
    timings["generate"] = time.perf_counter() - start

    start = time.perf_counter()
    ranker = YesNoJudgeRanker(load_model(path, cfg.sampling.dtype), tok, "smollm-judge", batch_size=1,
                              progress=False)
    scores = ranker.score([p.prompt for p in chosen], responses)
    timings["rank"] = time.perf_counter() - start

    start = time.perf_counter()
    rows = [preference_row(p.prompt_id, p.prompt, r, s) for p, r, s in
            zip(chosen, responses, scores, strict=True)]
    timings["probabilities"] = time.perf_counter() - start

    del gen, ranker
    start = time.perf_counter()
    t = cfg.training
    steps = math.ceil(len(rows) / t.global_batch_size) * math.ceil(t.epochs)
    data = Dataset.from_list([{"prompt": chat_prompt(tok, r["prompt"]), "chosen": r["chosen"],
                               "rejected": r["rejected"]} for r in rows])
    args = DPOConfig(
        output_dir=str(work / "official-ckpt"), loss_type=["sppo_hard"], beta=t.beta,
        learning_rate=t.learning_rate, lr_scheduler_type="linear",
        warmup_steps=math.ceil(t.warmup_ratio * steps),
        optim="rmsprop", per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.global_batch_size // t.per_device_batch_size,
        num_train_epochs=t.epochs, max_length=t.max_length, bf16=True, use_cpu=True,
        precompute_ref_log_probs=False, save_strategy="no", report_to=[], logging_steps=1,
        seed=seed, disable_tqdm=True)
    trainer = DPOTrainer(model=load_model(path, "float32"), ref_model=load_model(path, "float32"),
                         args=args, train_dataset=data, processing_class=tok)
    trainer.train()
    trainer.save_model(str(work / "official-ckpt"))
    timings["train"] = time.perf_counter() - start
    return {"stages": {k: round(v, 2) for k, v in timings.items()},
            "train_steps": trainer.state.global_step,
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "torch_threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench/results/end_to_end.json"))
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    # both sides with the harness's malloc settings (inherited by the two child processes), so
    # that the ratio compares designs, not allocators
    tuned = keep_large_blocks()
    if args.child:
        print(json.dumps(official(args.child, args.prompts, args.seed)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ours = run_harness(work, args.prompts, args.seed)
        print(json.dumps({"harness": ours}), flush=True)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "bench.end_to_end", "--child", str(work),
                               "--prompts", str(args.prompts), "--seed", str(args.seed)],
                              capture_output=True, text=True, cwd=ROOT)
        if done.returncode:
            sys.exit(f"official path failed:\n{done.stderr[-3000:]}")
        theirs = {"seconds": round(time.perf_counter() - start, 2),
                  **json.loads(done.stdout.strip().splitlines()[-1])}
        print(json.dumps({"official": theirs}), flush=True)
    ours.pop("out")
    result = {"benchmark": "end_to_end", "model": "embedded:smollm2-135m", "prompts": args.prompts,
              "seed": args.seed, "profile": "smoke", "dtype": "bfloat16",
              "harness": ours, "official": theirs,
              "allocator": "glibc's mmap and trim thresholds at 1 GiB (harness/allocator.py)" if tuned
              else "the C library's default malloc",
              "ratio_harness_over_official": round(ours["seconds"] / theirs["seconds"], 3),
              "stage_ratios": {s: round(ours["stages"][s] / theirs["stages"][s], 3)
                               for s in STAGES if theirs["stages"].get(s)},
              "machine": machine(), "packages": package_versions()}
    write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "packages")}, indent=1))


if __name__ == "__main__":
    main()
