"""DeepSpeed ZeRO-3 for real on CPU: two gloo processes through ``accelerate launch`` with the
shipped ``zero3.yaml`` (DeepSpeed is pure Python here: no op is built), against one process.

In float32 the two must take the same steps: ZeRO-3 only changes where parameters, gradients and
optimizer state live and the order of a few float reductions (measured: losses within 3e-7
relative, weights within 2e-7), so the tolerances below (1e-5) are far tighter than any real
difference, such as clipping at 1.0 instead of the configured norm (1e-2 on step 3 here).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_runs import rel_diff, train

from harness.errors import ConfigError, HarnessError


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    return {k: v.detach() for k, v in model.state_dict().items()}


def _assert_same_weights(a: Path, b: Path, atol: float) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert wa[k].dtype == wb[k].dtype == torch.float32, k
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=atol, msg=k)


# ZeRO-3 forwards whole sequences (a pair's prompt in a forward of its own would gather every
# parameter again); gradient checkpointing makes one process do the same, so the two compare
# float for float. It is also the paper recipes' setting.
SAME_FORWARD = {"gradient_checkpointing": True}


def test_zero3_in_two_processes_takes_the_steps_of_one(tmp_path: Path, tiny_model_dir: Path) -> None:
    one, one_log = train(tmp_path, tiny_model_dir, "native", "one", epochs=2, max_grad_norm=0.5,
                         **SAME_FORWARD)
    unclipped, _ = train(tmp_path, tiny_model_dir, "native", "unclipped", epochs=2, **SAME_FORWARD)
    zero3, log = train(tmp_path, tiny_model_dir, "native", "zero3", processes=2,
                       accelerate_config="zero3", epochs=2, max_grad_norm=0.5, **SAME_FORWARD)
    assert zero3.strategy == "DEEPSPEED-3" and one.strategy == "NO"  # not DDP in disguise
    # clipping matters on this run, so equal losses mean ZeRO-3 clipped at 0.5, as configured
    assert rel_diff(unclipped.losses, one.losses) > 1e-3
    assert rel_diff(one.losses, zero3.losses) < 1e-5
    assert [r["grad_norm"] for r in log] == pytest.approx([r["grad_norm"] for r in one_log], rel=1e-5)
    # the checkpoint: the fp32 weights one process saves, gathered from the shards
    _assert_same_weights(tmp_path / "one", tmp_path / "zero3", atol=1e-5)


def test_zero3_resumes_mid_iteration_exactly(tmp_path: Path, tiny_model_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    whole, _ = train(tmp_path, tiny_model_dir, "native", "whole", epochs=2)
    monkeypatch.setenv("SPPO_CRASH_AT", "train/step:3")  # both processes die after step 3's save
    with pytest.raises(HarnessError, match="in 2 processes failed"):
        train(tmp_path, tiny_model_dir, "native", "zero3", processes=2, accelerate_config="zero3",
              epochs=2, save_steps=1)
    monkeypatch.delenv("SPPO_CRASH_AT")
    resumed, log = train(tmp_path, tiny_model_dir, "native", "zero3", processes=2,
                         accelerate_config="zero3", epochs=2, save_steps=1)
    assert resumed.resumed_from_step == 3 and [r["step"] for r in log] == [1, 2, 3, 4]
    assert rel_diff(whole.losses, resumed.losses) < 1e-5
    _assert_same_weights(tmp_path / "whole", tmp_path / "zero3", atol=1e-5)


def test_zero3_with_a_short_last_step_matches_one_process(tmp_path: Path, tiny_model_dir: Path) -> None:
    # 16 pairs in steps of 12 then 4: in the short step each process pads its share with
    # uncounted micro-batches, so both run the same forwards and the loss is the mean over 4
    cfg = {"epochs": 2, "last_batch": "partial", "global_batch_size": 12, **SAME_FORWARD}
    one, _ = train(tmp_path, tiny_model_dir, "native", "one", **cfg)
    zero3, log = train(tmp_path, tiny_model_dir, "native", "zero3", processes=2,
                       accelerate_config="zero3", **cfg)
    assert [r["epoch"] for r in log] == [0.75, 1.0, 1.75, 2.0]
    assert rel_diff(one.losses, zero3.losses) < 1e-5
    assert one.tokens == zero3.tokens  # padding forwards are not counted


def test_zero3_in_bf16_saves_the_fp32_master_weights(tmp_path: Path, tiny_model_dir: Path) -> None:
    # accelerate's own ZeRO-3 save gathers the bf16 compute weights; a checkpoint keeps the fp32
    # master weights under every strategy, as one process (and DDP) saves them.
    one, _ = train(tmp_path, tiny_model_dir, "native", "one", epochs=1, dtype="bfloat16")
    zero3, _ = train(tmp_path, tiny_model_dir, "native", "zero3", processes=2,
                     accelerate_config="zero3", epochs=1, dtype="bfloat16")
    # DeepSpeed computes with bf16 weights, one process with fp32 weights under bf16 autocast:
    # the steps agree to bf16 precision (measured: updates within 2.6 % of their size)
    assert rel_diff(one.losses, zero3.losses) < 2e-2
    start, w1, w3 = _weights(tiny_model_dir), _weights(tmp_path / "one"), _weights(tmp_path / "zero3")
    for k in w1:
        assert w1[k].dtype == w3[k].dtype == torch.float32, k
        assert (w3[k] - w1[k]).norm() < 0.05 * (w1[k] - start[k]).norm(), k


def test_fsdp_on_cpu_is_refused_before_any_process_starts(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="FSDP, which accelerate runs only on GPUs"):
        train(tmp_path, tiny_model_dir, "native", "fsdp", processes=2, accelerate_config="fsdp")
    assert not list(tmp_path.glob("train_*.json"))
