"""The console scripts of pyproject's [project.scripts] (installed by scripts/setup_env.sh's `pip install -e`)."""
from __future__ import annotations

import importlib
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

COMMANDS = {
    "expectdiff-reverse": "agents.batch_reverse:main",
    "expectdiff-evaluate": "agents.evaluate:main",
    "expectdiff-edit": "agents.edit:main",
    "expectdiff-train": "training.train:main",
    "expectdiff-plan": "actors.plan:main",
    "expectdiff-serve": "agents.serve.__main__:main",
    "expectdiff-check": "agents.profile_check.__main__:main",
    "expectdiff-config": "agents.config.__main__:main",
}


def test_pyproject_declares_every_command():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == COMMANDS


def test_installed_entry_points_match():
    installed = {ep.name: ep.value for ep in entry_points(group="console_scripts") if ep.name.startswith("expectdiff-")}
    assert installed == COMMANDS, "reinstall: .venv/bin/pip install -q --no-deps -e ."


@pytest.mark.parametrize("name", ["expectdiff-reverse", "expectdiff-evaluate", "expectdiff-edit", "expectdiff-train",
                                  "expectdiff-serve", "expectdiff-check", "expectdiff-config"])
def test_each_main_returns_its_exit_status_as_an_int(name, capsys):
    module, attr = COMMANDS[name].split(":")
    main = getattr(importlib.import_module(module), attr)
    assert main(["--help"]) == 0  # argparse's exit is turned into a return value, not raised
    assert isinstance(main(["--no-such-option"]), int) and main(["--no-such-option"]) == 2
    capsys.readouterr()


def _script(name: str) -> Path:
    path = Path(sys.executable).parent / name
    assert path.is_file(), f"{path} missing: reinstall with .venv/bin/pip install -q --no-deps -e ."
    return path


def test_expectdiff_reverse_runs_as_a_command(tmp_path):
    help_run = subprocess.run([str(_script("expectdiff-reverse")), "--help"], capture_output=True, text=True, timeout=120)
    assert help_run.returncode == 0, help_run.stderr
    assert help_run.stdout.startswith("usage: expectdiff-reverse ") and "--image FILE" in help_run.stdout
    # the exit status comes through the console script's wrapper
    missing = subprocess.run([str(_script("expectdiff-reverse")), "--image", str(tmp_path / "none.png"),
                              "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "setup error: --image" in missing.stderr


@pytest.mark.parametrize("name", ["expectdiff-train", "expectdiff-plan"])
def test_other_commands_start(name):
    run = subprocess.run([str(_script(name)), "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.startswith("usage: "), run.stderr
