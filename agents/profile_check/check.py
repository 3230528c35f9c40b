"""Run a batch profile's exact settings on this CPU with every model replaced by its twin.

The real batch job (``python -m agents.batch_reverse``, a process of its own with its own local Ray)
runs the twin profile on two sample images for two iterations; the check passes when both images
finish. A failure is reported with the role and the setting the job names (a role that fails to load,
a setting refused at load, an image whose optimisation failed in a node).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from agents.profile_check.twin_profile import TwinProfile

#: Seconds the batch job may take: engine starts on 2 CPU cores are ~15-60 s each.
JOB_TIMEOUT_S = 900


@dataclass
class CheckResult:
    passed: bool
    wall_s: float
    images_done: int = 0
    problems: list[str] = field(default_factory=list)
    job_output: str = ""


#: Two real photographs shipped with the package, 96 px on the longer side (the check is of plumbing):
#: scikit-image's sample images "astronaut" (NASA, public domain) and "coffee" (Rachel Michetti, CC0).
SAMPLE_IMAGES = Path(__file__).resolve().parent / "images"


def sample_images(folder: Path) -> Path:
    """Copy the two sample photographs into ``folder`` (the batch job's --dir)."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for image in sorted(SAMPLE_IMAGES.glob("*.png")):
        shutil.copyfile(image, folder / image.name)
    return folder


def write_profile(twin: TwinProfile, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by agents.profile_check: the profile's settings with each model replaced by its "
                    "random-weight twin\n" + yaml.safe_dump(twin.profile, sort_keys=False))
    return path


def _problems_from(out_dir: Path, output: str, rc: int) -> tuple[int, list[str]]:
    results = out_dir / "results.jsonl"
    done, problems = 0, []
    if results.is_file():
        for line in results.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("status") == "done":
                done += 1
            else:
                problems.append(f"image {record.get('source')}: {record.get('error')}")
    if rc not in (0, 1):
        # The job's own verdict ("setup error: ...", naming each role and setting), else the output's tail.
        said, inside = [], False
        for ln in output.splitlines():
            if ln.startswith(("setup error:", "config error:")):
                said.append(ln)
                inside = True
            elif inside and ln[:1].isspace() and ln.strip():  # the verdict's own indented lines (one per role)
                said.append(ln)
            else:
                inside = False
        shown = said or [ln for ln in output.splitlines() if ln.strip()][-12:]
        problems.append(f"the batch job exited {rc}:\n    " + "\n    ".join(shown))
    return done, problems


def run_job(profile_path: Path, images: Path, out_dir: Path, timeout_s: float = JOB_TIMEOUT_S,
            env: Optional[dict] = None) -> CheckResult:
    """The batch job on ``images`` with ``profile_path``; passes when every image is done."""
    cmd = [sys.executable, "-m", "agents.batch_reverse", "--dir", str(images), "--config", str(profile_path),
           "--out", str(out_dir)]
    job_env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", **(env or {})}
    t0 = time.monotonic()
    try:
        done = subprocess.run(cmd, env=job_env, capture_output=True, text=True, timeout=timeout_s)
        output, rc = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        output, rc = f"{exc.stdout or ''}{exc.stderr or ''}\n(timed out after {timeout_s:g} s)", -1
    wall = time.monotonic() - t0
    images_done, problems = _problems_from(out_dir, output, rc)
    total = len([p for p in images.iterdir() if p.suffix == ".png"])
    if images_done < total and not problems:
        problems.append(f"{images_done} of {total} images finished (exit {rc})")
    return CheckResult(passed=rc == 0 and images_done == total, wall_s=wall, images_done=images_done,
                       problems=problems, job_output=output)


def run_training(profile_path: Path, run_dir: Path, timeout_s: float = JOB_TIMEOUT_S,
                 in_process: bool = False) -> CheckResult:
    """``python -m training.train`` on the twin profile; passes when it exits 0 with a checkpoint in ``run_dir``.
    ``in_process``: call its ``main`` here instead, on the Ray this process already holds (tests share one)."""
    cmd = [sys.executable, "-m", "training.train", "--config", str(profile_path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    t0 = time.monotonic()
    if in_process:
        import contextlib
        import io

        from training.train import main as train_main

        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            rc = train_main(["--config", str(profile_path)])
        output = buffer.getvalue()
    else:
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
            output, rc = done.stdout + done.stderr, done.returncode
        except subprocess.TimeoutExpired as exc:
            output, rc = f"{exc.stdout or ''}{exc.stderr or ''}\n(timed out after {timeout_s:g} s)", -1
    wall = time.monotonic() - t0
    checkpoints = sorted(run_dir.glob("*/checkpoint_*")) if run_dir.is_dir() else []
    problems = []
    if rc != 0:
        tail = [ln for ln in output.splitlines() if ln.strip()][-12:]
        problems.append(f"training exited {rc}:\n    " + "\n    ".join(tail))
    elif not checkpoints:
        problems.append(f"training exited 0 but wrote no checkpoint under {run_dir}")
    return CheckResult(passed=rc == 0 and bool(checkpoints), wall_s=wall, images_done=0, problems=problems,
                       job_output=output)
