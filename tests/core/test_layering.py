"""The import structure the architecture notes promise, read from the source (every import,
function-level ones included): a lower layer never imports a higher one, and no cycles
between the modules that used to form one."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def package_files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("lower, higher", [("actors", "agents"), ("training", "agents"), ("core", "agents"),
                                           ("core", "actors"), ("core", "training"), ("actors", "training")])
def test_lower_layers_never_import_higher_ones(lower, higher):
    offenders = {str(p.relative_to(REPO)): sorted(m for m in imported_modules(p) if m == higher or m.startswith(higher + "."))
                 for p in package_files(lower)}
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize("module, must_not_import", [
    ("agents/browser/report.py", "agents.editing.edit"),  # agents.editing.edit imports the report: no cycle back
    ("agents/eval/runner.py", "agents.batch_reverse"),  # the library never imports the CLI shell
    ("agents/evaluate.py", "agents.batch_reverse"),
    ("agents/batch/runner.py", "agents.batch_reverse"),
])
def test_no_import_of_a_shell_or_back_edge(module, must_not_import):
    mods = imported_modules(REPO / module)
    assert not any(m == must_not_import or m.startswith(must_not_import + ".") for m in mods)
