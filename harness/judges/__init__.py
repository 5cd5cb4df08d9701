"""Judges: models that read a judging prompt and answer it, shared by benchmarks and rankers.

- :mod:`~harness.judges.openai_client`: any OpenAI-compatible endpoint (bounded retries, backoff).
- :mod:`~harness.judges.local`: any transformers chat model in-process (the embedded one on CPU).
- :mod:`~harness.judges.cache`: every judgment cached on disk, so none is paid for twice.
- :mod:`~harness.judges.cost`: the bill before a paid run, and ``--yes`` to accept it.

Configs live in ``judge_configs/`` (see :mod:`~harness.judges.config`); a judge is built from
one by :func:`harness.judges.factory.get_judge`.
"""

from __future__ import annotations

from harness.judges.base import Judge
from harness.judges.config import JudgeConfig, check_judge, load_judge_config

__all__ = ["Judge", "JudgeConfig", "check_judge", "load_judge_config"]
