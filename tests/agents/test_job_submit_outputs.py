"""Under `ray job submit` the entrypoint runs in a temporary copy of the working directory that Ray deletes:
a relative output folder would lose every result, so the batch job and the evaluation refuse it before
anything starts (as training.train does for run_dir)."""
import subprocess
import sys
from pathlib import Path

import pytest

from agents.batch.errors import SetupError
from agents.batch.plan import ImageSource
from agents.batch.runner import prepare_output
from agents.config import ArpoConfig
from core.job_submit import JOB_ENV_VAR, missing_relative_input_problem, relative_output_problem

REPO = Path(__file__).resolve().parents[2]


def test_only_a_relative_local_folder_under_job_submit_is_a_problem():
    job = {JOB_ENV_VAR: "{}"}
    assert relative_output_problem("--out", "outputs/run", job).startswith("--out 'outputs/run' is relative")
    assert relative_output_problem("--out", "outputs/run", {}) is None
    assert relative_output_problem("--out", "/shared/outputs/run", job) is None
    assert relative_output_problem("--out", "s3://bucket/run", job) is None
    assert relative_output_problem("--out", "~/outputs", job) is None  # the home folder: absolute once expanded


def test_the_batch_jobs_model_free_checks_refuse_it(tmp_path, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(JOB_ENV_VAR, "{}")
    with pytest.raises(SetupError, match="--out 'out' is relative, and under `ray job submit`"):
        prepare_output(ImageSource(folder=images), Path("out"), ArpoConfig(), "refuse")
    assert not (tmp_path / "out").exists()  # refused before the lock or any file
    stack, _ = prepare_output(ImageSource(folder=images), tmp_path / "out", ArpoConfig(), "refuse")
    stack.close()


def test_a_relative_image_folder_missing_from_the_jobs_copy_is_explained(tmp_path, monkeypatch):
    job = {JOB_ENV_VAR: "{}"}
    monkeypatch.chdir(tmp_path)
    assert "uploads the code only, never images" in missing_relative_input_problem("--dir", "images/", job)
    assert missing_relative_input_problem("--dir", "images/", {}) is None  # not a submitted job
    assert missing_relative_input_problem("--dir", "/shared/images", job) is None
    (tmp_path / "images").mkdir()
    assert missing_relative_input_problem("--dir", "images/", job) is None  # uploaded after all: fine
    monkeypatch.setenv(JOB_ENV_VAR, "{}")
    with pytest.raises(SetupError, match="--dir 'gone' is relative and not in the job's copy"):
        prepare_output(ImageSource(folder=Path("gone")), tmp_path / "out", ArpoConfig(), "refuse")


def test_the_command_exits_2_before_ray_starts(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), JOB_ENV_VAR: "{}", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "agents.batch_reverse", "--dir", str(images), "--out", "rel_out"],
                         cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "--out 'rel_out' is relative" in run.stderr and "started a local Ray" not in run.stderr
    assert not (tmp_path / "rel_out").exists()


def test_the_evaluation_refuses_relative_output_folders(tmp_path, monkeypatch):
    from agents.eval.config import EvalConfig
    from agents.eval.runner import preflight

    images = tmp_path / "images"
    images.mkdir()
    monkeypatch.setenv(JOB_ENV_VAR, "{}")
    cfg = EvalConfig.model_validate({"evaluation": {"out_dir": "eval_out"}})
    with pytest.raises(SetupError, match=r"evaluation.out_dir \(--out\) 'eval_out' is relative"):
        preflight(cfg, images, [])
    cfg = EvalConfig.model_validate({"evaluation": {"out_dir": str(tmp_path / "eval"), "arpo_variants": {
        "m": {"label": "M", "results_dir": "arpo_m"}}}})
    with pytest.raises(SetupError, match=r"evaluation.arpo_variants.m.results_dir 'arpo_m' is relative"):
        preflight(cfg, images, [])
