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
    assert cfg.t2i.max_prompt_tokens is None  # from the loaded pipeline (actors/prompt_budget.py)


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
    assert {"gpu_cluster.yaml", "one_gpu_80gb.yaml", "one_gpu_24gb.yaml"} <= {p.name for p in profiles}
    for p in profiles:
        load_config(EvalConfig if "eval" in p.name else ArpoConfig, p)


# ---- duplicate keys (PyYAML alone keeps the last one silently)

def test_a_repeated_section_is_refused_with_both_lines(tmp_path):
    p = write(tmp_path, """
        t2i:
          model: /models/a
        agent:
          max_steps: 3
        t2i:
          num_inference_steps: 20
    """)
    with pytest.raises(ConfigError) as e:
        load_config(ArpoConfig, p)
    assert str(e.value) == f"{p}: t2i: duplicate key (lines 2 and 6)"


def test_a_repeated_nested_key_names_its_path(tmp_path):
    p = write(tmp_path, "llm:\n  openai:\n    base_url: https://a/v1\n    timeout_s: 5\n    base_url: https://b/v1\n")
    with pytest.raises(ConfigError) as e:
        load_config(ArpoConfig, p)
    assert (e.value.source, e.value.key, e.value.reason) == (str(p), "llm.openai.base_url", "duplicate key (lines 3 and 5)")


def test_same_key_in_different_mappings_is_fine(tmp_path):
    p = write(tmp_path, "t2i:\n  model: /m/t2i\nllm:\n  model: /m/llm\nagent:\n  seeds: [1, 1]\n")
    cfg = load_config(ArpoConfig, p)
    assert (cfg.t2i.model, cfg.llm.model, cfg.agent.seeds) == ("/m/t2i", "/m/llm", [1, 1])


def test_the_duplicate_check_visits_aliased_nodes_once(tmp_path):
    """Nested aliases (a 'billion laughs' document) and a recursive alias do not blow up the check."""
    import time

    import yaml

    from core.config import UniqueKeyLoader

    doc = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    started = time.perf_counter()
    yaml.load(doc, Loader=UniqueKeyLoader)
    assert time.perf_counter() - started < 5
    assert yaml.load("a: &r [1, *r]\n", Loader=UniqueKeyLoader)["a"][0] == 1


def test_a_duplicate_key_inside_an_override_value_is_refused():
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        parse_override("clip.batching={a: 1, a: 2}")


# ---- what a --set value becomes: one YAML flow value, else the literal text

@pytest.mark.parametrize("raw, expected", [
    ("Content: a cat", "Content: a cat"),        # YAML: a block mapping {Content: a cat}
    ("- a cat", "- a cat"),                      # YAML: a block list
    ("a cat #cute", "a cat #cute"),              # YAML: drops the comment
    ("#cute", "#cute"),                          # YAML: null
    ("&a cat", "&a cat"),                        # YAML: drops the anchor
    ("[cat] on a mat", "[cat] on a mat"),        # not valid YAML
    ("style: oil, content: a: cat", "style: oil, content: a: cat"),
    ("  a cat  ", "a cat"),
    ("[0,1]", [0, 1]),
    ("[0, 1, 2]", [0, 1, 2]),
    ("{gpu_large: 1}", {"gpu_large": 1}),
    ("20", 20), ("0.5", 0.5), ("true", True), ("null", None), ('"1984"', "1984"), ("", ""),
])
def test_override_values(raw, expected):
    path, value = parse_override(f"agent.init_prompt={raw}")
    assert path == ["agent", "init_prompt"] and value == expected and type(value) is type(expected)


def test_set_a_prompt_that_looks_like_a_mapping_and_a_seed_list():
    cfg = load_config(ArpoConfig, None, ["agent.init_prompt=Content: a cat", "agent.seeds=[0,1]",
                                         "agent.max_steps=4"])
    assert cfg.agent.init_prompt == "Content: a cat"
    assert cfg.agent.seeds == [0, 1] and cfg.agent.max_steps == 4
