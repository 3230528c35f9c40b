"""Every command returns argparse's exit status instead of raising SystemExit (core.cli.parse_or_status),
so ``main(argv)`` works as a function and as a console script."""
import argparse
import importlib

import pytest

from core.cli import parse_or_status

COMMANDS = [("agents.batch_reverse", []), ("agents.evaluate", []), ("agents.editing.edit", []), ("agents.serve.__main__", []),
            ("agents.config.__main__", ["show"]), ("agents.profile_check.__main__", []), ("training.train", []),
            ("actors.shared_roles", [])]


def test_parse_or_status_returns_the_namespace_or_the_status():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int)
    assert parse_or_status(lambda: p.parse_args(["--n", "3"])).n == 3
    assert parse_or_status(lambda: p.parse_args(["--n", "three"])) == 2
    assert parse_or_status(lambda: p.parse_args(["--help"])) == 0


@pytest.mark.parametrize("module,prefix", COMMANDS, ids=[m for m, _ in COMMANDS])
def test_every_command_returns_its_status(module, prefix, capsys):
    main = importlib.import_module(module).main
    assert main(prefix + ["--help"]) == 0
    assert "usage:" in capsys.readouterr().out
    assert main(prefix + ["--no-such-flag"]) == 2
    assert "error:" in capsys.readouterr().err
