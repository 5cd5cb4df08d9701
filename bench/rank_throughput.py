"""Ranking throughput, batch 1 against batched: PairRM (llm-blender's official batch-1 call against
the harness's batched one) and the offline default ranker (``smollm-judge``, the embedded model).

PairRM's weights are not reachable here, so the model is a randomly initialised PairRM of the real
size (llm-blender's pair-ranker head over a DeBERTa-v3-large backbone, 435M parameters); speed
does not depend on the weights' values. The tokenizer is the test fixture's small sentencepiece
model (tests/fixtures/pairrm_tiny), which cuts text into more pieces than DeBERTa-v3's, so the
token counts per sequence are reported. Inputs: AlpacaEval instructions with K = 5 real answers
(five published annotation files), answers cut to ``--words`` words (smoke-run lengths).

Both paths score the same inputs in the same process, float32 on CPU as the official script runs
there; the scores are compared too. The embedded ranker runs in bf16, as the smoke profile runs it,
on ``--embedded-prompts`` prompts with the same answers.

    python -m bench.rank_throughput                  # 3 prompts x 5 candidates
    python -m bench.rank_throughput --prompts 1 --no-bf16 --embedded-prompts 8
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from harness.agreement import load_annotations
from harness.artifacts import write_json
from harness.provenance import machine, package_versions
from harness.rank.pairrm import PairRMRanker, import_llm_blender, restore_spm_normalizer

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "pairrm_tiny"
ANSWERS = ["alpaca-7b", "gpt-3.5-turbo-1106", "Qwen-14B-Chat", "FuseChat-Qwen-2.5-7B-Instruct",
           "gpt4_1106_preview"]
DEBERTA_V3_LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                    "intermediate_size": 4096, "vocab_size": 128100, "max_position_embeddings": 512,
                    "relative_attention": True, "position_buckets": 256, "norm_rel_ebd": "layer_norm",
                    "share_att_key": True, "pos_att_type": ["p2c", "c2p"], "position_biased_input": False,
                    "type_vocab_size": 0, "layer_norm_eps": 1e-7, "max_relative_positions": -1}


def inputs(n: int, words: int) -> tuple[list[str], list[list[str]]]:
    files = [load_annotations(f"alpaca_eval/annotations/{m}.json") for m in ANSWERS]
    prompts, cands = [], []
    for i in range(n):
        prompts.append(files[0][i]["instruction"])
        cands.append([" ".join(f[i]["output_2"].split()[:words]) for f in files])
    return prompts, cands


def large_blender(work: Path):
    """A Blender holding a random full-size PairRM (no checkpoint: the head stays at its init)."""
    from transformers import DebertaV2Config, DebertaV2Model

    lb = import_llm_blender()
    backbone = work / "backbone"
    shutil.copytree(FIXTURE / "backbone", backbone, ignore=shutil.ignore_patterns("*.safetensors",
                                                                                  "config.json"))
    torch.manual_seed(0)
    DebertaV2Model(DebertaV2Config(**DEBERTA_V3_LARGE)).save_pretrained(backbone)
    cfg = json.loads((FIXTURE / "config.json").read_text())
    cfg.update(model_name=str(backbone), source_maxlength=1224, candidate_maxlength=412, device="cpu")
    blender = lb.Blender()
    blender.ranker_config = lb.pair_ranker.config.RankerConfig.from_dict(cfg)
    blender.ranker, blender.ranker_tokenizer, blender.ranker_collator = \
        lb.blender.blender_utils.load_ranker(blender.ranker_config)
    blender.ranker = blender.ranker.float().eval()
    restore_spm_normalizer(blender.ranker_tokenizer)
    return blender


def embedded_ranker(prompts: list[str], cands: list[list[str]], batch_size: int) -> dict:
    """The offline default ranker (smollm-judge, bf16) at batch 1 and at ``batch_size``."""
    from harness.models import load_model, load_tokenizer, resolve_source
    from harness.rank.embedded import YesNoJudgeRanker

    path = resolve_source("embedded:smollm2-135m")
    model, tok = load_model(path, "bfloat16"), load_tokenizer(path)
    n_cand = sum(map(len, cands))
    out: dict = {"model": "embedded:smollm2-135m", "dtype": "bfloat16", "prompts": len(prompts),
                 "candidates": n_cand}
    YesNoJudgeRanker(model, tok, "smollm-judge", batch_size=1, progress=False).score(prompts[:1], cands[:1])
    scores = {}
    for label, b in (("batch1", 1), ("batched", batch_size)):
        ranker = YesNoJudgeRanker(model, tok, "smollm-judge", batch_size=b, progress=False)
        start = time.perf_counter()
        scores[label] = np.asarray(ranker.score(prompts, cands))
        seconds = time.perf_counter() - start
        out[label] = {"batch_size": b, "seconds": round(seconds, 2),
                      "candidates_per_s": round(n_cand / seconds, 2)}
    out["speedup"] = round(out["batch1"]["seconds"] / out["batched"]["seconds"], 2)
    out["max_abs_score_diff"] = float(np.abs(scores["batch1"] - scores["batched"]).max())
    out["tokens_per_candidate"] = int(np.mean([len(ranker.judge_prompt(p, c)) for p, cs in
                                               zip(prompts, cands, strict=True) for c in cs]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--words", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--no-bf16", dest="bf16", action="store_false",
                    help="skip PairRM in bf16 (not offered by the harness; shown for what it would buy)")
    ap.add_argument("--embedded-prompts", type=int, default=8)
    ap.add_argument("--embedded-batch-size", type=int, default=16, help="the harness's default")
    ap.add_argument("--out", type=Path, default=Path("bench/results/rank_throughput.json"))
    args = ap.parse_args()
    embedded = embedded_ranker(*inputs(args.embedded_prompts, args.words), args.embedded_batch_size)
    print(json.dumps({"embedded": embedded}), flush=True)
    prompts, cands = inputs(args.prompts, args.words)
    n_cand = sum(map(len, cands))
    with tempfile.TemporaryDirectory() as tmp:
        blender = large_blender(Path(tmp))
        params = sum(p.numel() for p in blender.ranker.parameters())
        with torch.inference_mode():
            start = time.perf_counter()
            official = blender.rank(prompts, cands, return_scores=True, batch_size=1, disable_tqdm=True)
            t_official = time.perf_counter() - start
            ranker = PairRMRanker(blender, None, batch_size=args.batch_size, progress=False)
            start = time.perf_counter()
            ours = ranker.score_sources(prompts, cands)
            t_ours = time.perf_counter() - start
            if args.bf16:
                blender.ranker.to(torch.bfloat16)  # what bf16 would buy (not the official CPU dtype)
                start = time.perf_counter()
                ours_bf16 = ranker.score_sources(prompts, cands)
                t_bf16 = time.perf_counter() - start
    tok = blender.ranker_tokenizer
    lengths = [len(tok.encode(p)) + 2 * len(tok.encode(c)) for p, cs in zip(prompts, cands, strict=True)
               for c in cs]
    result = {
        "model": "random PairRM (llm-blender pair-ranker head, DeBERTa-v3-large backbone)",
        "parameters": params, "dtype": "float32", "prompts": len(prompts), "k": len(cands[0]),
        "pair_sequences": len(prompts) * len(cands[0]) * (len(cands[0]) - 1),
        "approx_tokens_per_pair_sequence": int(np.mean(lengths)),
        "official_batch1": {"seconds": t_official, "candidates_per_s": n_cand / t_official},
        "harness_batched": {"seconds": t_ours, "candidates_per_s": n_cand / t_ours,
                            "batch_size": args.batch_size},
        "speedup": t_official / t_ours,
        "max_abs_score_diff": float(np.abs(np.asarray(official) - np.asarray(ours)).max()),
        "harness_batched_bf16": {
            "seconds": t_bf16, "candidates_per_s": n_cand / t_bf16,
            "max_abs_score_diff_vs_fp32": float(np.abs(np.asarray(ours_bf16) - np.asarray(ours)).max()),
            "score_spread_fp32": float(np.ptp(np.asarray(ours)))} if args.bf16 else None,
        "embedded": embedded,
        "gflops_per_s_official": 2 * params * sum(lengths) * (len(cands[0]) - 1) / t_official / 1e9,
        "threads": torch.get_num_threads(), "machine": machine(), "packages": package_versions(),
    }
    write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "packages")}, indent=1))


if __name__ == "__main__":
    main()
