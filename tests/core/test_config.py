"""Config loading: file + dotted overrides, strict validation, errors that name file, key and reason."""
import textwrap

import pytest

from agents.config import ArpoConfig
from core.config import ConfigError, load_config, parse_override


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_defaults_validate():
    cfg = load_config(ArpoConfig)
    assert cfg.agent.max_steps == 10
    assert cfg.t2i.max_prompt_tokens == 77


def test_file_and_overrides(tmp_path):
    p = write(tmp_path, """
        t2i:
          model: /models/sd15
          num_inference_steps: 30
        agent:
          framework: vanilla
    """)
    cfg = load_config(ArpoConfig, p, ["t2i.num_inference_steps=20", "agent.seeds=[1, 2, 3]", "llm.backend=openai"])
    assert cfg.t2i.num_inference_steps == 20
    assert cfg.t2i.model == "/models/sd15"
    assert cfg.agent.seeds == [1, 2, 3]
    assert cfg.agent.framework == "vanilla"
    assert cfg.llm.backend == "openai"


def test_unknown_key_names_file_and_key(tmp_path):
    p = write(tmp_path, """
        t2i:
          num_inference_step: 20
    """)
    with pytest.raises(ConfigError) as e:
        load_config(ArpoConfig, p)
    msg = str(e.value)
    assert str(p) in msg and "t2i.num_inference_step" in msg and "unknown key" in msg


def test_wrong_type_names_key_and_reason(tmp_path):
    p = write(tmp_path, "clip:\n  batching:\n    max_batch_size: many\n")
    with pytest.raises(ConfigError) as e:
        load_config(ArpoConfig, p)
    assert e.value.source == str(p)
    assert e.value.key == "clip.batching.max_batch_size"
    assert "integer" in e.value.reason and "many" in e.value.reason


def test_bad_override_is_attributed_to_set(tmp_path):
    p = write(tmp_path, "agent:\n  max_steps: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(ArpoConfig, p, ["agent.max_steps=0"])
    assert "--set agent.max_steps" in str(e.value)
    assert "greater than or equal to 1" in str(e.value)


def test_literal_choice_error(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(ArpoConfig, None, ["llm.backend=tgi"])
    assert e.value.key == "llm.backend" and "vllm" in e.value.reason


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(ArpoConfig, tmp_path / "nope.yaml")
    p = write(tmp_path, "t2i: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(ArpoConfig, p)
    p = write(tmp_path, "- a\n- b\n", "list.yaml")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(ArpoConfig, p)


@pytest.mark.parametrize("text", ["novalue", "=3", "a..b=1"])
def test_malformed_override(text):
    with pytest.raises(ConfigError):
        parse_override(text)


def test_override_through_scalar_fails(tmp_path):
    p = write(tmp_path, "t2i:\n  model: x\n")
    with pytest.raises(ConfigError, match="not a mapping"):
        load_config(ArpoConfig, p, ["t2i.model.sub=1"])


def test_paths_expand_user(monkeypatch):
    monkeypatch.setenv("HOME", "/home/someone")
    cfg = load_config(ArpoConfig, None, ["t2i.model=~/models/sd"])
    assert cfg.t2i.model == "/home/someone/models/sd"


def test_repo_profiles_validate():
    """Every YAML profile in configs/ (top level) validates: batch profiles as ArpoConfig,
    evaluation profiles (*eval*.yaml) as EvalConfig."""
    from pathlib import Path

    from agents.eval.config import EvalConfig

    root = Path(__file__).resolve().parents[2] / "configs"
    profiles = sorted(root.glob("*.yaml"))
    assert len(profiles) >= 4, profiles
    for p in profiles:
        load_config(EvalConfig if "eval" in p.name else ArpoConfig, p)
