"""Trainer backends. Every module in this package is imported, so a backend file that calls
:func:`register` is available as ``--trainer NAME`` without touching anything else."""

import importlib
import pkgutil

from trainers.base import TrainRequest, TrainResult, available_trainers, get_trainer, register

for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["TrainRequest", "TrainResult", "available_trainers", "get_trainer", "register"]
