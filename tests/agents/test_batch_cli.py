"""The command line: exit codes, --dry-run, --help, config errors, SIGINT (agents/batch_reverse.py main)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

import agents.batch_reverse as br
from agents.batch.startup import RunningRoles
from tests.agents.doubles import World, fragment_sum, make_roles

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if main tries to start Ray / the roles."""
    def refuse(cfg, **_):
        raise AssertionError("Ray must not start here")
    monkeypatch.setattr(br, "start_ray_and_roles", refuse)


def _world():
    return World(fragment_sum({"red ball": 0.05}, unknown=-0.01))


def _folder(tmp_path, world) -> Path:
    images = tmp_path / "imgs"
    images.mkdir()
    Image.fromarray(world.reference).save(images / "ref.png")
    Image.fromarray(world.reference).save(images / "ref.bmp")
    (images / "bad.jpg").write_bytes(b"\xff\xd8\xff not really")
    return images


def test_help_documents_exit_codes(capsys):
    assert br.main(["--help"]) == 0
    text = capsys.readouterr().out
    for code in ("0 ", "1 ", "2 ", "3 ", "130"):
        assert f"\n  {code}" in text
    assert "--concurrency" in text and "--dry-run" in text
    for code in (br.EXIT_OK, br.EXIT_SOME_FAILED, br.EXIT_SETUP_ERROR, br.EXIT_FATAL, br.EXIT_INTERRUPTED):
        assert f"    {code} " in br.__doc__


def test_bad_arguments_and_config_are_setup_errors(tmp_path, capsys, no_ray):
    (tmp_path / "imgs").mkdir()
    assert br.main([]) == br.EXIT_SETUP_ERROR  # --dir missing (argparse)
    assert br.main(["--dir", str(tmp_path / "imgs"), "--concurrency", "0"]) == br.EXIT_SETUP_ERROR
    bad = tmp_path / "bad.yaml"
    bad.write_text("job:\n  concurrency: -3\n")
    assert br.main(["--dir", str(tmp_path / "imgs"), "--config", str(bad)]) == br.EXIT_SETUP_ERROR
    assert "config error" in capsys.readouterr().err
    assert br.main(["--dir", str(tmp_path / "imgs"), "--set", "job.nonsense=1"]) == br.EXIT_SETUP_ERROR
    assert "job.nonsense: unknown key" in capsys.readouterr().err
    assert br.main(["--dir", str(tmp_path / "missing")]) == br.EXIT_SETUP_ERROR
    assert "no such image folder" in capsys.readouterr().err


def test_dry_run_lists_work_without_starting_ray(tmp_path, capsys, no_ray):
    world = _world()
    images = _folder(tmp_path, world)
    Image.fromarray(world.reference).save(images / "copy.png")
    (images / "ref.png").replace(images / "a.png")
    out = tmp_path / "out"
    assert br.main(["--dir", str(images), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "run   " in text and "a.png  (same content: copy.png)" in text and "bad.jpg" in text
    assert "3 images: 3 to run, 0 to retry, 0 already done" in text
    assert not out.exists()  # a dry run writes nothing
    out.mkdir()
    partial = json.dumps({"image_id": "x", "status": "done"}) + "\n" + '{"image_id": "y", "sta'
    (out / "results.jsonl").write_text(partial)
    assert br.main(["--dir", str(images), "--out", str(out), "--dry-run"]) == 0
    assert (out / "results.jsonl").read_text() == partial  # not even the crash repair
    (tmp_path / "empty").mkdir()
    assert br.main(["--dir", str(tmp_path / "empty"), "--dry-run"]) == br.EXIT_SETUP_ERROR


def test_main_runs_the_batch_and_reports_exit_status(tmp_path, monkeypatch, capsys):
    world = _world()
    images = _folder(tmp_path, world)
    roles = make_roles(world, {None: ['["red ball"]'] * 40})
    monkeypatch.setattr(br, "start_ray_and_roles", lambda cfg, **_: RunningRoles(roles, False))
    out = tmp_path / "out"
    argv = ["--dir", str(images), "--out", str(out), "--set", "agent.framework=vanilla", "--set", "agent.max_steps=2",
            "--set", "job.summary_refresh_s=0", "--concurrency", "2"]
    assert br.main(argv) == br.EXIT_SOME_FAILED  # bad.jpg failed, the others finished
    err = capsys.readouterr().err
    assert "2 done, 1 failed" in err and "report.html" in err
    (images / "bad.jpg").unlink()
    assert br.main(argv) == br.EXIT_OK  # rerun: the two done are skipped, nothing fails
    assert "0 done, 0 failed, 2 already done" in capsys.readouterr().err


def test_start_failure_is_setup_error(tmp_path, monkeypatch, capsys):
    images = _folder(tmp_path, _world())

    def broken(cfg, **_):
        raise br.SetupError("cannot start the model roles: OSError: no such model folder")
    monkeypatch.setattr(br, "start_ray_and_roles", broken)
    assert br.main(["--dir", str(images), "--out", str(tmp_path / "out")]) == br.EXIT_SETUP_ERROR
    assert "setup error: cannot start the model roles" in capsys.readouterr().err


def test_write_failure_is_fatal_exit(tmp_path, monkeypatch, capsys):
    world = _world()
    images = _folder(tmp_path, world)
    monkeypatch.setattr(br, "start_ray_and_roles", lambda cfg, **_: RunningRoles(make_roles(world, {None: ['["red ball"]'] * 40}), False))

    def disk_full(self, record):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(br.ResultsLog, "append", disk_full)
    argv = ["--dir", str(images), "--out", str(tmp_path / "out"), "--set", "agent.framework=vanilla"]
    assert br.main(argv) == br.EXIT_FATAL
    assert "fatal error: OSError" in capsys.readouterr().err


# A driver process: main() with scripted roles whose T2I is slow, so SIGINT lands mid-batch.
DRIVER = r"""
import asyncio, sys
sys.path.insert(0, sys.argv[1])
import agents.batch_reverse as br
from agents.batch.startup import RunningRoles
from tests.agents.doubles import World, fragment_sum, make_roles

world = World(fragment_sum({"red ball": 0.05}, unknown=-0.01))
roles = make_roles(world, {None: ['["red ball"]'] * 400})
generate = roles.t2i.generate
async def slow_generate(prompt, seeds):
    await asyncio.sleep(0.3)
    return await generate(prompt, seeds)
roles.t2i.generate = slow_generate
from agents.batch.startup import RunningRoles
br.start_ray_and_roles = lambda cfg, **_: RunningRoles(roles, False)
sys.exit(br.main(sys.argv[2:]))
"""


def test_sigint_stops_with_130_and_rerun_completes(tmp_path):
    world = _world()
    images = tmp_path / "imgs"
    images.mkdir()
    ref = Image.fromarray(world.reference)
    for fmt in ("png", "bmp", "tiff"):
        ref.save(images / f"ref.{fmt}")
    out = tmp_path / "out"
    args = ["--dir", str(images), "--out", str(out), "--concurrency", "1", "--set", "agent.framework=vanilla",
            "--set", "agent.max_steps=3", "--set", "job.summary_refresh_s=0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(REPO), *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    log = out / "results.jsonl"
    while not (log.exists() and log.read_text().count("\n") >= 1):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first image never finished"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == br.EXIT_INTERRUPTED, err
    assert "SIGINT: stopping" in err and "interrupted: rerun to resume" in err
    first = [json.loads(x) for x in log.read_text().splitlines()]
    assert 1 <= len(first) < 3 and all(r["status"] == "done" for r in first)
    kept = (out / first[0]["output_dir"] / "result.json").read_bytes()

    done = subprocess.run([sys.executable, "-c", DRIVER, str(REPO), *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == br.EXIT_OK, done.stderr
    final = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(final) == 3 and all(r["status"] == "done" for r in final)
    assert (out / first[0]["output_dir"] / "result.json").read_bytes() == kept
