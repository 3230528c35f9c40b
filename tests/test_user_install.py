"""README's no-GPU install (`bash scripts/install_python.sh`) into a fresh venv — from pip's cache and the
machine's configured indexes, with PyTorch's CPU index asked first as a user's machine would — then the main
job's `--dry-run` with that venv's Python. Only what the main job needs: no test tools.

Minutes (torch, vLLM's CPU build and the rest are installed again): marked slow."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def test_the_no_gpu_install_runs_the_main_jobs_dry_run(tmp_path):
    venv = tmp_path / "venv"
    env = {**os.environ, "VENV": str(venv)}
    env.pop("VIRTUAL_ENV", None)
    install = subprocess.run(["bash", "scripts/install_python.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=1400)
    assert install.returncode == 0, install.stderr[-4000:]
    assert "environment ok: torch 2.13.0" in install.stdout
    python = venv / "bin" / "python"
    dry = subprocess.run([str(python), "-m", "agents.batch_reverse", "--dir", "examples/images", "--config",
                          "configs/offline.yaml", "--out", str(tmp_path / "out"), "--dry-run"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr[-4000:]
    assert "4 images: 4 to run" in dry.stdout
    # the user's venv has no test tools, and its torch is the CPU build
    probe = subprocess.run([str(python), "-c", "import importlib.util as u, torch; "
                            "print(u.find_spec('pytest') is None, torch.version.cuda is None)"],
                           capture_output=True, text=True, timeout=300)
    assert probe.stdout.split() == ["True", "True"], probe.stderr[-2000:]
