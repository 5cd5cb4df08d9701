"""Run configuration: one YAML per base model in ``model_configs/``, strictly validated.

A YAML holds the official recipe; ``profiles.<name>`` holds overrides (deep-merged) such as the
CPU ``smoke`` profile. Unknown keys and bad values are rejected with the dotted key named.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from harness.errors import ConfigError
from harness.precision import resolve_dtype

MODEL_CONFIG_DIR = Path(__file__).resolve().parent.parent / "model_configs"
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# A compute dtype; ``auto`` is resolved when the config is read (harness/precision.py), so what is
# recorded and compared is the dtype actually used.
Dtype = Annotated[Literal["auto", "float32", "bfloat16", "float16"], AfterValidator(resolve_dtype)]
DTYPE_HELP = ("compute dtype; auto: bfloat16 where the device multiplies it natively (a CUDA GPU "
              "with bf16, an x86 CPU with AVX-512 or an ARM one with bf16), float32 elsewhere")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def choice(default: str, what: str = "", **meanings: str) -> Any:
    """A field over named options whose description gives each option's meaning, in order.

    The options are kept in the schema (``options``), so a test can hold them to the field's
    ``Literal``.
    """
    listed = "; ".join(f"{name}: {meaning}" for name, meaning in meanings.items())
    return Field(default, description=f"{what}: {listed}" if what else listed,
                 json_schema_extra={"options": list(meanings)})


class ModelSource(_Strict):
    """Where the base policy comes from: ``embedded:smollm2-135m``, a hub id or a local path."""

    source: str
    revision: str | None = None
    trust_remote_code: bool = False
    license: str | None = Field(None, description="the base model's license id, for model cards")


class SamplingConfig(_Strict):
    k: int = Field(5, ge=2, description="responses sampled per prompt")
    seeds: list[int] = [0, 50, 100, 150, 200]
    temperature: float = Field(0.7, gt=0)
    top_p: float = Field(0.9, gt=0, le=1)
    max_new_tokens: int = Field(2048, ge=1, description="new tokens per response (answer length)")
    batch_size: int = Field(16, ge=1, description="prompts per generation batch (transformers: one "
                            "pass of K × batch_size rows, the prompts' prefill shared by their K samples; "
                            "a pass of one sample per prompt, for evaluation answers, takes K × "
                            "batch_size prompts)")
    dtype: Dtype = Field("bfloat16", description=DTYPE_HELP)

    @model_validator(mode="after")
    def _one_seed_per_sample(self) -> SamplingConfig:
        if len(self.seeds) != self.k:
            raise ValueError(f"seeds has {len(self.seeds)} entries but k = {self.k}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct")
        return self


class VLLMConfig(_Strict):
    """The vLLM engine of the model under test (``--generator vllm``, or ``auto`` on a GPU)."""

    tensor_parallel_size: int | None = Field(None, ge=1, description="GPUs one engine spans (default: "
                                             "all visible GPUs / data_parallel_size)")
    data_parallel_size: int = Field(1, ge=1, description="engines, each on its own GPU group; every "
                                    "batch is split between them (the official recipe: one per GPU)")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="share of GPU memory for "
                                          "weights and KV cache (CPU build: share of RAM for the KV cache)")
    kv_cache_gib: float | None = Field(None, gt=0, description="KV cache size in GiB (vLLM's "
                                       "kv_cache_memory_bytes) instead of a share of memory; on CPU set it: "
                                       "there the share is of RAM, less all the harness process holds")
    max_model_len: int | None = Field(None, ge=16, description="context length (default: the model's)")
    enforce_eager: bool = Field(False, description="no CUDA graphs / torch.compile (the CPU build "
                                "needs it for per-request seeds)")
    enable_prefix_caching: bool = Field(False, description="reuse the KV cache of shared prefixes across "
                                        "requests: faster, but a sample then depends on what the engine "
                                        "served before, so a resumed run no longer repeats an "
                                        "uninterrupted one")
    engine_in_process: bool = Field(True, description="vLLM's engine core in the harness's process "
                                    "(VLLM_ENABLE_V1_MULTIPROCESSING=0): a chunk's requests are all "
                                    "queued before its first step, so batches, and samples, do not depend "
                                    "on timing; false overlaps scheduling with execution (faster on "
                                    "GPUs), but a resumed run then need not repeat an uninterrupted one")
    chunk_size: int = Field(256, ge=1, description="prompts per engine call, committed together (a "
                            "crash loses one chunk at most)")


class PreferencesConfig(_Strict):
    """How ranker output becomes the training pairs and their win probabilities."""

    probabilities: Literal["scores", "pairwise"] = choice(
        "scores",
        scores="P_ij = σ(s_i − s_j) from per-response scores (official compute_prob.py)",
        pairwise="P_ij = ½(σ(C_ij) + σ(−C_ji)) from the ranker's own comparison log-odds C of "
        "both orders (the paper's estimator; pairrm and judge: rankers only), chosen/rejected by "
        "the row means of P")
    ties: Literal["first", "distinct"] = choice(
        "distinct", "which response is chosen/rejected when several tie, by score or under "
        "pairwise by the row mean of P",
        first="chosen = first highest, rejected = first lowest (official np.argmax/np.argmin; "
        "all equal gives chosen = rejected)",
        distinct="rejected = the last lowest, so chosen and rejected differ")


class TrainingConfig(_Strict):
    loss: Literal["sppo", "sppo_single", "sppo_hard", "sigmoid", "ipo", "ipo_mean"] = Field(
        "sppo", description="preference loss")
    layout: Literal["official", "clean"] = choice(
        "clean",
        official="uclaml/SPPO's token layout and truncation (prompt without the generation "
        "prompt, BOS prepended, response = the templated turn + EOS; prompt cut to its last "
        "max_prompt_length tokens, then responses to max_length − max_prompt_length)",
        clean="the tokens the policy generated + EOS after the generation prompt, responses cut "
        "to fit")
    last_batch: Literal["partial", "wrap"] = choice(
        "wrap",
        partial="each epoch ends with the examples left over (official, as one process of Hugging "
        "Face's Trainer does)",
        wrap="every step is a full global batch, the last one taking from the next epoch's "
        "permutation")
    optimizer: Literal["rmsprop", "adamw"] = "rmsprop"
    learning_rate: float = Field(5e-7, gt=0)
    lr_scheduler: Literal["linear", "constant"] = "linear"
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    beta: float = Field(0.001, gt=0)
    global_batch_size: int = Field(64, ge=1)
    per_device_batch_size: int = Field(8, ge=1)
    max_length: int = Field(1024, ge=2)
    max_prompt_length: int = Field(512, ge=1)
    epochs: float = Field(1.0, gt=0)
    max_grad_norm: float | None = Field(None, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    dtype: Dtype = Field("bfloat16", description=DTYPE_HELP)
    weight_rounding: Literal["single", "split"] = choice(
        "single", "how a bf16/fp16 matmul reads the fp32 master weights (native trainer; float32 "
        "reads them exactly either way)",
        single="each rounded to one bf16/fp16 value, as autocast and the official recipe's bf16 do "
        "(log-ratios up to about 0.3 of their fp32 spread away from fp32 after training; "
        "bench/REPORT.md)",
        split="each as the sum of two bf16/fp16 parts, summed in the matmul's fp32 accumulator, "
        "and fp32 logits (log-ratios 0.08-0.09 of that spread from fp32; forward matmuls twice as "
        "deep, a step ~4/3 of single's matmul work, 4 more bytes per parameter; "
        "trainers/split_weights.py)")
    gradient_checkpointing: bool = False
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = choice(
        "auto", "the policy's and reference's attention while training",
        auto="eager on a CPU (torch's fused CPU attention made a training forward and backward ~20 % "
        "slower at the smoke profile's lengths), the model's default (sdpa) elsewhere",
        eager="plain matmuls and softmax", sdpa="torch's scaled_dot_product_attention",
        flash_attention_2="the flash-attn package (GPU, bf16/fp16)")
    save_steps: int = Field(0, ge=0, description="native backend: save model, optimizer, scheduler and "
                            "RNG state every N steps, so a killed run resumes mid-iteration (0: off)")

    @model_validator(mode="after")
    def _lengths(self) -> TrainingConfig:
        if self.max_prompt_length >= self.max_length:
            raise ValueError("max_prompt_length must be smaller than max_length")
        return self


class PromptsConfig(_Strict):
    """Prompt sources. ``iterations[t-1]`` feeds iteration t; ``heldout`` feeds evaluation."""

    iterations: list[str] = Field(min_length=1)
    heldout: str = "embedded"
    per_iteration: int | None = Field(None, ge=1, description="cap on prompts per iteration")
    heldout_size: int = Field(64, ge=1)


class DecodingOverride(_Strict):
    """A benchmark's own decoding settings where they differ from ``sampling``."""

    temperature: float | None = Field(None, gt=0)
    top_p: float | None = Field(None, gt=0, le=1)
    max_new_tokens: int | None = Field(None, ge=1)


class Section(_Strict):
    """A benchmark's settings, ``evaluation.<benchmark>`` in a run config: declared by the
    benchmark's own module (its ``Benchmark.config``), strict and frozen like every section."""


class EvaluationConfig(BaseModel):
    """``benchmarks`` to run; every other key is one benchmark's settings, validated by the model
    that benchmark registers (:func:`harness.benchmarks.settings`) before a run does any work."""

    model_config = ConfigDict(extra="allow", frozen=True)
    benchmarks: list[str] = Field(["win_rate_vs_base"], description=(
        "registered benchmarks to run on every checkpoint (harness.benchmarks; plug-ins too), "
        "checked before a run starts"))

    @model_validator(mode="after")
    def _sections_are_mappings(self) -> EvaluationConfig:
        for name, value in (self.model_extra or {}).items():
            if not isinstance(value, dict):
                raise ValueError(f"{name}: expected a mapping of that benchmark's settings")
        return self

    def section(self, name: str) -> dict[str, Any]:
        """The raw ``evaluation.<name>`` mapping ({} where the config has none)."""
        return dict((self.model_extra or {}).get(name) or {})


def validate_section(model: type[BaseModel], raw: dict[str, Any], where: str) -> Any:
    """``raw`` validated by ``model``; a bad key or value is a ConfigError naming ``where.<key>``."""
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, where)) from None


class RunConfig(_Strict):
    name: str
    description: str = ""
    model: ModelSource
    sampling: SamplingConfig = SamplingConfig()
    training: TrainingConfig = TrainingConfig()
    prompts: PromptsConfig
    preferences: PreferencesConfig = PreferencesConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    vllm: VLLMConfig = VLLMConfig()
    ranker: str = "pairrm"
    trainer: str = "native"
    profile: str = "full"

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not SAFE_NAME.match(v):
            raise ValueError(f"{v!r} is not a safe name (letters, digits, '.', '_', '-')")
        return v

    def prompt_source(self, iteration: int) -> str:
        """Prompt source of iteration ``iteration`` (1-based)."""
        if not 1 <= iteration <= len(self.prompts.iterations):
            raise ConfigError(
                f"prompts.iterations lists {len(self.prompts.iterations)} sources; iteration "
                f"{iteration} has none (add one, or pass --prompts to split one source)"
            )
        return self.prompts.iterations[iteration - 1]


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def format_validation_error(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<top level>"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{origin}: {loc}: {msg}")
    return "\n".join(lines)


def resolve_config_path(base: str) -> Path:
    """``base`` is a name in ``model_configs/`` or a path to a YAML file."""
    path = Path(base)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    if not SAFE_NAME.match(base):
        raise ConfigError(f"--base {base!r} is not a model config name")
    path = MODEL_CONFIG_DIR / f"{base}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.yaml")))
        raise ConfigError(f"unknown base model {base!r}; known: {known} (or pass a YAML path)")
    return path


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping, or a ConfigError naming the file."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def load_config(
    base: str, profile: str = "full", overrides: dict[str, Any] | None = None
) -> RunConfig:
    """Load ``base`` (name or YAML path), apply ``profile`` then ``overrides``, and validate."""
    path = resolve_config_path(base)
    raw = read_yaml_mapping(path)
    profiles = raw.pop("profiles", {}) or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: profiles: expected a mapping of profile name to overrides")
    if profile != "full":
        if profile not in profiles:
            raise ConfigError(f"{path}: no profile {profile!r} (has: {', '.join(profiles)})")
        raw = deep_merge(raw, profiles[profile] or {})
    raw = deep_merge(raw, overrides or {})
    raw["profile"] = profile
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path))) from None
