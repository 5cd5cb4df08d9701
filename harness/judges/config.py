"""Judge configs: one YAML per judge in ``judge_configs/`` (or any YAML path), strictly validated.

A judge is named on the command line by its config name (``gpt-4-1106-preview``), a YAML path,
``local`` (the embedded model in-process) or ``local:<model source>``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.config import DTYPE_HELP, SAFE_NAME, Dtype, format_validation_error, read_yaml_mapping
from harness.errors import ConfigError

JUDGE_CONFIG_DIR = Path(__file__).resolve().parents[2] / "judge_configs"


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_mtok: float = Field(0.0, ge=0, description="USD per million prompt tokens")
    output_per_mtok: float = Field(0.0, ge=0, description="USD per million completion tokens")


class JudgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["openai", "local"] = "openai"
    model: str = Field(description="model name sent to the endpoint, or the local model source")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint; None = api.openai.com")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="environment variable holding the "
                                    "key (None: the endpoint needs none, e.g. a local vLLM server)")
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(1024, ge=1)
    logprobs: bool = False
    top_logprobs: int = Field(0, ge=0, le=20)
    concurrency: int = Field(8, ge=1)
    max_retries: int = Field(6, ge=0, description="retries per request on 429/5xx/timeouts")
    backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles per retry, jittered")
    max_backoff_s: float = Field(60.0, ge=0)
    timeout_s: float = Field(120.0, gt=0, description="per-request timeout")
    price: Price = Price()
    dtype: Dtype = Field("bfloat16", description="local judges only: " + DTYPE_HELP)
    batch_size: int = Field(4, ge=1)  # local judges only
    verdict: Literal["generated", "constrained"] = Field(
        "generated", description="local judges: 'constrained' answers MT-Bench and Arena-Hard with "
        "the official verdict (rating or label) the judge gives the highest log-probability, for "
        "judges too small to write the official format; part of the judge's id, so never an "
        "official column")

    @model_validator(mode="after")
    def _constrained_is_local(self) -> JudgeConfig:
        if self.verdict == "constrained" and self.kind != "local":
            raise ValueError("verdict: constrained needs kind: local (an endpoint writes its verdicts)")
        return self

    @property
    def id(self) -> str:
        """The judge's identity for caches and provenance: model and endpoint, never a key."""
        if self.kind == "local":
            return f"local:{self.model}:{self.dtype}" + (":constrained" if self.constrained else "")
        url = public_url(self.base_url)
        return f"openai:{self.model}" + (f"@{url}" if url else "")

    @property
    def constrained(self) -> bool:
        return self.verdict == "constrained"

    @property
    def paid(self) -> bool:
        return self.price.input_per_mtok > 0 or self.price.output_per_mtok > 0


def public_url(url: str | None) -> str | None:
    """An endpoint without credentials, query or fragment (for ids and messages)."""
    if url is None:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


def check_judge(spec: str) -> JudgeConfig:
    """Load a judge's config and fail early when it cannot run (an endpoint without its key)."""
    cfg = load_judge_config(spec)
    if cfg.kind == "openai":
        api_key(cfg)
    return cfg


def load_judge_config(spec: str, **overrides: object) -> JudgeConfig:
    """``spec``: a name in ``judge_configs/``, a YAML path, ``local`` or ``local:<source>``."""
    if spec == "local" or spec.startswith("local:"):
        raw: dict = {"kind": "local", "model": spec.partition(":")[2] or "embedded:smollm2-135m"}
        origin = spec
    else:
        path: Path | None = Path(spec)
        if path.suffix not in (".yaml", ".yml"):  # a config name, never a path in disguise
            path = JUDGE_CONFIG_DIR / f"{spec}.yaml" if SAFE_NAME.match(spec) else None
        if path is None or not path.is_file():
            known = ", ".join(sorted(p.stem for p in JUDGE_CONFIG_DIR.glob("*.yaml")))
            raise ConfigError(f"unknown judge {spec!r}; known: {known}, local, local:<model> "
                              "(or a YAML path)")
        raw = read_yaml_mapping(path)
        origin = str(path)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return JudgeConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, origin)) from None


def api_key(cfg: JudgeConfig) -> str:
    if cfg.api_key_env is None:
        return "EMPTY"  # local servers ignore it; the client needs a non-empty string
    key = os.environ.get(cfg.api_key_env)
    if not key:
        raise ConfigError(f"judge {cfg.model!r} needs an API key: set the environment variable "
                          f"{cfg.api_key_env} (keys are read from the environment only)")
    return key
