import argparse
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from harness.config import MODEL_CONFIG_DIR, RunConfig, load_config
from harness.errors import ConfigError


@pytest.mark.parametrize("name", ["smollm2-135m", "mistral-7b", "llama-3-8b", "gemma-2-9b"])
def test_shipped_configs_hold_the_official_recipe(name: str) -> None:
    cfg = load_config(name)
    assert cfg.sampling.k == 5 and cfg.sampling.seeds == [0, 50, 100, 150, 200]
    assert (cfg.sampling.temperature, cfg.sampling.top_p, cfg.sampling.max_new_tokens) == (0.7, 0.9, 2048)
    t = cfg.training
    assert (t.optimizer, t.learning_rate, t.lr_scheduler, t.warmup_ratio) == ("rmsprop", 5e-7, "linear", 0.1)
    assert (t.beta, t.global_batch_size, t.max_length, t.max_prompt_length, t.epochs) == (
        0.001, 64, 1024, 512, 1.0)
    assert t.loss == "sppo" and t.dtype == "bfloat16"
    assert len(cfg.prompts.iterations) == 3


def test_hub_configs_use_the_three_ultrafeedback_splits() -> None:
    cfg = load_config("mistral-7b")
    assert cfg.model.source == "mistralai/Mistral-7B-Instruct-v0.2"
    assert cfg.prompts.iterations == [
        f"hf:UCLA-AGI/data-mistral-7b-instruct-sppo-iter{i}:prompt" for i in (1, 2, 3)]


def test_smoke_profile_overrides_only_what_it_names() -> None:
    full, smoke = load_config("smollm2-135m"), load_config("smollm2-135m", "smoke")
    assert smoke.profile == "smoke" and full.profile == "full"
    assert smoke.sampling.max_new_tokens < full.sampling.max_new_tokens
    assert smoke.training.learning_rate > full.training.learning_rate
    assert smoke.training.global_batch_size < full.training.global_batch_size
    assert smoke.sampling.seeds == full.sampling.seeds
    assert smoke.training.optimizer == full.training.optimizer


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


BASE = (MODEL_CONFIG_DIR / "smollm2-135m.yaml").read_text()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.replace("  learning_rate: 5.0e-7", "  lerning_rate: 5.0e-7"),
         "training.lerning_rate: unknown key"),
        (lambda s: s.replace("  beta: 0.001", "  beta: -1"), "training.beta"),
        (lambda s: s.replace("  k: 5", "  k: 1"), "sampling.k"),
        (lambda s: s.replace("  k: 5", "  k: 4"), "seeds has 5 entries but k = 4"),
        (lambda s: s.replace("  loss: sppo", "  loss: magic"), "training.loss"),
        (lambda s: s.replace("  epochs: 1", "  epochs: many"), "training.epochs"),
        (lambda s: s + "\nbogus: 1\n", "bogus: unknown key"),
        (lambda s: s.replace("name: smollm2-135m", "name: ../../etc"), "name"),
        (lambda s: "model: [unclosed\n", "malformed YAML"),
    ],
)
def test_bad_config_is_rejected_naming_the_key(tmp_path: Path, edit, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(str(_write(tmp_path, edit(BASE))))
    assert message in str(err.value)
    assert "cfg.yaml" in str(err.value)


def test_unknown_base_and_profile() -> None:
    with pytest.raises(ConfigError, match=r"unknown base model 'gpt-17'.*smollm2-135m"):
        load_config("gpt-17")
    with pytest.raises(ConfigError, match="no profile 'huge'"):
        load_config("smollm2-135m", "huge")


def test_iteration_without_prompt_source_fails_early() -> None:
    cfg = load_config("mistral-7b")
    assert cfg.prompt_source(3).endswith("iter3:prompt")
    with pytest.raises(ConfigError, match="iteration 4 has none"):
        cfg.prompt_source(4)


def test_missing_local_model_source_is_named() -> None:
    from harness.errors import ConfigError
    from harness.models import resolve_source

    with pytest.raises(ConfigError, match=r"'/no/such/checkpoint': no such checkpoint directory"):
        resolve_source("/no/such/checkpoint")
    assert resolve_source("mistralai/Mistral-7B-Instruct-v0.2") == "mistralai/Mistral-7B-Instruct-v0.2"


def test_eval_model_may_name_a_base_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    from harness.commands.eval import _base_model

    assert _base_model("mistral-7b") == "mistralai/Mistral-7B-Instruct-v0.2"
    assert "the base config's model, mistralai/Mistral-7B-Instruct-v0.2" in capsys.readouterr().err
    assert _base_model("gpt2") == "gpt2"  # no such config: a hub id as given
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mistral-7b").mkdir()  # a checkpoint directory of that name wins
    assert _base_model("mistral-7b") == "mistral-7b"


def test_help_states_each_default_once() -> None:
    """No "(default: None)" after help that already says what happens without the flag; a real
    default is shown once."""
    from harness.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    benchmarks = next(a for a in commands["eval"]._actions
                      if isinstance(a, argparse._SubParsersAction)).choices
    assert {"alpaca_eval", "mt_bench", "arena_hard", "open_llm"} <= set(benchmarks)
    for name, sub in [*commands.items(), *benchmarks.items()]:
        text = sub.format_help()
        assert "(default: None)" not in text and "(default: False)" not in text, name
    run = " ".join(commands["run"].format_help().split())
    assert "data order (default: 0)" in run and "(default: full)" in run
    assert run.count("default: full") == 1


@pytest.mark.parametrize("base", ["mistral-7b", "llama-3-8b", "gemma-2-9b"])
def test_paper_recipes_train_as_uclaml_sppo_does(base: str) -> None:
    # uclaml/SPPO 5e61c4e: sppo/trainer.py's tokenisation (tests/test_official_layout.py), no
    # max_grad_norm in recipes/uclaml-sppo/config_full.yaml (transformers' default, 1.0), Hugging
    # Face's epochs with a short last step (tests/test_schedule.py), scripts/compute_prob.py's
    # σ(s_i − s_j) and np.argmax / np.argmin (tests/test_probabilities.py)
    cfg = load_config(base)
    t = cfg.training
    assert (t.layout, t.max_grad_norm, t.last_batch) == ("official", 1.0, "partial")
    assert (cfg.preferences.probabilities, cfg.preferences.ties) == ("scores", "first")
    assert (t.max_length, t.max_prompt_length) == (1024, 512)


def _config_models(model: type[BaseModel], seen: set) -> list[type[BaseModel]]:
    if model in seen:
        return []
    seen.add(model)
    found = [model]
    for field in model.model_fields.values():
        for arg in [field.annotation, *typing.get_args(field.annotation)]:
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                found += _config_models(arg, seen)
    return found


def test_each_option_field_describes_exactly_its_options() -> None:
    """A field built with ``choice`` names the meaning of every value its ``Literal`` allows, and
    of no other, so its help cannot drift from what validation accepts."""
    checked = 0
    for model in _config_models(RunConfig, set()):
        for name, field in model.model_fields.items():
            extra = field.json_schema_extra or {}
            if "options" not in extra:
                continue
            assert typing.get_origin(field.annotation) is typing.Literal, f"{model.__name__}.{name}"
            assert list(typing.get_args(field.annotation)) == extra["options"], f"{model.__name__}.{name}"
            for option in extra["options"]:
                assert f"{option}: " in field.description, f"{model.__name__}.{name}: {option}"
            checked += 1
    assert checked >= 4  # preferences' probabilities and ties, training's layout and last_batch
