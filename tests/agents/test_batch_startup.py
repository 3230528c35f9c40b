"""Start-up fails fast and shut-down leaves nothing running (agents.batch.startup), on a real local Ray."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from PIL import Image

from actors.config import ResourceConfig
from agents.batch.errors import SetupError
from agents.batch.startup import RunningRoles, _wait_ready, stop_ray_and_roles

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[2]


def test_a_config_the_cluster_cannot_hold_exits_2_before_any_model_loads(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    Image.new("RGB", (8, 8)).save(images / "a.png")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "agents.batch_reverse", "--dir", str(images), "--out", str(tmp_path / "out"),
                           "--config", "configs/gpu_cluster.yaml", "--set", "ray.num_cpus=2"],
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    took = time.monotonic() - started
    # Old code: Ray's "No available node types can fulfill resource request" every 35 s, forever.
    assert proc.returncode == 2, proc.stderr
    assert "role 'llm': one actor needs GPU 1 (the most on one node: 0), gpu_large 1" in proc.stderr
    assert took < 120
    assert _raylets() == []


def _raylets() -> list[int]:
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "raylet" in " ".join(proc.cmdline()):
                found.append(proc.pid)
        except psutil.NoSuchProcess:  # gone, or a zombie of an earlier test
            continue
    return found


class _Silent:
    role = "llm"

    async def broadcast(self, method):
        await asyncio.sleep(3600)


class _Ready:
    role = "clip"

    async def broadcast(self, method):
        return ["pong"]


def test_roles_not_ready_in_time_are_named():
    with pytest.raises(SetupError, match=r"roles llm not ready after 0.2 s \(job.startup_timeout_s\)"):
        asyncio.run(_wait_ready([_Silent(), _Ready()], timeout_s=0.2))


class Leaky:
    """Leaves a detached process behind and has no aclose: only the sweep of Ray's process tree ends it."""

    def __init__(self, cfg):
        self.proc = subprocess.Popen(["sleep", "600"], start_new_session=True)

    async def ping(self):
        return True

    async def child_pid(self):
        return self.proc.pid


class EngineLike(Leaky):
    """Starts a helper process as vLLM's AsyncLLM starts its engine core, and stops it in aclose."""

    async def aclose(self):
        self.proc.kill()
        self.proc.wait()


@dataclass
class _TwoRoles:
    engine: object
    leaky: object


def test_stopping_closes_every_role_and_leaves_no_process_of_the_local_ray():
    from actors.ray_actors import start_role
    from core.ray_config import RayConfig, init_ray

    earlier = frozenset(p.pid for p in psutil.Process().children(recursive=True))
    assert init_ray(RayConfig(num_cpus=2))
    roles = _TwoRoles(start_role("engine", EngineLike, None, ResourceConfig(num_cpus=0.5)),
                      start_role("leaky", Leaky, None, ResourceConfig(num_cpus=0.5)))
    pids = asyncio.run(_child_pids(roles))
    assert all(psutil.pid_exists(p) for p in pids)
    stop_ray_and_roles(RunningRoles(roles, True, earlier))
    assert [pid for pid in pids if _pid_alive(pid)] == []
    assert [p for p in psutil.Process().children(recursive=True) if p.pid not in earlier and _alive(p)] == []


def _pid_alive(pid: int) -> bool:
    try:
        return _alive(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return False


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def _child_pids(roles) -> list[int]:
    return [(await roles.engine.child_pid()), (await roles.leaky.child_pid())]


class _Broken:
    def __init__(self, role, error):
        self.role, self.error = role, error

    async def broadcast(self, method):
        raise self.error


def test_every_role_that_failed_to_start_is_named():
    """The roles load at once: one start-up reports each broken setting, not only the first to fail."""
    clients = [_Broken("vlm", ValueError("mm_processor_kwargs: no_such_kwarg")), _Ready(),
               _Broken("t2i", ValueError("t2i.max_prompt_tokens 100 is more than it reads"))]
    with pytest.raises(SetupError) as caught:
        asyncio.run(_wait_ready(clients, timeout_s=5))
    assert str(caught.value) == ("cannot start the model roles: role 't2i' failed to start: ValueError: "
                                 "t2i.max_prompt_tokens 100 is more than it reads; role 'vlm' failed to start: "
                                 "ValueError: mm_processor_kwargs: no_such_kwarg")


REMOTE = ("The actor died because of an error raised in its creation task, ray::ChatGroupServer.__init__() (pid=1)\n"
          "  File \"actors/chat/vllm_backend.py\", line 118, in __init__\n"
          "    check_processor_kwargs(...)\n"
          "ValueError: vllm.mm_processor_kwargs.no_such_kwarg: not a keyword argument of Qwen2VLProcessor")


def test_roles_sharing_one_engine_are_named_once_with_the_remote_cause():
    """Ray's ActorDiedError carries the actor's whole traceback: the cause is its last exception line."""
    from agents.batch.startup import load_error_cause

    died = RuntimeError(REMOTE)
    assert load_error_cause(died) == ("ValueError: vllm.mm_processor_kwargs.no_such_kwarg: not a keyword argument of "
                                      "Qwen2VLProcessor")
    assert load_error_cause(ValueError("one line")) == "ValueError: one line"
    clients = [_Broken("vlm", died), _Broken("llm", died), _Broken("captioner", died), _Ready()]
    with pytest.raises(SetupError) as caught:
        asyncio.run(_wait_ready(clients, timeout_s=5))
    assert str(caught.value) == ("cannot start the model roles: roles 'captioner', 'llm', 'vlm' failed to start: "
                                 "ValueError: vllm.mm_processor_kwargs.no_such_kwarg: not a keyword argument of "
                                 "Qwen2VLProcessor")
