"""Trainer backends. Import a backend module to register it; ``get_trainer(name)`` returns one."""

from trainers import native  # noqa: F401  (registers "native")
from trainers.base import TrainRequest, TrainResult, available_trainers, get_trainer, register

__all__ = ["TrainRequest", "TrainResult", "available_trainers", "get_trainer", "register"]
