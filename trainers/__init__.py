"""Trainer backends. A backend is one module that calls :func:`register`; the built-in ones
(:data:`trainers.base.BUILTIN`) are imported when chosen, so ``--trainer native`` never loads TRL.
A backend of your own is loaded through ``SPPO_PLUGINS``."""

from trainers.base import (
    TrainRequest,
    TrainResult,
    available_trainers,
    discard_state,
    get_trainer,
    register,
)

__all__ = ["TrainRequest", "TrainResult", "available_trainers", "discard_state", "get_trainer",
           "register"]
