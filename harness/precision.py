"""What ``dtype: auto`` computes in: bfloat16 where the device multiplies it natively, else float32.

A CUDA GPU with bf16 (Ampere and later) runs bf16 matmuls faster than float32; so does a CPU where
torch hands bf16 matmuls to oneDNN (x86 with AVX-512, fastest with AVX512-BF16 or AMX; ARM with
bf16). Elsewhere bf16 is a trap: on an AVX2-only CPU (measured on an AMD EPYC without AVX-512,
one thread) torch's bf16 matmul is a fallback dot-product loop at 1-8 GFLOPS against float32's
56, so a bf16 smoke run takes many times as long as a float32 one.

The choice is made for the process's default device (CUDA where present, else the CPU) when a
config or command line is read, so every record names the dtype actually used; a run resumed on a
machine that resolves ``auto`` differently is refused by the config diff, as any changed setting.
"""

from __future__ import annotations

import functools

from harness.provenance import cpu_model_and_flags

DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_bf16_is_native() -> bool:
    """Whether torch's CPU bf16 matmuls go to oneDNN (torch's own check), not a fallback loop;
    where torch cannot say, whether the CPU flags name bf16 instructions."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        _, flags = cpu_model_and_flags()
        return any(f in flags for f in NATIVE_BF16_CPU_FLAGS)


@functools.cache
def auto_dtype() -> str:
    """bfloat16 where the default device computes it natively, float32 elsewhere."""
    import torch

    if torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if cpu_bf16_is_native() else "float32"


def resolve_dtype(dtype: str) -> str:
    """``dtype`` itself, or :func:`auto_dtype` for ``auto``."""
    return auto_dtype() if dtype == "auto" else dtype
