"""The trainer plug point: (policy, reference, preference pool, hyper-parameters) → checkpoint.

A backend is a class with a ``name`` and ``train(request) -> TrainResult``, registered with
:func:`register`; an optional ``check(config)`` refuses, before a run does any work, training
settings the backend does not support, and an optional ``discard_state(state_dir)`` deletes the
resumable state it keeps in ``request.state_dir`` (default: that folder) once the harness has
committed the checkpoint. The harness only ever calls :func:`get_trainer` and
:func:`discard_state`.
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.config import TrainingConfig
from harness.errors import ConfigError, HarnessError


class NonFiniteLossError(HarnessError):
    """Training diverged; raised before any checkpoint of the iteration is written."""


@dataclass
class TrainRequest:
    model_path: str  # π_{t-1}: the starting policy
    reference_path: str  # π_ref; the same as model_path in SPPO (reference = previous iterate)
    preferences: Path  # preferences.jsonl (docs/design.md, "The preferences.jsonl columns")
    output_dir: Path  # the checkpoint goes here, in Hugging Face format
    log_path: Path  # train_log.jsonl, one row per optimizer step
    config: TrainingConfig
    seed: int = 0
    device: str = "cpu"
    trust_remote_code: bool = False
    progress: bool = True
    # where the native backend keeps its resumable state every ``config.save_steps`` steps
    state_dir: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}
        d["config"] = self.config.model_dump(mode="json")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainRequest:
        d = dict(d)
        for k in ("preferences", "output_dir", "log_path", "state_dir"):
            d[k] = Path(d[k]) if d.get(k) is not None else None
        d["config"] = TrainingConfig(**d["config"])
        return cls(**d)


@dataclass
class TrainResult:
    steps: int
    examples: int
    tokens: int  # response + prompt tokens forwarded through the policy, all epochs
    seconds: float
    losses: list[float] = field(default_factory=list)
    # Mean log π/π_ref of chosen and rejected responses over the pool, before and after training.
    logratios_before: dict[str, float] = field(default_factory=dict)
    logratios_after: dict[str, float] = field(default_factory=dict)
    resumed_from_step: int = 0  # steps taken from a saved state of an interrupted run
    strategy: str = ""  # how the processes shared the work: accelerate's distributed type

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainResult:
        return cls(**d)


class Trainer(Protocol):
    name: str

    def train(self, request: TrainRequest) -> TrainResult: ...


_REGISTRY: dict[str, Callable[[], Trainer]] = {}


def register(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        _REGISTRY[name] = cls
        return cls

    return deco


# The built-in backends by name: their module is imported when the backend is chosen.
BUILTIN = {"native": "trainers.native", "trl": "trainers.trl_dpo"}


def get_trainer(name: str) -> Trainer:
    if name not in _REGISTRY and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in _REGISTRY:
        raise ConfigError(f"unknown trainer {name!r}; available: {', '.join(available_trainers())}")
    return _REGISTRY[name]()


def available_trainers() -> list[str]:
    return sorted({*_REGISTRY, *BUILTIN})


def discard_state(trainer: Trainer, state_dir: Path) -> None:
    """Delete ``trainer``'s resumable state: its checkpoint is committed, the state is spent."""
    discard = getattr(trainer, "discard_state", None)
    if discard is not None:
        discard(state_dir)
    else:
        shutil.rmtree(state_dir, ignore_errors=True)
