"""The step schedule: which examples each optimizer step takes, in one process or several.

``last_batch: partial`` is pinned against the epoch structure of the official trainer: uclaml/SPPO
5e61c4e trains with Hugging Face's ``Trainer`` (``sppo/trainer.py`` subclasses TRL's DPOTrainer),
whose training loader is a ``DataLoader`` over a shuffled epoch with ``drop_last=False``, one fresh
permutation per epoch, and ``max_steps = ceil(num_train_epochs × steps per epoch)``. The
transcription below builds those batches with torch's own ``DataLoader`` (its permutation comes
from another generator, so the test compares the structure: sizes, and each epoch a permutation).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler

from harness.config import TrainingConfig
from trainers.data import plan


def _upstream_batch_sizes(n: int, global_batch: int, epochs: float) -> list[int]:
    loader = DataLoader(range(n), batch_size=global_batch, drop_last=False,
                        sampler=RandomSampler(range(n), generator=torch.Generator().manual_seed(0)))
    max_steps = math.ceil(epochs * len(loader))
    sizes: list[int] = []
    while len(sizes) < max_steps:
        sizes.extend(len(b) for b in loader)
    return sizes[:max_steps]


def _cfg(**kw) -> TrainingConfig:
    return TrainingConfig(**{"global_batch_size": 8, "per_device_batch_size": 2, **kw})


@pytest.mark.parametrize(("n", "epochs"), [(20, 1), (20, 2), (16, 2), (21, 1.5), (5, 3)])
def test_partial_last_batch_follows_the_official_epochs(n: int, epochs: float) -> None:
    s = plan(n, _cfg(last_batch="partial", epochs=epochs), seed=1)
    g = min(8, n)
    assert [len(b) for b in s.batches] == _upstream_batch_sizes(n, g, epochs)
    per_epoch = math.ceil(n / g)
    for e in range(math.floor(epochs)):  # each whole epoch visits every example once
        assert sorted(i for b in s.batches[e * per_epoch:(e + 1) * per_epoch] for i in b) == list(range(n))


def test_wrap_keeps_every_step_full() -> None:
    s = plan(20, _cfg(last_batch="wrap", epochs=2), seed=1)
    assert [len(b) for b in s.batches] == [8] * 5  # ceil(40 / 8); the 3rd step spans two epochs
    assert sorted(s.order[:20]) == list(range(20))


@pytest.mark.parametrize("processes", [1, 2, 4])
def test_a_short_step_runs_the_same_forwards_on_every_process(processes: int) -> None:
    s = plan(20, _cfg(last_batch="partial", global_batch_size=8, per_device_batch_size=2), seed=0,
             processes=processes)
    assert [len(b) for b in s.batches] == [8, 8, 4]
    for step, batch in enumerate(s.batches):
        shares = [s.micro_batches(step, r) for r in range(processes)]
        assert {len(m) for m in shares} == {s.accumulation}  # same number of forwards everywhere
        counted = [i for m in shares for mb in m for i in mb.indices[: mb.counted]]
        assert sorted(counted) == sorted(batch)  # every example once; padding is not counted
        assert all(mb.counted in (0, len(mb.indices)) for m in shares for mb in m)
