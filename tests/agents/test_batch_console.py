"""The quiet console (agents/batch/console.py): the batch CLI prints the progress bar, warnings and errors;
the driver's log goes to OUT/logs/job.log and the roles' output to OUT/logs/<role>.log; --verbose puts
everything back on the console."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

import agents.batch_reverse as br
from agents.batch.startup import RunningRoles
from tests.agents.doubles import World, fragment_sum, make_roles

REPO = Path(__file__).resolve().parents[2]


def _folder(tmp_path: Path, world: World) -> Path:
    images = tmp_path / "imgs"
    images.mkdir()
    Image.fromarray(world.reference).save(images / "ref.png")
    (images / "bad.jpg").write_bytes(b"\xff\xd8\xff not really")
    return images


def _run(tmp_path, monkeypatch, capsys, *extra: str) -> tuple[int, str, dict]:
    world = World(fragment_sum({"red ball": 0.05}, unknown=-0.01))
    images = _folder(tmp_path, world)
    seen: dict = {}

    def start(cfg, **kwargs):  # stands in for Ray and the roles; logs as they would at start-up
        seen.update(kwargs)
        logging.getLogger("agents.batch").info("INFO-NOISE from the job")
        logging.getLogger("ray").info("RAY-INFO-NOISE")
        logging.getLogger("ray").warning("RAY-ROUTINE-WARNING")
        return RunningRoles(make_roles(world, {None: ['["red ball"]'] * 40}), False)

    monkeypatch.setattr(br, "start_ray_and_roles", start)
    out = tmp_path / "out"
    code = br.main(["--dir", str(images), "--out", str(out), "--set", "agent.framework=vanilla",
                    "--set", "agent.max_steps=2", "--set", "job.summary_refresh_s=0", *extra])
    return code, capsys.readouterr().err, seen


def test_quiet_console_shows_progress_and_warnings_only_and_logs_to_files(tmp_path, monkeypatch, capsys):
    code, err, seen = _run(tmp_path, monkeypatch, capsys)
    assert code == br.EXIT_SOME_FAILED
    lines = err.splitlines()
    assert any(line.startswith("images 2/2 | done 1 | failed 1") and "ETA" in line for line in lines), err
    assert not [line for line in lines if line.startswith(("INFO", "DEBUG"))], err
    assert "INFO-NOISE" not in err and "RAY-INFO-NOISE" not in err and "RAY-ROUTINE-WARNING" not in err
    assert any(line.startswith("WARNING agents.batch: failed: bad.jpg") for line in lines)  # warnings still show
    assert "1 done, 1 failed" in err and "\r" not in err  # not a terminal: plain lines
    out = tmp_path / "out"
    assert seen == {"log_dir": out / "logs"}  # the roles are told where their logs go
    job_log = (out / "logs" / "job.log").read_text()
    for text in ("INFO agents.batch_reverse: job started", "INFO-NOISE from the job", "RAY-INFO-NOISE",
                 "RAY-ROUTINE-WARNING", "WARNING agents.batch: failed: bad.jpg", "1 done, 1 failed"):
        assert text in job_log
    # main leaves logging as it found it: nothing of the job's handlers or Ray's routing stays behind
    assert not any(type(h).__name__ == "ConsoleHandler" for h in logging.getLogger().handlers)
    assert logging.getLogger("ray").propagate is False


def test_verbose_console_shows_everything(tmp_path, monkeypatch, capsys):
    code, err, seen = _run(tmp_path, monkeypatch, capsys, "--verbose")
    assert code == br.EXIT_SOME_FAILED
    assert "INFO agents.batch_reverse: job started" in err and "INFO-NOISE from the job" in err
    assert "INFO ray: RAY-INFO-NOISE" in err and "WARNING ray: RAY-ROUTINE-WARNING" in err
    assert any(line.startswith("images 2/2") for line in err.splitlines())
    assert seen == {}  # Ray's own logging: workers' output forwarded to the console
    job_log = (tmp_path / "out" / "logs" / "job.log").read_text()
    assert "job started" in job_log and "RAY-INFO-NOISE" in job_log


def test_init_ray_stops_forwarding_worker_output_only_for_a_local_ray(monkeypatch):
    import ray

    from core.ray_config import RayConfig, init_ray

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert init_ray(RayConfig(num_cpus=1), log_to_driver=False) is True
    assert calls[-1]["log_to_driver"] is False
    # a new instance, never whatever Ray another process left running on this machine
    assert calls[-1]["address"] == "local" and calls[-1]["_node_ip_address"] == "127.0.0.1"
    assert init_ray(RayConfig(num_cpus=1)) is True and calls[-1]["log_to_driver"] is True
    # a cluster: its nodes may not see the output folder, Ray's forwarding stays on
    assert init_ray(RayConfig(address="ray://10.0.0.1:10001"), log_to_driver=False) is False
    assert calls[-1]["log_to_driver"] is True and calls[-1]["address"] == "ray://10.0.0.1:10001"


# A driver process: a local Ray forwarding workers' output (the default), two actors of one small
# class, one started with a log file. The one with a log file must write only there.
ACTOR_DRIVER = textwrap.dedent(r"""
    import logging, os, sys, time
    sys.path.insert(0, sys.argv[1])
    import ray
    from actors.config import ResourceConfig
    from actors.ray_actors import start_role
    from core.ray_config import RayConfig, init_ray

    class Talker:
        def __init__(self, name):
            print(f"PRINTED-AT-START-{name}", flush=True)
            logging.getLogger("talker").info(f"LOGGED-AT-START-{name}")
            os.system(f"echo CHILD-PROCESS-{name}")  # a child process inherits fds 1 and 2
        async def ping(self):
            print("PRINTED-IN-PING", flush=True)
            return "pong"

    init_ray(RayConfig(num_cpus=1))
    res = ResourceConfig(num_cpus=0.1, num_gpus=0)
    quiet = start_role("talker", Talker, "quiet", res, log_file=sys.argv[2])
    loud = start_role("talker", Talker, "loud", res)
    import asyncio
    async def ping():
        return await quiet.ping(), await loud.ping()
    print(asyncio.run(ping()), file=sys.stderr, flush=True)
    time.sleep(3)  # Ray forwards workers' output about every second
    ray.shutdown()
""")


@pytest.mark.ray
def test_a_role_actor_with_a_log_file_writes_there_not_to_the_driver(tmp_path):
    log_file = tmp_path / "out" / "logs" / "talker.log"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    run = subprocess.run([sys.executable, "-c", ACTOR_DRIVER, str(REPO), str(log_file)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    driver = run.stdout + run.stderr
    assert "('pong', 'pong')" in driver
    # the actor without a log file shows that Ray does forward output here ...
    assert "PRINTED-AT-START-loud" in driver and "CHILD-PROCESS-loud" in driver
    # ... and the one with a log file kept all of its output in the file
    assert "quiet" not in driver.replace("('pong', 'pong')", "")
    text = log_file.read_text()
    for line in ("PRINTED-AT-START-quiet", "INFO talker: LOGGED-AT-START-quiet", "CHILD-PROCESS-quiet", "PRINTED-IN-PING"):
        assert line in text
    assert "loud" not in text


DRIVER = r"""
import sys
sys.path.insert(0, sys.argv[1])
import agents.batch_reverse as br
from agents.batch.startup import RunningRoles
from tests.agents.doubles import World, fragment_sum, make_roles

world = World(fragment_sum({"red ball": 0.05}, unknown=-0.01))
br.start_ray_and_roles = lambda cfg, **_: RunningRoles(make_roles(world, {None: ['["red ball"]'] * 40}), False)
sys.exit(br.main(sys.argv[2:]))
"""


def _cli_output(tmp_path: Path, on_a_terminal: bool) -> str:
    """The batch CLI's stderr, written to a pseudo-terminal or to a pipe."""
    import threading

    world = World(fragment_sum({"red ball": 0.05}, unknown=-0.01))
    images = _folder(tmp_path, world)
    # One at a time, in name order: bad.jpg fails first, so the bar's states come in a fixed order
    # however loaded the machine is.
    args = ["--dir", str(images), "--out", str(tmp_path / "out"), "--set", "agent.framework=vanilla",
            "--set", "agent.max_steps=2", "--set", "job.summary_refresh_s=0", "--concurrency", "1"]
    command = [sys.executable, "-c", DRIVER, str(REPO), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    if not on_a_terminal:
        run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == br.EXIT_SOME_FAILED, run.stderr
        return run.stderr
    master, slave = os.openpty()
    chunks: list[bytes] = []

    def drain():
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=slave)
        os.close(slave)
        assert proc.wait(timeout=120) == br.EXIT_SOME_FAILED
        reader.join(timeout=10)
    finally:
        os.close(master)
    return b"".join(chunks).decode()


def test_cli_on_a_terminal_redraws_the_bar_in_place_and_keeps_warnings_on_their_own_lines(tmp_path):
    text = _cli_output(tmp_path, on_a_terminal=True)
    assert "\r[##########..........] 1/2 | done 0 | failed 1" in text and "\x1b[K" in text  # the bar, in place
    # a warning clears the bar's line, takes a line of its own, and the bar is drawn again below it
    before, after = text.split("WARNING agents.batch: failed: bad.jpg", 1)
    assert before.endswith("\x1b[K\r\x1b[K") and after.split("\r\n", 1)[1].startswith("\r[")
    # the end: the bar erased, the final counts as a plain line, then the summary
    assert "\r\x1b[Kimages 2/2 | done 1 | failed 1" in text and "1 done, 1 failed" in text
    assert "INFO" not in text


def test_cli_into_a_pipe_prints_plain_lines(tmp_path):
    text = _cli_output(tmp_path, on_a_terminal=False)
    assert "\r" not in text and "\x1b" not in text
    assert any(line.startswith("images 2/2 | done 1 | failed 1") for line in text.splitlines())
    assert "INFO" not in text and "1 done, 1 failed" in text
