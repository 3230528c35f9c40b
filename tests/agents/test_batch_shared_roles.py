"""Several batch jobs share one set of role actors (job.shared_roles, actors/shared_roles.py), on a real
local Ray with tiny fake role servers: the first job starts the named actors, the second joins them
(the same actors), the first one's exit leaves them running, the stop command removes them, and a job
whose role config differs is refused, naming the differing keys."""
from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from actors.chat.base import ChatBackend, ChatResult
from actors.chat.server import ChatGroupServer
from agents.batch.errors import SetupError
from agents.config import ArpoConfig

REPO = Path(__file__).resolve().parents[2]
HERE = "tests.agents.test_batch_shared_roles"


class _Fake:
    """A role server without a model: answers ping with its process and whether it was closed."""

    CONTROL_METHODS = ("ping", "stats")
    role = "?"

    def __init__(self, cfg):
        self.cfg = cfg
        self.closed = False

    async def ping(self):
        return {"ok": True, "role": self.role, "pid": os.getpid(), "closed": self.closed}

    async def stats(self):
        return {}

    async def aclose(self):
        self.closed = True


class FakeT2I(_Fake):
    CONTROL_METHODS = ("count_tokens", "ping", "stats")
    role = "t2i"

    async def generate(self, prompt, seeds):
        return [np.full((8, 8, 3), s, np.uint8) for s in seeds]

    async def count_tokens(self, texts):
        return [len(t.split()) for t in texts]


class FakeClip(_Fake):
    role = "clip"

    async def text_image_scores(self, texts, image, image_key=None):
        return [0.5 for _ in texts]


class EchoBackend(ChatBackend):
    name = "echo"

    async def chat(self, messages, sampling):
        return ChatResult(f"echo: {messages[-1].text}", 1, 1)


class FakeChatGroup(ChatGroupServer):
    """The real ChatGroupServer (llm + vlm + captioner over one engine) with an echoing backend."""

    def __init__(self, cfgs):
        super().__init__(cfgs, backend=EchoBackend())


def job_config(name: str, **t2i) -> ArpoConfig:
    res = {"num_cpus": 0.05, "num_gpus": 0, "max_restarts": 0, "max_task_retries": 0}
    chat = {"backend": "transformers", "model": "stub/chat", "resources": res}
    return ArpoConfig.model_validate({
        "t2i": {"model": "stub/t2i", "resources": res, **t2i}, "llm": chat, "vlm": chat, "captioner": {"backend": "vlm"},
        "clip": {"pretrained": None, "resources": res},
        "job": {"shared_roles": name, "startup_timeout_s": 300}})


@pytest.fixture
def fake_servers(monkeypatch):
    import actors.ray_actors as ra

    monkeypatch.setitem(ra.ROLE_SERVERS, "t2i", f"{HERE}:FakeT2I")
    monkeypatch.setitem(ra.ROLE_SERVERS, "clip", f"{HERE}:FakeClip")
    monkeypatch.setattr(ra, "GROUP_SERVER", f"{HERE}:FakeChatGroup")


@pytest.fixture(scope="module")
def ray_local(ray_local):
    """The shared module Ray (tests/ray_local.py), with the detached shared roles this module starts stopped
    before it shuts down: they outlive their driver by design."""
    from actors.shared_roles import list_shared_roles, stop_shared_roles

    try:
        yield ray_local
    finally:
        for name in sorted({n.split(":", 1)[0] for n in list_shared_roles()}):
            stop_shared_roles(name, timeout_s=10)


def _actor_ids(running) -> dict[str, list[str]]:
    return {check.group: [info["actor_id"] for info in check.infos] for check in running.shared}


def _wait_gone(name: str, deadline_s: float = 120) -> list[str]:
    from actors.shared_roles import list_shared_roles

    end = time.monotonic() + deadline_s
    while list_shared_roles(name) and time.monotonic() < end:
        time.sleep(0.2)
    return list_shared_roles(name)


@pytest.mark.ray
@pytest.mark.slow
def test_two_jobs_share_the_roles_the_first_exit_leaves_them_and_the_stop_command_removes_them(
        ray_local, fake_servers, caplog):
    from actors.shared_roles import NAMESPACE, list_shared_roles
    from agents.batch.startup import start_ray_and_roles, stop_ray_and_roles

    ray = ray_local
    name = f"share-{uuid.uuid4().hex[:8]}"
    groups = {"t2i", "llm+vlm+captioner", "clip"}
    actors = sorted(f"{name}:{g}:0" for g in groups)
    caplog.set_level(logging.INFO, logger="agents.batch")
    caplog.set_level(logging.INFO, logger="actors.ray_actors")

    first = start_ray_and_roles(job_config(name))
    assert not first.started_local_ray
    assert {c.group: (c.started, c.joined) for c in first.shared} == {g: (1, 0) for g in groups}
    assert f"shared roles {name!r}: started t2i ({name}:t2i:0)" in caplog.text
    assert list_shared_roles(name) == actors

    caplog.clear()
    second = start_ray_and_roles(job_config(name))
    assert {c.group: (c.started, c.joined) for c in second.shared} == {g: (0, 1) for g in groups}
    assert f"shared roles {name!r}: joined t2i ({name}:t2i:0), started by pid {os.getpid()}" in caplog.text
    assert _actor_ids(second) == _actor_ids(first)  # the same actors, not new ones
    assert list_shared_roles(name) == actors

    caplog.clear()
    stop_ray_and_roles(first)  # the first job ends: the roles outlive it
    assert f"left the shared roles {name!r} running" in caplog.text
    assert f"python -m actors.shared_roles stop --name {name}" in caplog.text
    assert list_shared_roles(name) == actors
    roles = second.roles

    async def use():
        return (await roles.t2i.ping(), await roles.t2i.count_tokens(["a red ball"]),
                await roles.llm.chat([{"role": "user", "content": "hello"}]),
                await roles.captioner.ping(), await roles.clip.text_image_scores(["x"], np.zeros((8, 8, 3), np.uint8)))

    t2i_ping, tokens, answer, captioner_ping, scores = asyncio.run(use())
    assert t2i_ping["closed"] is False and tokens == [3] and answer == "echo: hello" and scores == [0.5]
    assert captioner_ping["role"] == "captioner"
    assert ray.get_actor(f"{name}:t2i:0", namespace=NAMESPACE) is not None

    # The stop command, as an operator runs it, from another process.
    gcs = ray.get_runtime_context().gcs_address
    listed = subprocess.run([sys.executable, "-m", "actors.shared_roles", "--address", gcs, "list", "--name", name],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0 and listed.stdout.split() == actors, listed.stderr
    stop = subprocess.run([sys.executable, "-m", "actors.shared_roles", "--address", gcs, "stop", "--name", name],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert stop.returncode == 0, stop.stderr
    assert sorted(stop.stdout.split("\n")[:-1]) == [f"stopped {a}" for a in actors]
    assert _wait_gone(name) == []
    with pytest.raises(ValueError):
        ray.get_actor(f"{name}:t2i:0", namespace=NAMESPACE)
    again = subprocess.run([sys.executable, "-m", "actors.shared_roles", "--address", gcs, "stop", "--name", name],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and f"no shared roles named {name!r} are running" in again.stderr
    stop_ray_and_roles(second)  # nothing left to close; must not fail


@pytest.mark.ray
@pytest.mark.slow
def test_a_job_with_another_role_config_is_refused_naming_the_keys(ray_local, fake_servers):
    from actors.shared_roles import list_shared_roles, stop_shared_roles
    from agents.batch.startup import start_ray_and_roles, stop_ray_and_roles

    name = f"mismatch-{uuid.uuid4().hex[:8]}"
    first = start_ray_and_roles(job_config(name))
    with pytest.raises(SetupError) as refused:
        start_ray_and_roles(job_config(name, num_inference_steps=30, guidance_scale=5.0))
    message = str(refused.value)
    assert f"the running actor {name}:t2i:0" in message
    assert "differing keys: config.guidance_scale, config.num_inference_steps" in message
    assert f"python -m actors.shared_roles stop --name {name}" in message
    # The refused job stopped nothing of the roles it found.
    assert len(list_shared_roles(name)) == 3
    assert asyncio.run(first.roles.t2i.count_tokens(["still here"])) == [2]
    stop_ray_and_roles(first)
    assert len(stop_shared_roles(name, timeout_s=10)) == 3
    assert _wait_gone(name) == []


@pytest.mark.ray
@pytest.mark.slow
def test_a_job_with_another_actor_layout_is_refused_before_starting_any(ray_local, fake_servers):
    """The LLM on another model: its own actor instead of the shared llm+vlm+captioner one. Joining by
    name would have started a second set of actors beside the running ones; it is refused instead."""
    from actors.shared_roles import list_shared_roles, stop_shared_roles
    from agents.batch.startup import start_ray_and_roles, stop_ray_and_roles

    name = f"layout-{uuid.uuid4().hex[:8]}"
    first = start_ray_and_roles(job_config(name))
    before = list_shared_roles(name)
    other = job_config(name)
    other.llm.model = "stub/another-chat"
    with pytest.raises(SetupError) as refused:
        start_ray_and_roles(other)
    message = str(refused.value)
    assert "run the actors clip ×1, llm+vlm+captioner ×1, t2i ×1" in message, message
    assert "this config would make clip ×1, llm ×1, t2i ×1, vlm+captioner ×1" in message, message
    assert list_shared_roles(name) == before  # nothing started beside them
    stop_ray_and_roles(first)
    assert len(stop_shared_roles(name, timeout_s=10)) == 3
    assert _wait_gone(name) == []


def test_the_layout_check_compares_groups_and_replicas(monkeypatch):
    import actors.shared_roles as sr

    running = ["n:t2i:0", "n:t2i:1", "n:llm+vlm:0", "n:clip:0"]
    monkeypatch.setattr(sr, "list_shared_roles", lambda name=None: running)
    assert sr.running_layout("n") == {"t2i": 2, "llm+vlm": 1, "clip": 1}
    sr.check_layout("n", {"t2i": 2, "llm+vlm": 1, "clip": 1})  # the same: joins
    with pytest.raises(sr.SharedRolesMismatch, match="t2i ×1"):
        sr.check_layout("n", {"t2i": 1, "llm+vlm": 1, "clip": 1})  # fewer T2I replicas
    monkeypatch.setattr(sr, "list_shared_roles", lambda name=None: [])
    sr.check_layout("n", {"anything": 3})  # nothing running: this job starts them


def test_the_shared_roles_name_is_validated():
    from pydantic import ValidationError

    assert job_config("team-a.1").job.shared_roles == "team-a.1"
    assert ArpoConfig().job.shared_roles is None
    for bad in ("a:b", "", "-x", "x" * 65, "a b"):
        with pytest.raises(ValidationError, match="not a shared-roles name"):
            job_config(bad)


def test_differing_keys_are_dotted_paths():
    from actors.shared_roles import config_snapshot, differing_keys, fingerprint

    a = config_snapshot({"llm": {"model": "m", "sampling": {"seed": 0}}}, {"num_gpus": 1})
    b = config_snapshot({"llm": {"model": "m", "sampling": {"seed": 1}}, "vlm": {}}, {"num_gpus": 1})
    assert differing_keys(a, b) == ["config.llm.sampling.seed", "config.vlm"]
    assert fingerprint(a) != fingerprint(b) and fingerprint(a) == fingerprint(config_snapshot(
        {"llm": {"sampling": {"seed": 0}, "model": "m"}}, {"num_gpus": 1}))
