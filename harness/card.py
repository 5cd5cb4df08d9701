"""``harness card``: a Hugging Face model card and alpaca_eval model config for one checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.artifacts import write_text_atomic
from harness.errors import DataError
from harness.leaderboard import build, to_markdown
from harness.results import label, run_cells
from harness.run_dir import RunDir

CARD_PROVENANCE = ("judge", "baseline", "n_examples", "limit", "profile")
EMBEDDED_HUB_IDS = {"embedded:smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def _metadata(cfg: dict[str, Any], name: str, results: list[Any]) -> dict[str, Any]:
    source = cfg["model"]["source"]
    datasets = sorted({s.split(":")[1] for s in cfg["prompts"]["iterations"] if s.startswith("hf:")})
    meta: dict[str, Any] = {
        "base_model": EMBEDDED_HUB_IDS.get(source, source),
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["sppo", "self-play-preference-optimization", "sppo-harness"],
    }
    if cfg["model"].get("license"):
        meta["license"] = cfg["model"]["license"]
    if datasets:
        meta["datasets"] = datasets
    def described(c: Any) -> str:
        prov = ", ".join(f"{k} {c.provenance[k]}" for k in CARD_PROVENANCE
                         if c.provenance.get(k) is not None)
        se = f" ± {c.se:.2f}" if c.se is not None else ""
        return f"{label(c.benchmark, c.metric)}{se} ({prov})"

    metrics = [{"type": f"{c.benchmark}/{c.metric}", "value": round(c.value, 4), "name": described(c)}
               for c in results if c.value is not None]
    if metrics:
        meta["model-index"] = [{"name": name, "results": [{
            "task": {"type": "text-generation"},
            "dataset": {"name": "sppo-harness evaluations", "type": "sppo-harness"},
            "metrics": metrics,
            "source": {"name": "sppo-harness", "url": "https://arxiv.org/abs/2405.00675"},
        }]}]
    return meta


def _estimator(cfg: dict[str, Any]) -> str:
    """How the ranker's output became win probabilities (runs made before ``preferences``
    existed used the defaults: scores, distinct)."""
    prefs = {"probabilities": "scores", "ties": "distinct", **(cfg.get("preferences") or {})}
    how = ("σ(s_i − s_j) of its scores (official `compute_prob.py`)"
           if prefs["probabilities"] == "scores"
           else "its pairwise comparisons, both orders, symmetrised (the paper's estimator)")
    return f"win probabilities from {how}; ties `{prefs['ties']}`"


def _split_note(training: dict[str, Any]) -> str:
    """What ``training.weight_rounding: split`` changed, where the run used it."""
    if training.get("weight_rounding") != "split" or training["dtype"] == "float32":
        return ""
    return " (each fp32 master weight read as two parts, fp32 logits: `weight_rounding: split`)"


def write_card(run: Path, t: int) -> Path:
    """Write README.md (card) and models_configs/<name>/ into iteration t's checkpoint."""
    from harness.benchmarks.alpaca_eval import write_model_config
    from harness.models import load_tokenizer

    rd = RunDir(run)
    rd.load()
    ckpt = rd.checkpoint(t)
    if t < 1 or not (ckpt / "config.json").is_file():
        raise DataError(f"{ckpt}: no trained checkpoint for iteration {t} in this run")
    cfg = rd.meta["config"]
    name = f"{cfg['name']}-sppo-iter{t}"
    results = [c for c in run_cells(run) if c.iteration == t]
    meta = _metadata(cfg, name, results)
    tr, smp = cfg["training"], cfg["sampling"]
    table = to_markdown(build([run]))
    warning = ("\n> **Smoke profile**: a few prompts and short generations on a CPU, judged by a "
               "135M model. These numbers show the pipeline working, not model quality.\n"
               if cfg.get("profile") == "smoke" else "")
    body = f"""
# {name}

Iteration {t} of Self-Play Preference Optimization ([SPPO](https://arxiv.org/abs/2405.00675)) on
`{meta['base_model']}`, trained with sppo-harness (git
{rd.meta.get('git_sha')}).
{warning}
## Training

- Policy and reference: iteration {t - 1} ({'the base model' if t == 1 else f'SPPO Iter{t - 1}'}); the
  reference log-probabilities were computed once before training.
- Preference data: K = {smp['k']} samples per prompt (seeds {smp['seeds']}, T {smp['temperature']},
  top-p {smp['top_p']}, {smp['max_new_tokens']} new tokens), ranked by `{cfg['ranker']}`
  ({_estimator(cfg)});
  prompts from `{cfg['prompts']['iterations'][min(t, len(cfg['prompts']['iterations'])) - 1]}`.
- Loss `{tr['loss']}`, β {tr['beta']} (η = {1 / tr['beta']:g}); {tr['optimizer']} lr {tr['learning_rate']},
  {tr['lr_scheduler']} schedule, warm-up {tr['warmup_ratio']}; global batch {tr['global_batch_size']};
  max length {tr['max_length']} / prompt {tr['max_prompt_length']}, token layout
  `{tr.get('layout', 'clean')}`; clipping {tr.get('max_grad_norm') or 'none'}; {tr['epochs']} epoch(s),
  last batch `{tr.get('last_batch', 'wrap')}`; {tr['dtype']}{_split_note(tr)}; trainer `{cfg['trainer']}`;
  profile `{cfg.get('profile')}`.

## Results (this run; see the notes for each column's protocol)

{table}
`models_configs/{name}/` holds the alpaca_eval model config of this checkpoint (replace
`model_name` with its hub id before submitting to the AlpacaEval leaderboard).
"""
    text = "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n" + body
    write_text_atomic(ckpt / "README.md", text)
    ae = cfg.get("evaluation", {}).get("alpaca_eval", {})
    decoding = {"temperature": smp["temperature"], "top_p": smp["top_p"],
                "max_new_tokens": smp["max_new_tokens"]}
    decoding.update({k: v for k, v in (ae.get("decoding") or {}).items() if v is not None})
    write_model_config(ckpt, name, str(ckpt.resolve()), load_tokenizer(str(ckpt)), decoding,
                       smp["dtype"])
    return ckpt / "README.md"
