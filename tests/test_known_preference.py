"""SPPO learns a known preference on the embedded SmolLM2-135M-Instruct.

The ranker is synthetic and its preference known: a response scores ``SCALE`` when it matches
``TARGET`` (it opens with the word "The") and 0 otherwise, so P(y ≻ y') = σ(s − s') under the
harness's Bradley–Terry reading. Everything else is the project's own code:
``TransformersModel.sample`` (K = 5 seeded samples per prompt, bf16), ``preference_row``,
``get_trainer("native")`` with the ``sppo`` loss and reference = previous iterate, disjoint
prompt slices per iteration from the embedded set, and ``harness.evaluate.win_rate`` on the
held-out prompts (the embedded set's last 64, never trained on): one response of the base and one
of the final checkpoint per prompt, same seed, ties ½.

Why this target: a preference for containing a word anywhere (tried: "you", in 13% of base
samples) moved the held-out rate only from 20% to 28–30% in two iterations of 48–64 prompts,
54–55% ± 2.5–3 win rate, not significant within this test's budget; the response's first word is
one decision shared by every prompt, and SPPO learns it in two small iterations.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from harness.artifacts import write_jsonl
from harness.config import TrainingConfig
from harness.evaluate import win_rate
from harness.generate import Sampling
from harness.models import load_model, load_tokenizer, resolve_source
from harness.probabilities import preference_row
from harness.prompts import Prompt, load_source
from harness.under_test.hf import TransformersModel
from trainers import TrainRequest, get_trainer

pytestmark = pytest.mark.slow

# The known preference: a response that opens with the word "The" beats one that does not.
# The base model opens 23% of its training-prompt samples and 28% of its held-out samples with it.
TARGET = r"^The\b"
SCALE = 3.0  # σ(3) = 0.95: the preference's strength, P(target ≻ no target)
ITERATIONS = 2
PROMPTS_PER_ITERATION = 32
HELDOUT = 64  # the embedded set's held-out slice (PromptsConfig.heldout_size default)
MAX_NEW_TOKENS = 24
SEEDS = (0, 50, 100, 150, 200)  # the harness's default K = 5 sampling seeds
EVAL_SEED = 7
TRAINING = {
    "loss": "sppo", "beta": 0.1, "optimizer": "adamw", "learning_rate": 5e-5,
    "lr_scheduler": "constant", "warmup_ratio": 0.0, "epochs": 1, "global_batch_size": 4,
    "per_device_batch_size": 4, "max_length": 320, "max_prompt_length": 256, "dtype": "bfloat16",
}


class KeywordRanker:
    """A ranker with a known preference: ``scale`` if the pattern occurs, else 0."""

    def __init__(self, pattern: str, scale: float) -> None:
        self.name = f"keyword:{pattern}"
        self.pattern = re.compile(pattern)
        self.scale = scale

    def has(self, text: str) -> bool:
        return self.pattern.search(text) is not None

    def score(self, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        return [[self.scale * self.has(c) for c in cands] for cands in candidates]


def sample(path: str, prompts: list[Prompt], seeds: tuple[int, ...]) -> list[list[str]]:
    model = load_model(path, "bfloat16")
    gen = TransformersModel(model, load_tokenizer(path), batch_size=16, progress=False)
    sampling = Sampling(seeds, temperature=0.7, top_p=0.9, max_new_tokens=MAX_NEW_TOKENS)
    return [g.responses for g in gen.sample(prompts, sampling)]


def run_sppo(tmp_path: Path, ranker: KeywordRanker, training: dict, iterations: int,
             per_iteration: int, log=print) -> dict:
    base = resolve_source("embedded:smollm2-135m")
    prompts = load_source("embedded")
    train_prompts, heldout = prompts[:-HELDOUT], prompts[-HELDOUT:]
    assert iterations * per_iteration <= len(train_prompts)
    config = TrainingConfig(**training)
    policy, history = base, []
    for t in range(1, iterations + 1):
        start = time.perf_counter()
        chunk = train_prompts[(t - 1) * per_iteration : t * per_iteration]
        responses = sample(policy, chunk, SEEDS)
        scores = ranker.score([p.prompt for p in chunk], responses)
        rows = [preference_row(p.prompt_id, p.prompt, r, s)
                for p, r, s in zip(chunk, responses, scores, strict=True)]
        prefs = tmp_path / f"iter-{t}" / "preferences.jsonl"
        prefs.parent.mkdir(parents=True)
        write_jsonl(prefs, rows)
        generated = time.perf_counter()
        out = tmp_path / f"iter-{t}" / "checkpoint"
        out.mkdir()
        result = get_trainer("native").train(TrainRequest(
            model_path=policy, reference_path=policy, preferences=prefs, output_dir=out,
            log_path=tmp_path / f"iter-{t}" / "train_log.jsonl", config=config, seed=t,
            progress=False))
        flat = [x for s in scores for x in s]
        info = {
            "iteration": t,
            "target_rate": sum(x > 0 for x in flat) / len(flat),
            "mixed_prompts": sum(len(set(s)) > 1 for s in scores),
            "loss_first": result.losses[0], "loss_last": result.losses[-1],
            "logratios_after": result.logratios_after,
            "generate_s": generated - start, "train_s": time.perf_counter() - generated,
        }
        log(f"iter {t}: {info}")
        history.append(info)
        policy = str(out)
    start = time.perf_counter()
    base_out = [r[0] for r in sample(base, heldout, (EVAL_SEED,))]
    new_out = [r[0] for r in sample(policy, heldout, (EVAL_SEED,))]
    prompts_h = [p.prompt for p in heldout]
    base_scores = [s[0] for s in ranker.score(prompts_h, [[r] for r in base_out])]
    new_scores = [s[0] for s in ranker.score(prompts_h, [[r] for r in new_out])]
    res = win_rate(base_scores, new_scores)
    res["base_target_rate"] = sum(x > 0 for x in base_scores) / HELDOUT
    res["new_target_rate"] = sum(x > 0 for x in new_scores) / HELDOUT
    res["eval_s"] = time.perf_counter() - start
    res["history"] = history
    res["examples"] = [(b, n) for b, n in zip(base_out, new_out, strict=True)][:3]
    log(f"held-out: {res}")
    return res


def test_sppo_learns_a_known_preference(tmp_path: Path) -> None:
    """The final iterate beats the base under the known preference on held-out prompts.

    Measured (2 iterations × 32 prompts, 24 new tokens, torch's default 2 threads): "The" opens
    28% of the base's held-out responses and 92% of the final iterate's; win rate 82.0% ± 3.0
    (SE; 41 wins, 0 losses, 23 ties), so mean − 2·SE = 76.0% (with 1 thread, whose bf16 sums
    differ slightly: 94%, 82.8% ± 3.0). With the sppo loss's sign flipped (a scratch run, the
    loss patched in memory) the same run gives 43.0% ± 2.2 (0 wins, 9 losses) and this test
    fails. Tolerance: mean − 2·SE above 50%.

    Time: 97 s on the idle 2-core machine (generation 16 s and training 26 s per iteration).
    While another process held one core it took 24 minutes: two torch threads on a shared core
    run about 10× slower (one thread: about 150 s under the same load). No timing is asserted.
    """
    start = time.perf_counter()
    res = run_sppo(tmp_path, KeywordRanker(TARGET, SCALE), TRAINING, ITERATIONS,
                   PROMPTS_PER_ITERATION)
    print(f"\nwin rate {res['win_rate']:.1f}% ± {res['standard_error']:.1f} (SE), "
          f"'{TARGET}' in {100 * res['base_target_rate']:.0f}% of base and "
          f"{100 * res['new_target_rate']:.0f}% of final held-out responses; "
          f"{time.perf_counter() - start:.0f} s")
    assert res["win_rate"] - 2 * res["standard_error"] > 50.0
