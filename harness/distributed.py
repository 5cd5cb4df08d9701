"""Process rank helpers: work is sharded by rank and gathered; only rank 0 writes artifacts.

Launched by ``accelerate launch``/``torchrun`` (which set ``RANK`` and ``WORLD_SIZE``), the
harness joins the process group on first use. A single process needs none of this.
"""

from __future__ import annotations

import os
from typing import TypeVar

import torch.distributed as dist

T = TypeVar("T")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def _ensure_group() -> None:
    if not dist.is_initialized():
        import torch

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def shard(items: list[T]) -> list[T]:
    """This rank's share of ``items`` (strided, so shards differ in size by at most one)."""
    return items[rank() :: world_size()]


def gather(local: list[T]) -> list[T]:
    """Inverse of :func:`shard`: every rank gets all items in their original order."""
    n = world_size()
    if n == 1:
        return local
    _ensure_group()
    parts: list[list[T] | None] = [None] * n
    dist.all_gather_object(parts, local)
    out: list[T] = []
    for i in range(max(len(p or []) for p in parts)):
        out.extend(p[i] for p in parts if p is not None and i < len(p))
    return out


def barrier() -> None:
    if world_size() > 1:
        _ensure_group()
        dist.barrier()
