"""The machine's ceilings, measured: matmul throughput per dtype and memory read bandwidth."""

from __future__ import annotations

import statistics
import time

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def matmul_gflops(dtype: str, n: int = 2048, repeats: int = 7) -> float:
    """Median GFLOP/s of an n×n by n×n matmul (2n³ FLOPs) on the CPU or current GPU."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(n, n, dtype=DTYPES[dtype], device=device)
    b = torch.randn(n, n, dtype=DTYPES[dtype], device=device)
    times = []
    for _ in range(repeats + 1):  # the first run warms up
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times[1:]) / 1e9


def thin_matmul_gflops(m: int, k: int, n: int, dtype: str = "bfloat16", repeats: int = 50) -> float:
    """Median GFLOP/s of an m×k by k×n matmul: the shapes a decoder's linear layers see per step."""
    a, b = torch.randn(m, k, dtype=DTYPES[dtype]), torch.randn(k, n, dtype=DTYPES[dtype])
    times = []
    for _ in range(repeats + 5):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * m * k * n / statistics.median(times[5:]) / 1e9


def read_bandwidth_gbs(mib: int = 512, repeats: int = 7) -> float:
    """Median GB/s of summing a ``mib`` MiB fp32 tensor (one read of every byte)."""
    x = torch.ones(mib * 2**18, dtype=torch.float32)
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - t)
    return x.numel() * 4 / statistics.median(times[1:]) / 1e9


if __name__ == "__main__":
    for d in DTYPES:
        print(f"matmul {d}: {matmul_gflops(d):.0f} GFLOP/s")
    print(f"memory read: {read_bandwidth_gbs():.0f} GB/s")
