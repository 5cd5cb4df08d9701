"""``dtype: auto``: bfloat16 only where the machine multiplies it natively, resolved when a config
or command line is read, so records and judge ids name the dtype actually used."""

from __future__ import annotations

import pytest

import harness.precision as precision
from harness.config import load_config
from harness.judges.config import load_judge_config

AVX512_BF16, AVX2_ONLY = True, False  # whether torch's CPU bf16 matmuls go to oneDNN there


@pytest.fixture
def cpu(monkeypatch: pytest.MonkeyPatch):
    """Pretend to be a CPU-only machine whose bf16 matmuls are native, or not."""
    import torch

    def use(native: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(precision, "cpu_bf16_is_native", lambda: native)
        precision.auto_dtype.cache_clear()

    yield use
    precision.auto_dtype.cache_clear()


def test_this_cpus_bf16_check_agrees_with_its_flags() -> None:
    """torch's check is True on a CPU with bf16 instructions and False on x86 without AVX-512."""
    import platform

    _, flags = precision.cpu_model_and_flags()
    native = precision.cpu_bf16_is_native()
    if any(f in flags for f in precision.NATIVE_BF16_CPU_FLAGS):
        assert native, flags
    if platform.machine() == "x86_64" and "avx512f" not in flags:
        assert not native, flags


@pytest.mark.parametrize(("flags", "want"), [(["avx2", "avx512f", "avx512_bf16"], True),
                                             (["avx2", "amx_bf16"], True), (["avx2"], False)])
def test_without_torchs_check_the_cpu_flags_decide(monkeypatch: pytest.MonkeyPatch, flags: list[str],
                                                   want: bool) -> None:
    import torch

    def unavailable() -> bool:
        raise RuntimeError("no mkldnn")

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", unavailable)
    monkeypatch.setattr(precision, "cpu_model_and_flags", lambda: ("cpu", flags))
    assert precision.cpu_bf16_is_native() is want


@pytest.mark.parametrize(("native", "want"), [(AVX512_BF16, "bfloat16"), (AVX2_ONLY, "float32")])
def test_smoke_profile_and_its_judge_resolve_auto_by_the_cpu(cpu, native: bool, want: str) -> None:
    cpu(native)
    cfg = load_config("smollm2-135m", "smoke")
    assert (cfg.sampling.dtype, cfg.training.dtype) == (want, want)
    assert cfg.model_dump()["sampling"]["dtype"] == want  # what run.json records
    # the judge's id (its cache key and protocol) names the dtype it ran in: on the baseline's
    # machine the committed gate baseline's id, elsewhere one that never shares its column
    judge = load_judge_config("smollm2-135m-constrained")
    assert judge.id == f"local:embedded:smollm2-135m:{want}:constrained"


def test_the_full_recipe_keeps_its_bf16_on_any_machine(cpu) -> None:
    cpu(AVX2_ONLY)
    cfg = load_config("mistral-7b")
    assert (cfg.sampling.dtype, cfg.training.dtype) == ("bfloat16", "bfloat16")


def test_a_gpu_without_bf16_gets_float32(monkeypatch: pytest.MonkeyPatch, cpu) -> None:
    import torch

    cpu(AVX512_BF16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    precision.auto_dtype.cache_clear()
    assert precision.resolve_dtype("auto") == "float32"
    assert precision.resolve_dtype("float16") == "float16"


def test_dtype_flag_resolves_auto_and_names_a_bad_value(cpu, capsys: pytest.CaptureFixture) -> None:
    import argparse

    from harness.commands import add_dtype_flag

    cpu(AVX2_ONLY)
    p = argparse.ArgumentParser()
    add_dtype_flag(p)
    assert p.parse_args([]).dtype == "float32"
    assert p.parse_args(["--dtype", "bfloat16"]).dtype == "bfloat16"
    with pytest.raises(SystemExit):
        p.parse_args(["--dtype", "bf16"])
    assert "invalid choice: 'bf16'" in capsys.readouterr().err
