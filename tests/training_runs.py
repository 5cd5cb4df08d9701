"""Training runs on the tiny model, shared by the backend and distributed-training tests: every
run reads the same preference rows, so per-step losses compare across backends and launches."""

from __future__ import annotations

import random
from pathlib import Path

from harness.artifacts import read_jsonl, write_jsonl
from harness.config import TrainingConfig
from trainers import TrainRequest, get_trainer, launch
from trainers.base import TrainResult


def rows(n: int = 16) -> list[dict]:
    """Preference rows of varied lengths with random SPPO probabilities (seeded)."""
    rnd = random.Random(0)
    words_good, words_bad = ["good", "fine", "yes", "clear", "kind"], ["bad", "no", "meh"]
    return [{
        "prompt_id": str(i),
        "prompt": f"Question {i}: tell me about {rnd.choice(['cats', 'dogs', 'maths'])}.",
        "chosen": " ".join(rnd.choice(words_good) for _ in range(rnd.randint(2, 9))),
        "rejected": " ".join(rnd.choice(words_bad) for _ in range(rnd.randint(1, 7))),
        "chosen_probs": rnd.uniform(0.5, 1.0),
        "chosen_probs_win": rnd.uniform(0.5, 1.0),
        "chosen_probs_lose": rnd.uniform(0.0, 0.5),
    } for i in range(n)]


def train(tmp: Path, model_dir: Path, trainer: str, name: str, processes: int = 0,
          accelerate_config: str | None = None, **overrides) -> tuple[TrainResult, list[dict]]:
    """Train ``model_dir`` on :func:`rows` (written once into ``tmp``) into ``tmp/name``, in this
    process or, with ``processes``, through ``accelerate launch``; the result and the step log."""
    prefs = tmp / "preferences.jsonl"
    if not prefs.exists():
        write_jsonl(prefs, rows())
    cfg = TrainingConfig(**{"loss": "sppo", "learning_rate": 1e-3, "global_batch_size": 8,
                            "per_device_batch_size": 2, "max_length": 128,
                            "max_prompt_length": 64, "dtype": "float32", "beta": 0.1,
                            "epochs": 5, **overrides})
    out = tmp / name
    out.mkdir(exist_ok=True)  # a second call with the same name resumes (training.save_steps)
    request = TrainRequest(model_path=str(model_dir), reference_path=str(model_dir),
                           preferences=prefs, output_dir=out, log_path=tmp / f"{name}.jsonl",
                           config=cfg, seed=3, progress=False, state_dir=tmp / f"{name}.state")
    result = (launch.run(trainer, request, processes, accelerate_config) if processes
              else get_trainer(trainer).train(request))
    return result, read_jsonl(tmp / f"{name}.jsonl")


def rel_diff(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b) and a
    return max(abs(x - y) / abs(x) for x, y in zip(a, b, strict=True))
