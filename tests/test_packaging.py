"""pyproject.toml against the code: a LICENSE for the declared license, every imported distribution declared,
every declared one used, and version bounds that hold where CI runs."""
from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")
from packaging.requirements import Requirement  # noqa: E402
from packaging.specifiers import SpecifierSet  # noqa: E402
from packaging.version import Version  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
PACKAGES = ("actors", "agents", "core", "training")
#: Imported but deliberately not declared, each for a reason.
OPTIONAL_IMPORTS = {"pynvml": "the memory planner's GPU probe, guarded by ImportError (nvidia-smi is the fallback)"}
#: Declared but never imported, each for a reason.
UNIMPORTED = {"python-multipart": "FastAPI parses the upload form with it",
              "sqlalchemy": "MLflow's SQLite tracking store (core/tracking.py's default) needs it",
              "alembic": "MLflow's SQLite tracking store creates its tables with it"}


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imports(roots) -> dict[str, set[str]]:
    """Top-level module name -> files importing it, for every absolute import in ``roots``."""
    found: dict[str, set[str]] = {}
    for root in roots:
        for path in (REPO / root).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(REPO)))
    return found


def _third_party(imports: dict[str, set[str]]) -> dict[str, set[str]]:
    local = set(PACKAGES) | {"benchmarks", "tests", "scripts"}
    return {m: f for m, f in imports.items() if m not in local and m not in sys.stdlib_module_names}


def _declared(*extras: str) -> set[str]:
    reqs = list(PROJECT["dependencies"])
    for extra in extras:
        reqs += PROJECT["optional-dependencies"][extra]
    return {_canon(Requirement(r).name) for r in reqs}


def test_the_license_file_is_the_declared_license():
    assert PROJECT["license"] == {"text": "Apache-2.0"}
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text


def test_every_imported_distribution_is_declared():
    dists = packages_distributions()
    extras = [e for e in PROJECT["optional-dependencies"] if e != "dev"]
    declared = _declared(*extras)
    missing = {}
    for module, files in _third_party(_imports(PACKAGES)).items():
        if module in OPTIONAL_IMPORTS:
            continue
        names = {_canon(d) for d in dists.get(module, [module])}
        if not names & declared:
            missing[module] = sorted(files)[:3]
    assert not missing, f"imported by the package but not declared in pyproject.toml: {missing}"


def test_benchmarks_import_only_what_the_dev_extra_adds():
    dists = packages_distributions()
    declared = _declared(*PROJECT["optional-dependencies"])
    missing = {m: sorted(f)[:3] for m, f in _third_party(_imports(["benchmarks"])).items()
               if m not in OPTIONAL_IMPORTS and not {_canon(d) for d in dists.get(m, [m])} & declared}
    assert not missing, missing


def test_every_declared_dependency_is_used():
    dists = packages_distributions()
    imported = {_canon(d) for m in _third_party(_imports(PACKAGES)) for d in dists.get(m, [m])}
    unused = sorted(_declared() - imported - set(UNIMPORTED))
    assert not unused, f"declared in pyproject.toml but imported nowhere in {PACKAGES}: {unused}"


def test_python_bounds_hold_where_ci_runs():
    here = Version(f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}")
    assert here in SpecifierSet(PROJECT["requires-python"]), (here, PROJECT["requires-python"])


def test_ray_bound_covers_the_documented_commands_and_the_cluster_pin():
    ray = next(Requirement(r) for r in PROJECT["dependencies"] if Requirement(r).name == "ray")
    assert Version("2.51.9") not in ray.specifier, "RAY_AUTH_MODE=token (the cluster docs) needs Ray >= 2.52"
    pin = re.search(r'"ray\[[a-z,]+\]==([0-9.]+)"', (REPO / "cluster.yaml").read_text())
    assert pin and Version(pin.group(1)) in ray.specifier, "cluster.yaml's Ray is outside pyproject's range"
    ci_pin = re.search(r"^ray==([0-9.]+)$", (REPO / ".ci" / "constraints.txt").read_text(), re.M)
    assert ci_pin and Version(ci_pin.group(1)) in ray.specifier


def test_the_profile_checks_sample_images_ship_with_the_package():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["agents"]
    assert "profile_check/images/*.png" in data
    assert sorted(p.name for p in (REPO / "agents" / "profile_check" / "images").glob("*.png")) == \
        ["astronaut.png", "coffee.png"]
