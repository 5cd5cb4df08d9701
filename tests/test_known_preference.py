"""SPPO learns a known preference on the embedded SmolLM2-135M-Instruct.

The ranker is a plug-in with a known preference: a response scores ``SCALE`` when it matches
``TARGET`` (it opens with the word "The") and 0 otherwise, so P(y ≻ y') = σ(s − s') under the
harness's Bradley–Terry reading. Everything else is the real pipeline (``SPPORun``, as
``harness run`` drives it): K = 5 seeded samples per prompt (dtype auto), the rank, probability and
train stages (native backend, ``sppo`` loss, reference = previous iterate), disjoint prompt slices
per iteration from the embedded set, and the in-loop win rate against the base on the held-out
prompts (the embedded set's last 64, never trained on), scored by the same ranker, ties ½.

Why this target: a preference for containing a word anywhere (tried: "you", in 13% of base
samples) moved the held-out rate only from 20% to 28–30% in two iterations of 48–64 prompts,
54–55% ± 2.5–3 win rate, not significant within this test's budget; the response's first word is
one decision shared by every prompt, and SPPO learns it in two small iterations.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from harness.config import RunConfig
from harness.pipeline import RunOptions, SPPORun
from harness.rank import register

pytestmark = pytest.mark.slow

# The known preference: a response that opens with the word "The" beats one that does not.
# The base model opens about a quarter of its samples with it.
TARGET = r"^The\b"
SCALE = 3.0  # σ(3) = 0.95: the preference's strength, P(target ≻ no target)
RANKER = "keyword-the"
CONFIG = {
    "name": "known-preference",
    "model": {"source": "embedded:smollm2-135m"},
    "sampling": {"k": 5, "seeds": [0, 50, 100, 150, 200], "temperature": 0.7, "top_p": 0.9,
                 "max_new_tokens": 24, "batch_size": 16, "dtype": "auto"},
    "training": {"loss": "sppo", "beta": 0.1, "optimizer": "adamw", "learning_rate": 5e-5,
                 "lr_scheduler": "constant", "warmup_ratio": 0.0, "epochs": 1,
                 "global_batch_size": 4, "per_device_batch_size": 4, "max_length": 320,
                 "max_prompt_length": 256, "dtype": "auto"},
    # two iterations of 32 prompts each; the embedded set's last 64 are held out
    "prompts": {"iterations": ["embedded", "embedded"], "per_iteration": 32, "heldout_size": 64},
    "evaluation": {"benchmarks": ["win_rate_vs_base"]},
    "ranker": RANKER,
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


@register(RANKER)
def _keyword_ranker(**_) -> KeywordRanker:
    return KeywordRanker(TARGET, SCALE)


def test_sppo_learns_a_known_preference(tmp_path: Path) -> None:
    """The final iterate beats the base under the known preference on held-out prompts.

    Measured through the pipeline (one torch thread, as CI runs it): "The" opens 34% and then
    63% of the two iterations' training samples, 28% of the base's held-out responses and 95%
    of the final iterate's; win rate 83.6% ± 3.0 (SE), so mean − 2·SE = 77.6%. With the sppo
    loss's targets swapped (P_win for P_lose, patched in memory: the preference reversed) the same
    run gives 6% of the second iteration's samples, 5% of the final held-out responses and a win
    rate of 38.3% ± 2.7, and this test fails. Tolerance: mean − 2·SE above 50%.

    Time: 256 s with one thread while another process held the second core (the old loop took
    97 s on an idle machine with two threads; two torch threads on a shared core run about 10x
    slower, 20 minutes here). No timing is asserted.
    """
    start = time.perf_counter()
    out = tmp_path / "run"
    SPPORun(RunConfig(**CONFIG), RunOptions(iters=2, out=out, progress=False)).run()
    ranker = KeywordRanker(TARGET, SCALE)
    # the known preference was what the ranker gave the trainer: the target's share of samples
    for t in (1, 2):
        rows = [json.loads(x) for x in (out / f"iter-{t}" / "scores.jsonl").read_text().splitlines()]
        assert len(rows) == 32 and {r["ranker"] for r in rows} == {ranker.name}
        gens = [json.loads(x) for x in (out / f"iter-{t}" / "generations.jsonl").read_text().splitlines()]
        share = sum(map(ranker.has, (y for g in gens for y in g["responses"]))) / (5 * len(gens))
        print(f"iter {t}: '{TARGET}' opens {100 * share:.0f}% of the training samples")
    heldout = out / "iter-2" / "eval" / "win_rate_vs_base"
    res = json.loads((heldout / "results.json").read_text())["metrics"]
    scores = [json.loads(x) for x in (heldout / "scores.jsonl").read_text().splitlines()]
    assert len(scores) == 64
    base_rate = sum(r["base_score"] > 0 for r in scores) / 64
    new_rate = sum(r["score"] > 0 for r in scores) / 64
    print(f"\nwin rate {res['win_rate']:.1f}% ± {res['standard_error']:.1f} (SE), '{TARGET}' in "
          f"{100 * base_rate:.0f}% of base and {100 * new_rate:.0f}% of final held-out responses; "
          f"{time.perf_counter() - start:.0f} s")
    assert res["win_rate"] - 2 * res["standard_error"] > 50.0
