"""`python -m agents.config show`: a profile's resolved settings, where each came from, and what it means."""
import json
from pathlib import Path

import pytest

from agents.config import ArpoConfig
from agents.config.__main__ import main
from agents.profiles import load_profile

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PROFILES = sorted(CONFIGS.glob("*.yaml")) + sorted((CONFIGS / "mdss").glob("*.yaml"))


def show(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["show", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def rows(capsys, *argv) -> dict:
    rc, out, err = show(capsys, *argv, "--json")
    assert rc == 0, err
    return {r["key"]: r for r in json.loads(out)}


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_profile_shows_every_setting_described(capsys, path):
    shown = rows(capsys, "--config", str(path))
    assert shown and all(r["description"] for r in shown.values()), [k for k, r in shown.items() if not r["description"]]
    kind = load_profile(str(path)).kind
    assert kind == ("mdss" if path.parent.name == "mdss" else "evaluation" if "eval" in path.name else "batch")


def test_the_lines_fed_back_as_overrides_rebuild_the_same_config(capsys):
    """The keys are the ones --set takes and the values parse back: the listing is the config, whole."""
    path = CONFIGS / "one_gpu_24gb.yaml"
    shown = rows(capsys, "--config", str(path))
    overrides = [f"{key}={json.dumps(r['value'])}" for key, r in shown.items()]
    rebuilt = load_profile(None, overrides).config
    assert rebuilt == load_profile(str(path)).config


def test_each_value_says_where_it_came_from(tmp_path, capsys):
    profile = tmp_path / "p.yaml"
    profile.write_text("agent:\n  max_steps: 7\nvlm:\n  vllm:\n    max_model_len: 2048\n")
    shown = rows(capsys, "--config", str(profile), "--set", "agent.patience=3", "--set", "vlm.vllm={enforce_eager: true}")
    assert shown["agent.max_steps"]["source"] == "profile" and shown["agent.max_steps"]["value"] == 7
    assert shown["agent.patience"]["source"] == "--set" and shown["agent.patience"]["value"] == 3
    assert shown["agent.seeds"]["source"] == "default"
    # a mapping given whole by --set replaces the file's: its keys are --set's, the file's sibling is gone
    assert shown["vlm.vllm.enforce_eager"]["source"] == "--set"
    assert shown["vlm.vllm.max_model_len"]["source"] == "default"
    assert shown["vlm.vllm.max_model_len"]["value"] == ArpoConfig().vlm.vllm.max_model_len


def test_the_text_form_shows_value_source_and_description(capsys):
    rc, out, _ = show(capsys, "--config", str(CONFIGS / "one_gpu_24gb.yaml"), "--set", "agent.max_steps=4", "agent")
    assert rc == 0
    assert out.splitlines()[0].startswith(f"# {CONFIGS / 'one_gpu_24gb.yaml'}: a batch profile (agents.config.ArpoConfig)")
    assert "agent.max_steps = 4  [--set]\n    Most optimisation iterations per image" in out
    assert all(line.startswith(("agent.", "    ", "#")) for line in out.splitlines())
    rc, brief, _ = show(capsys, "--brief", "agent.max_steps")
    assert brief.splitlines()[1:] == [f"agent.max_steps = {ArpoConfig().agent.max_steps}  [default]"]
    assert len(brief.splitlines()) == 2


def test_a_key_that_matches_nothing_is_refused_naming_it(capsys):
    rc, _, err = show(capsys, "--config", str(CONFIGS / "one_gpu_24gb.yaml"), "agent.no_such_key")
    assert rc == 2 and "agent.no_such_key" in err


def test_a_bad_profile_is_refused_naming_the_key(tmp_path, capsys):
    profile = tmp_path / "bad.yaml"
    profile.write_text("agent:\n  max_stepz: 3\n")
    rc, _, err = show(capsys, "--config", str(profile))
    assert rc == 2 and "agent.max_stepz" in err and "unknown key" in err
    rc, _, err = show(capsys, "--config", str(tmp_path / "missing.yaml"))
    assert rc == 2 and "no such config file" in err


def test_credentials_given_in_a_value_never_reach_the_output(capsys):
    """The profile refuses a URL with a password; the refusal masks it, and so does the listing's formatter."""
    from core.config_show import Setting, format_settings

    rc, out, err = show(capsys, "--set", "llm.openai.base_url=https://user:hunter2@127.0.0.1:8000/v1")
    assert rc == 2 and "hunter2" not in out + err and "https://***@127.0.0.1:8000/v1" in err
    text = format_settings([Setting("x.url", "postgresql://me:hunter2@db:5432/x", "profile", "")])
    assert "hunter2" not in text and "postgresql://***@db:5432/x" in text


def test_named_entries_are_listed_under_their_names(capsys):
    """An evaluation profile's ARPO variants: each variant's settings under evaluation.arpo_variants.<name>,
    the keys --set takes for them."""
    shown = rows(capsys, "--config", str(CONFIGS / "gpu_eval.yaml"), "evaluation.arpo_variants.mistral.results_dir",
                 "--set", "evaluation.arpo_variants.mistral.label=M")
    assert list(shown) == ["evaluation.arpo_variants.mistral.results_dir"]
    assert shown["evaluation.arpo_variants.mistral.results_dir"]["source"] == "profile"
    label = rows(capsys, "--config", str(CONFIGS / "gpu_eval.yaml"), "evaluation.arpo_variants.mistral.label",
                 "--set", "evaluation.arpo_variants.mistral.label=M")["evaluation.arpo_variants.mistral.label"]
    assert (label["value"], label["source"]) == ("M", "--set")


def test_a_reader_that_stops_early_gets_no_traceback():
    """`python -m agents.config show ... | head -2`: the listing ends quietly when the pipe closes."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "agents.config", "show", "--config", str(CONFIGS / "gpu_eval.yaml")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=CONFIGS.parent)
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and first.startswith(b"# ")
    assert "Traceback" not in err and "BrokenPipeError" not in err
