"""What ``dtype: auto`` computes in: bfloat16 where the device multiplies it natively, else float32.

A CUDA GPU with bf16 (Ampere and later) and an x86 CPU with AVX512-BF16 or AMX-BF16 run bf16
matmuls at least as fast as float32. Elsewhere bf16 is a trap: on an AVX2-only CPU (measured on an
AMD EPYC without AVX-512, one thread) torch's bf16 matmul falls back to a dot-product loop at
1-8 GFLOPS against float32's 56, so a bf16 smoke run takes many times as long as a float32 one.

The choice is made for the process's default device (CUDA where present, else the CPU) when a
config or command line is read, so every record names the dtype actually used; a run resumed on a
machine that resolves ``auto`` differently is refused by the config diff, as any changed setting.
"""

from __future__ import annotations

import functools

from harness.provenance import cpu_model_and_flags

DTYPES = ("auto", "float32", "bfloat16", "float16")
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def auto_dtype() -> str:
    """bfloat16 where the default device computes it natively, float32 elsewhere."""
    import torch

    if torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    _, flags = cpu_model_and_flags()
    return "bfloat16" if any(f in flags for f in NATIVE_BF16_CPU_FLAGS) else "float32"


def resolve_dtype(dtype: str) -> str:
    """``dtype`` itself, or :func:`auto_dtype` for ``auto``."""
    return auto_dtype() if dtype == "auto" else dtype
