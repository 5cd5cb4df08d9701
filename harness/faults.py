"""Crash points for the kill tests: ``SPPO_CRASH_AT=<point>:<n>`` kills the process with SIGKILL
the n-th time it passes ``<point>`` (e.g. ``generate/chunk:2``, right after the second chunk is
committed). Unset, a crash point costs one dictionary lookup."""

from __future__ import annotations

import os
import signal
from collections import Counter

_passed: Counter[str] = Counter()


def crash_point(name: str) -> None:
    spec = os.environ.get("SPPO_CRASH_AT")
    if not spec:
        return
    point, _, n = spec.rpartition(":")
    if point != name:
        return
    _passed[name] += 1
    if _passed[name] == int(n):
        os.kill(os.getpid(), signal.SIGKILL)
