"""Your own rankers, trainers and benchmarks without editing the harness.

Modules named in ``SPPO_PLUGINS`` (comma-separated, importable from ``PYTHONPATH``) are imported
at start-up in every process (the CLI, and each process of a ``--launcher accelerate`` stage),
so their ``harness.rank.register`` / ``trainers.register`` / ``harness.benchmarks.register``
calls take effect everywhere.
"""

from __future__ import annotations

import importlib
import os

from harness.errors import ConfigError


def load_plugins() -> list[str]:
    names = [n.strip() for n in os.environ.get("SPPO_PLUGINS", "").split(",") if n.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"SPPO_PLUGINS: cannot import {name!r}: {exc}") from exc
    return names
