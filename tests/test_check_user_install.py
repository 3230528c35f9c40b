"""scripts/check_user_install.sh, which scripts/setup_env.sh runs on a fresh venv between the user's install and the
test tools (so every CI run checks README's no-GPU install), fails where it should: run on this test venv — the same
package and the same dry run, but with pytest in it — it must refuse, naming the test tools; and a venv whose main job
cannot run at all is refused naming the dry run."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "check_user_install.sh"


def _run(venv: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env={**os.environ, "VENV": str(venv)},
                          capture_output=True, text=True, timeout=300)


def test_a_venv_with_test_tools_is_not_a_users_install():
    venv = Path(sys.executable).parents[1]
    run = _run(venv)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "expected no pytest and a CPU torch" in run.stderr and "= False True" in run.stderr  # the dry run passed


def test_a_venv_that_cannot_run_the_main_job_is_refused(tmp_path):
    broken = tmp_path / "venv"
    (broken / "bin").mkdir(parents=True)
    (broken / "bin" / "python").symlink_to("/bin/false")
    run = _run(broken)
    assert run.returncode == 1 and "the main job's --dry-run failed" in run.stderr, run.stderr
