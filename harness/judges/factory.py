"""A judge from its config: an OpenAI-compatible endpoint or an in-process model."""

from __future__ import annotations

from harness.judges.base import Judge
from harness.judges.config import JudgeConfig, load_judge_config


def get_judge(spec: str | JudgeConfig, device: str | None = None) -> Judge:
    """A judge from a config name, YAML path, ``local[:<source>]`` or a loaded config."""
    cfg = spec if isinstance(spec, JudgeConfig) else load_judge_config(spec)
    if cfg.kind == "local":
        from harness.judges.local import get_local_judge

        return get_local_judge(cfg.model, cfg.dtype, device, cfg.batch_size)
    from harness.judges.openai_client import OpenAIJudge

    return OpenAIJudge(cfg)
