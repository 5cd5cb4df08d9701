"""glibc's malloc tuned for tensors of tens of megabytes (Linux; elsewhere nothing changes).

Above 32 MiB glibc serves every block from a fresh ``mmap`` and unmaps it when freed, so the next
block of that size faults in each of its 4 KiB pages again. On CPU that is the fate of every
full-vocabulary logits tensor of a sampling step (240 rows × 49,152 fp32 = 47 MB): copying one took
24-34 ms, 5 ms from reused memory, and sampling the smoke run's 96 prompts × 5 took 103 s instead
of 89 s. Raising the mmap and trim thresholds keeps such blocks in the heap for reuse (what
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` set at a process's start; Intel's
PyTorch CPU guide reaches the same end with jemalloc or tcmalloc). A user's own ``MALLOC_*``
settings or preloaded allocator are left alone. The environment variables are set too, so the
processes the harness starts (``accelerate launch``'s, vLLM's) begin with the same settings.

The price is memory a finished stage freed but the heap keeps: :func:`release_free_memory`
hands it back to the OS between stages (``malloc_trim``), so the next stage does not start from
the last one's high-water mark.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys

THRESHOLD = 1 << 30  # blocks up to 1 GiB are reused; freed memory beyond it goes back to the OS
_OPTIONS = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_MMAP_THRESHOLD_": -3}  # mallopt's M_* numbers


def keep_large_blocks(threshold: int = THRESHOLD) -> bool:
    """Set both thresholds in this process and its future children; False where it does not
    apply (not Linux, not glibc, or the user chose their own allocator settings)."""
    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    if any(lib in os.environ.get("LD_PRELOAD", "") for lib in ("jemalloc", "tcmalloc", "mimalloc")):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # another C library (musl has no mallopt)
        return False
    if not all(mallopt(option, threshold) for option in _OPTIONS.values()):
        return False
    os.environ.update({name: str(threshold) for name in _OPTIONS})
    return True


def release_free_memory() -> bool:
    """Collect garbage and return the heap's free pages to the OS (glibc's ``malloc_trim``);
    False where there is no glibc."""
    gc.collect()
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False
