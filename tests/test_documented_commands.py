"""Every shell command shown in README.md and docs/**/*.md is one that works as written (issue #26).

Commands are read from fenced ```bash / ```sh / ```shell / ```console blocks: backslash
continuations joined, ``#`` comments dropped, split into simple commands on ``&&``, ``||``, ``;``,
``|``, ``&`` and parentheses, leading ``NAME=value`` environment settings set aside. Then:

* ``python -m MODULE`` (any python: ``python``, ``python3``, ``.venv/bin/python``) and the
  installed ``expectdiff-*`` commands (mapped to their module through pyproject's
  [project.scripts]): the module exists, and every ``--flag`` used appears in the module's
  ``--help`` (or its subcommand's, e.g. ``agents.config show --help``), run once per module in a
  subprocess with HF_HUB_OFFLINE=1.
* Every argument that names a repository file (``configs/...``, ``scripts/...``, ``examples/...``,
  ``benchmarks/...``, ``tests/...``, ``deploy/...``, ``cluster.yaml``) exists; placeholders (``<name>``, ``*``,
  ``...``) are skipped.
* ``ray job submit``: the rule is that every documented submission goes to cluster.yaml's cluster
  (or a Ray started by hand, which since Ray 2.52 also runs with token authentication by default),
  so each must name its cluster with ``--address`` (or a ``RAY_ADDRESS=`` setting) and carry
  ``RAY_AUTH_MODE=token``. The one exemption is a line whose own comment says
  ``# local Ray without token auth`` (for a Ray started with RAY_AUTH_MODE=disabled); none exists
  today. The entrypoint after ``--`` is checked like any other command.
  A submission that uploads code does it with ``--runtime-env deploy/job_runtime_env.yaml`` (the code
  only), never ``--working-dir .`` or ``--runtime-env-json`` (the whole checkout, images and venv included).
* ``ray up``: never backgrounded with ``&`` (that backgrounds the whole chain, so the next line
  would run before the cluster exists), and with ``-y`` when another command follows it on the line.
* The role-starting commands (``agents.batch_reverse``, ``agents.evaluate``, ``agents.serve`` and
  their ``expectdiff-*`` names) given a profile whose roles ask for custom resources (cluster.yaml's
  node types ``gpu_large`` / ``gpu_small``: configs/gpu_cluster.yaml, configs/gpu_eval.yaml) run only
  as a ``ray job submit`` entrypoint: on a workstation no node offers those resources (exit 2).
* README's main command runs with ``--dry-run`` (it lists the images and exits before Ray starts).
"""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UPLOAD_RUNTIME_ENV = "deploy/job_runtime_env.yaml"
SHELL_LANGS = {"bash", "sh", "shell", "console"}
SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;", "|&"}
REDIRECTS = re.compile(r"^\d*(>|>>|<|>&|<&|&>)$")
ENV_SETTING = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
PYTHONS = re.compile(r"^(?:\S*/)?python(?:3(?:\.\d+)?)?$")
REPO_PATH = re.compile(r"^(?:\./)?(?:configs|scripts|examples|benchmarks|tests|deploy)/\S+$|^(?:\./)?cluster\.yaml$")
PLACEHOLDER = re.compile(r"<[A-Za-z][\w.-]*>")
PLACEHOLDER_MARK = "__placeholder__"
ROLE_STARTERS = {"agents.batch_reverse", "agents.evaluate", "agents.serve"}
LOCAL_RAY_EXEMPTION = "# local Ray without token auth"
README_MAIN = ("bash scripts/setup_env.sh && .venv/bin/python -m agents.offline_kit && .venv/bin/python -m "
               "agents.batch_reverse --dir examples/images --config configs/offline.yaml --out outputs/demo")
README_TESTS = "bash scripts/setup_env.sh && .venv/bin/python -m pytest -q"


@dataclass(frozen=True)
class Command:
    where: str            # file:line
    line: str             # the logical line (continuations joined)
    env: tuple[str, ...]  # NAME=value settings before the command
    argv: tuple[str, ...]
    backgrounded: bool    # the line has a lone '&'
    followed: bool        # another command follows this one on the line
    submitted: bool = False  # the entrypoint of a `ray job submit`


def markdown_files() -> list[Path]:
    return [REPO / "README.md"] + sorted((REPO / "docs").rglob("*.md"))


def shell_lines(path: Path) -> list[tuple[str, str]]:
    """(file:line, logical line) of each command line in the file's shell code blocks. A line that
    starts with ``[`` continues the usage synopsis above it (``[--batch OUT ...]``)."""
    found: list[tuple[str, str]] = []
    block_lang, pending, start = None, "", 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = re.match(r"^\s*```\s*([\w-]*)", raw)
        if fence:
            block_lang = None if block_lang is not None else fence.group(1).lower()
            pending = ""
            continue
        if block_lang not in SHELL_LANGS:
            continue
        line = raw.strip()
        if block_lang == "console":
            if not line.startswith("$ "):
                continue  # output, not a command
            line = line[2:]
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical, pending = (pending + line).strip(), ""
        if not logical or logical.startswith("#"):
            continue
        if logical.startswith("[") and found and not raw.startswith("["):
            found[-1] = (found[-1][0], found[-1][1] + " " + logical)
        else:
            found.append((f"{path.relative_to(REPO)}:{start}", logical))
    return found


def tokens(line: str) -> list[str]:
    """Shell words and operators; a ``<placeholder>`` inside a word stays in it (not a redirection)."""
    line = PLACEHOLDER.sub(PLACEHOLDER_MARK, line)
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def split_commands(where: str, line: str) -> list[Command]:
    parts = tokens(line)
    backgrounded = "&" in parts
    simple, current = [], []
    for token in parts + [";"]:
        if token in SEPARATORS:
            if current:
                simple.append(current)
            current = []
        else:
            current.append(token)
    commands = []
    for index, argv in enumerate(simple):
        words, skip_next = [], False
        for token in argv:  # drop redirections and their targets
            if skip_next:
                skip_next = False
            elif REDIRECTS.match(token):
                skip_next = True
            else:
                words.append(token)
        env = []
        while words and ENV_SETTING.match(words[0]):
            env.append(words.pop(0))
        if words:
            commands.append(Command(where, line, tuple(env), tuple(words), backgrounded, index < len(simple) - 1))
    return commands


def documented_commands() -> list[Command]:
    found = []
    for path in markdown_files():
        for where, line in shell_lines(path):
            for command in split_commands(where, line):
                found.append(command)
                if command.argv[:3] == ("ray", "job", "submit") and "--" in command.argv:
                    entry = command.argv[command.argv.index("--") + 1:]
                    found.append(Command(where, line, (), entry, False, False, submitted=True))
    return found


@lru_cache(maxsize=None)
def console_scripts() -> dict[str, str]:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    return {name: target.split(":")[0].removesuffix(".__main__") for name, target in scripts.items()}


def module_and_args(argv: tuple[str, ...]) -> tuple[str, list[str]] | None:
    """(module, its arguments) for a python -m or expectdiff-* command, else None."""
    if PYTHONS.match(argv[0]) and len(argv) > 2 and argv[1] == "-m":
        return argv[2], list(argv[3:])
    name = Path(argv[0]).name
    if name in console_scripts():
        return console_scripts()[name], list(argv[1:])
    return None


@lru_cache(maxsize=None)
def help_text(module: str, subcommand: str | None = None) -> str:
    """``python -m MODULE [SUBCOMMAND] --help``; the subcommand's help only if it is one."""
    argv = [sys.executable, "-m", module] + ([subcommand] if subcommand else []) + ["--help"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    run = subprocess.run(argv, capture_output=True, text=True, timeout=180, cwd=REPO, env=env)
    assert run.returncode == 0, f"{' '.join(argv[1:])} failed ({run.returncode}): {run.stderr[-2000:]}"
    return run.stdout


def effective_help(module: str, args: list[str]) -> str:
    """The module's help, or its subcommand's when the first argument is a subcommand."""
    if args and not args[0].startswith("-") and module != "pytest":
        sub = help_text(module, args[0])
        if sub.startswith("usage:") and f" {args[0]} " in sub.splitlines()[0] + " ":
            return sub
    return help_text(module)


def flags(args: list[str]) -> list[str]:
    """The long options among ``args`` (``--name``, ``--name=value``, ``[--name`` of a usage line)."""
    return [arg.lstrip("[").split("=", 1)[0].rstrip("]") for arg in args if re.match(r"^\[?--[A-Za-z]", arg)]


@lru_cache(maxsize=None)
def pins_node_types(profile: str) -> bool:
    """Does the profile's YAML give some role non-empty ``custom_resources`` (a node type of a cluster)?"""
    import yaml

    def walk(node) -> bool:
        if isinstance(node, dict):
            return any((key == "custom_resources" and bool(value)) or walk(value) for key, value in node.items())
        return isinstance(node, list) and any(walk(item) for item in node)

    path = REPO / profile
    return path.is_file() and walk(yaml.safe_load(path.read_text()))


def option_value(args: list[str], name: str) -> str | None:
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def placeholder(arg: str) -> bool:
    return any(mark in arg for mark in (PLACEHOLDER_MARK, "*", "...", "$"))


def problems_of(command: Command) -> list[str]:
    problems, argv = [], command.argv
    say = lambda text: problems.append(f"{command.where}: {text}: {command.line}")  # noqa: E731
    if argv[:3] == ("ray", "job", "submit"):
        exempt = LOCAL_RAY_EXEMPTION in command.line
        has_address = "--address" in argv or any(e.startswith("RAY_ADDRESS=") for e in command.env)
        if not exempt and not has_address:
            say("ray job submit without --address (which cluster?)")
        if not exempt and "RAY_AUTH_MODE=token" not in command.env:
            say("ray job submit without RAY_AUTH_MODE=token (cluster.yaml's cluster refuses it)")
        if "--working-dir" in argv or "--runtime-env-json" in argv:
            say("ray job submit uploading with --working-dir/--runtime-env-json: use --runtime-env "
                f"{UPLOAD_RUNTIME_ENV} (the code only: tests/test_job_upload.py)")
    if argv[:2] == ("ray", "up"):
        if command.backgrounded:
            say("`ray up` in a line with `&`: the whole chain goes to the background")
        if command.followed and not ({"-y", "--yes"} & set(argv)):
            say("`ray up` chained without -y (it stops to ask)")
    for arg in argv[1:]:
        if REPO_PATH.match(arg) and not placeholder(arg) and not (REPO / arg).exists():
            say(f"{arg} does not exist")
    target = module_and_args(argv)
    if target is None:
        return problems
    module, args = target
    if importlib.util.find_spec(module) is None:
        say(f"no module {module}")
        return problems
    profile = option_value(args, "--config")
    if module in ROLE_STARTERS and profile and pins_node_types(profile) and not command.submitted:
        say(f"{profile} pins roles to cluster node types: run it with `ray job submit` (exit 2 on a workstation)")
    usage = effective_help(module, args)
    for flag in flags(args):
        if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", usage):
            say(f"{module} has no option {flag}")
    return problems


COMMANDS = documented_commands()


def test_commands_are_found():
    lines = {c.line for c in COMMANDS}
    assert README_MAIN in lines and README_TESTS in lines  # README's two commands, exactly
    assert sum(module_and_args(c.argv) is not None for c in COMMANDS) >= 30


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.where}:{' '.join(c.argv[:3])}")
def test_documented_command_is_true(command):
    assert problems_of(command) == []


def test_the_checks_catch_each_kind_of_mistake():
    wrong = {
        "ray up cluster.yaml && ray dashboard cluster.yaml &": ["background", "without -y"],
        "RAY_ADDRESS=http://127.0.0.1:8265 ray job submit --working-dir . -- python -m agents.report out": ["RAY_AUTH_MODE"],
        "RAY_AUTH_MODE=token ray job submit -- python -m agents.report --no-such-flag x": ["--address", "--no-such-flag"],
        "RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m agents.report o": [
            "--working-dir"],
        "python -m agents.batch_reverse --dir x --config configs/nope.yaml": ["configs/nope.yaml"],
        "expectdiff-reverse --dir x --no-such-flag": ["--no-such-flag"],
        "python -m agents.no_such_module --help": ["no module"],
        "python -m agents.batch_reverse --dir images/ --config configs/gpu_cluster.yaml": ["ray job submit"],
    }
    for line, expected in wrong.items():
        found = [p for c in split_commands("x.md:1", line) for p in problems_of(c)]
        if "--" in tokens(line):
            entry = tokens(line)[tokens(line).index("--") + 1:]
            found += problems_of(Command("x.md:1", line, (), tuple(entry), False, False))
        for text in expected:
            assert any(text in p for p in found), (line, text, found)


def test_readme_main_command_runs_as_a_dry_run(tmp_path):
    """README's main job, as written, with --dry-run: it lists the four sample images and exits 0
    (no Ray, no models); the output folder is a temporary one so outputs/demo stays untouched."""
    main = next(c for c in COMMANDS if c.line == README_MAIN and "agents.batch_reverse" in c.argv)
    argv = list(main.argv)
    argv[argv.index("--out") + 1] = str(tmp_path / "demo")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    run = subprocess.run([sys.executable] + argv[1:] + ["--dry-run"], capture_output=True, text=True,
                         timeout=120, cwd=REPO, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "4 images" in run.stdout
