from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.artifacts import read_jsonl, write_jsonl
from harness.config import TrainingConfig
from trainers import TrainRequest, get_trainer

ROWS = [
    {"prompt_id": "a", "prompt": "Name a colour.", "chosen": "Blue is a colour.", "rejected": "Dog",
     "chosen_probs": 0.9, "chosen_probs_win": 0.8, "chosen_probs_lose": 0.2},
    {"prompt_id": "b", "prompt": "Add 2 and 3.", "chosen": "2 + 3 = 5", "rejected": "7, surely.",
     "chosen_probs": 0.7, "chosen_probs_win": 0.65, "chosen_probs_lose": 0.35},
    {"prompt_id": "c", "prompt": "Say hello politely.", "chosen": "Hello, nice to meet you!",
     "rejected": "hi", "chosen_probs": 0.6, "chosen_probs_win": 0.55, "chosen_probs_lose": 0.45},
]


def _train(tmp_path: Path, model_dir: Path, name: str, **overrides):
    prefs = tmp_path / "preferences.jsonl"
    write_jsonl(prefs, ROWS)
    cfg = TrainingConfig(**{"learning_rate": 1e-3, "global_batch_size": 3,
                            "per_device_batch_size": 3, "max_length": 128,
                            "max_prompt_length": 64, "dtype": "float32", "beta": 0.1,
                            "epochs": 2, **overrides})
    out = tmp_path / name
    out.mkdir()
    result = get_trainer("native").train(TrainRequest(
        model_path=str(model_dir), reference_path=str(model_dir), preferences=prefs,
        output_dir=out, log_path=tmp_path / f"{name}.jsonl", config=cfg, seed=7, progress=False))
    return result, out, read_jsonl(tmp_path / f"{name}.jsonl")


def test_first_step_loss_is_the_formula_at_zero_logratio(tmp_path: Path, tiny_model_dir: Path) -> None:
    result, _, log = _train(tmp_path, tiny_model_dir, "run")
    eta = 1 / 0.1
    want = sum(0.5 * ((eta * (r["chosen_probs_win"] - 0.5)) ** 2
                      + (eta * (r["chosen_probs_lose"] - 0.5)) ** 2) for r in ROWS) / len(ROWS)
    assert log[0]["loss"] == pytest.approx(want, rel=1e-6)
    assert log[0]["chosen_logratio"] == pytest.approx(0.0, abs=1e-4)
    assert [r["step"] for r in log] == [1, 2] and result.steps == 2
    assert {"step", "loss", "lr", "grad_norm", "chosen_logratio", "rejected_logratio"} <= set(log[0])
    # SPPO pushes the chosen response up and the rejected one down against the reference.
    assert result.logratios_after["chosen"] > 0 > result.logratios_after["rejected"]


def test_training_is_deterministic_under_a_seed(tmp_path: Path, tiny_model_dir: Path) -> None:
    r1, out1, _ = _train(tmp_path, tiny_model_dir, "one")
    r2, out2, _ = _train(tmp_path, tiny_model_dir, "two")
    assert r1.losses == r2.losses
    w1, w2 = load_file(out1 / "model.safetensors"), load_file(out2 / "model.safetensors")
    assert w1.keys() == w2.keys()
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    before = load_file(tiny_model_dir / "model.safetensors")
    assert any(not torch.equal(before[k], w1[k]) for k in w1)  # it did train


def test_micro_batching_does_not_change_the_maths(tmp_path: Path, tiny_model_dir: Path) -> None:
    full, _, _ = _train(tmp_path, tiny_model_dir, "full", per_device_batch_size=3)
    micro, _, _ = _train(tmp_path, tiny_model_dir, "micro", per_device_batch_size=1)
    assert micro.losses == pytest.approx(full.losses, rel=1e-5)


def test_unknown_trainer_is_named() -> None:
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown trainer 'deepmagic'.*native"):
        get_trainer("deepmagic")


@pytest.mark.parametrize("bad", [float("nan"), 1.5, "0.7"])
def test_bad_probability_is_named(tmp_path: Path, tiny_model_dir: Path, bad) -> None:
    import json

    from harness.errors import DataError
    from harness.models import load_tokenizer
    from trainers.data import load_pairs

    prefs = tmp_path / "preferences.jsonl"  # written by hand: the harness never writes NaN
    prefs.write_text("".join(json.dumps(r) + "\n" for r in [ROWS[0], {**ROWS[1], "chosen_probs_lose": bad}]))
    with pytest.raises(DataError, match=r"row 1 \(b\) has chosen_probs_lose="):
        load_pairs(prefs, load_tokenizer(str(tiny_model_dir)), 128, 64)


def test_a_short_last_step_takes_the_mean_over_its_own_examples(tmp_path: Path,
                                                                 tiny_model_dir: Path) -> None:
    # At a learning rate too small to move the policy, every log-ratio stays 0 and an SPPO step's
    # loss is the mean of ½[(η(P_win − ½))² + (η(P_lose − ½))²] over the examples it took.
    from training_runs import rows, train

    from trainers.data import plan

    cfg = {"epochs": 1, "last_batch": "partial", "global_batch_size": 12, "learning_rate": 1e-12}
    result, log = train(tmp_path, tiny_model_dir, "native", "partial", **cfg)
    batches = plan(16, TrainingConfig(**{"per_device_batch_size": 2, **cfg}), seed=3).batches
    assert [len(b) for b in batches] == [12, 4] and [r["epoch"] for r in log] == [0.75, 1.0]
    eta, data = 1 / 0.1, rows()
    want = [sum(0.5 * ((eta * (data[i]["chosen_probs_win"] - 0.5)) ** 2
                       + (eta * (data[i]["chosen_probs_lose"] - 0.5)) ** 2) for i in b) / len(b)
            for b in batches]
    assert result.losses == pytest.approx(want, rel=1e-4)


def test_split_weights_are_what_the_trainer_computes_with(tmp_path: Path, tiny_model_dir: Path) -> None:
    """With ``weight_rounding: split`` the reference and after-training passes (and so the loop,
    which shares their forward) read the weights as two bf16 parts: the trainer's reported
    log-ratios are those of the saved checkpoint recomputed that way, not autocast's."""
    from accelerate import Accelerator

    from harness.models import load_model, load_tokenizer
    from trainers.data import load_pairs, pair_logps
    from trainers.split_weights import split_weight_linears

    result, out, _ = _train(tmp_path, tiny_model_dir, "split", dtype="bfloat16", weight_rounding="split",
                            learning_rate=1e-5)
    tok = load_tokenizer(str(tiny_model_dir))
    pairs = load_pairs(tmp_path / "preferences.jsonl", tok, 128, 64)
    policy, reference = (load_model(str(path), "float32", attn_implementation="auto")  # the trainer's
                         for path in (out, tiny_model_dir))

    def chosen() -> float:
        lp = [pair_logps(m, pairs, 3, tok.pad_token_id, Accelerator(cpu=True), "bfloat16", False, "", False)
              for m in (policy, reference)]
        return float((lp[0] - lp[1])[:, 0].mean())

    single = chosen()
    for m in (policy, reference):
        split_weight_linears(m, torch.bfloat16)
    assert result.logratios_after["chosen"] == chosen()
    assert abs(single - chosen()) > 1e-4  # the check can tell the two arithmetics apart
