"""Counting models under test: every construction and close of a backend's class, and every
training start, in order; and the check that a run kept one model per checkpoint."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from trainers.native import NativeTrainer


def fake_verdict(messages: list[dict]) -> str:
    """An MT-Bench rating and an Arena-Hard verdict in one reply, varied by the prompt."""
    n = int(hashlib.sha256(messages[-1]["content"].encode()).hexdigest(), 16)
    return f"Rating: [[{1 + n % 10}]]. My final verdict is [[{['A>B', 'B>A', 'A=B'][n % 3]}]]"


def record(mp: pytest.MonkeyPatch, backend: type) -> list[tuple[str, str]]:
    """("open", path) after each construction of ``backend``, ("close", path) at each close, and
    ("train", model path) at each start of the native trainer."""
    log: list[tuple[str, str]] = []
    init, close, train = backend.__init__, backend.close, NativeTrainer.train

    def counted_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        log.append(("open", self.path))

    def counted_close(self):
        log.append(("close", self.path))
        close(self)

    def counted_train(self, request):
        log.append(("train", str(request.model_path)))
        return train(self, request)

    mp.setattr(backend, "__init__", counted_init)
    mp.setattr(backend, "close", counted_close)
    mp.setattr(NativeTrainer, "train", counted_train)
    return log


def assert_one_per_checkpoint(events: list[tuple[str, str]], checkpoints: list[str]) -> None:
    """Each checkpoint loaded exactly once, never two at a time, all closed before each training
    start and at the end; training started from each checkpoint but the last, in order."""
    opened = Counter(p for kind, p in events if kind == "open")
    assert {p: opened[p] for p in checkpoints} == dict.fromkeys(checkpoints, 1), events
    running: set[str] = set()
    for kind, path in events:
        if kind != "train" and path not in checkpoints:
            continue  # a judge's model
        if kind == "open":
            assert not running, f"{path} loaded while {running} is: {events}"
            running.add(path)
        elif kind == "close":
            running.discard(path)
        else:
            assert not running, f"training started with {running} loaded: {events}"
    assert not running, events
    assert [p for k, p in events if k == "train"] == checkpoints[:-1]
