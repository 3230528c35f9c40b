"""Cheap control calls (``count_tokens``, ``ping``, ``stats``) answer while an actor is saturated with
long calls: they run in a Ray concurrency group of their own (actors/ray_actors.py CONTROL_GROUP),
on a real local Ray. Before it, Ray queued them behind the long calls above ``max_concurrency``
(docs/scale.md, "Bottlenecks found" 2: the ``select`` node at 203.6 s p50 instead of 1.9 s)."""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from actors.chat.base import ChatBackend, ChatResult
from actors.chat.server import ChatGroupServer
from actors.config import ResourceConfig, T2IConfig
from actors.ray_actors import CONTROL_GROUP, RoleClient, control_methods, start_role, with_control_group
from actors.t2i import T2IServer

REPO = Path(__file__).resolve().parents[2]
SLOTS = 2  # resources.max_concurrency of the actors below
CALLS = 6  # long calls sent: SLOTS run (and block), the rest wait in Ray's queue
ANSWER_S = 120  # generous: a control call answers in milliseconds; the long calls never end unless released


class StubT2IModel:
    """Generates only when released (the batcher runs it in a thread); counts words as tokens."""

    device = "cpu"

    def __init__(self):
        self.released = threading.Event()
        self.batches_started = 0

    def generate_batch(self, items):
        self.batches_started += 1
        self.released.wait(600)
        return [np.full((8, 8, 3), seed % 256, np.uint8) for _, seed in items]

    def count_tokens(self, texts):
        return [len(t.split()) for t in texts]


class BlockedT2I(T2IServer):
    """The real T2IServer (its CONTROL_METHODS) over a model that blocks; two test-only control methods."""

    CONTROL_METHODS = T2IServer.CONTROL_METHODS + ("release", "batches_started")

    def __init__(self, cfg):
        super().__init__(cfg, model=StubT2IModel())

    async def release(self):
        self.model.released.set()

    async def batches_started(self):
        return self.model.batches_started


class BlockedBackend(ChatBackend):
    """A chat backend whose answers wait until released."""

    name = "blocked"

    def __init__(self):
        self.released = threading.Event()
        self.started = 0

    async def chat(self, messages, sampling):
        self.started += 1
        while not self.released.is_set():
            await asyncio.sleep(0.05)
        return ChatResult("ok", 1, 1)


class BlockedChatGroup(ChatGroupServer):
    """The real ChatGroupServer (routing, call_control) over a blocked backend."""

    CONTROL_METHODS = ChatGroupServer.CONTROL_METHODS + ("release", "chats_started")

    def __init__(self, cfgs):
        super().__init__(cfgs, backend=BlockedBackend())

    async def release(self):
        self.backend.released.set()

    async def chats_started(self):
        return self.backend.started


def test_the_servers_declare_their_control_methods_without_importing_ray():
    from actors.captioner import CaptionerServer, VLMCaptioner
    from actors.chat.server import LLMServer, VLMServer
    from actors.clip_scorer import ClipServer
    from tests.core.test_layering import imported_modules

    assert control_methods(T2IServer) == ("count_tokens", "prompt_budget", "ping", "stats")
    for cls in (ClipServer, CaptionerServer, VLMCaptioner, LLMServer, VLMServer):
        assert control_methods(cls) == ("ping", "stats"), cls
    assert control_methods(ChatGroupServer) == ("ping", "stats", "call_control")
    assert ChatGroupServer.role_control_methods("captioner") == ("ping", "stats")
    for path in ("actors/t2i.py", "actors/clip_scorer.py", "actors/captioner.py", "actors/chat/server.py"):
        assert not any(m == "ray" or m.startswith("ray.") for m in imported_modules(REPO / path)), path
    # The marking goes on a subclass: the plain server is untouched.
    marked = with_control_group(T2IServer)
    assert marked is not T2IServer and issubclass(marked, T2IServer)
    assert marked.count_tokens.__ray_concurrency_group__ == CONTROL_GROUP
    assert not hasattr(T2IServer.count_tokens, "__ray_concurrency_group__")
    assert not hasattr(marked.generate, "__ray_concurrency_group__")


async def _poll(call, want, deadline_s=ANSWER_S):
    """Await ``call()`` until it returns ``want`` (each answer itself must come within the deadline)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while True:
        got = await asyncio.wait_for(call(), deadline_s)
        if got == want or loop.time() > end:
            return got
        await asyncio.sleep(0.05)


@pytest.mark.ray
async def test_count_tokens_ping_and_stats_answer_while_generate_calls_queue(ray_local):
    ray = ray_local
    res = ResourceConfig(num_cpus=0.1, max_concurrency=SLOTS, max_restarts=0, max_task_retries=0)
    cfg = T2IConfig(model="/stub", batching={"max_batch_size": 1, "max_wait_ms": 0})
    client = start_role("t2i", BlockedT2I, cfg, res)
    try:
        await asyncio.wait_for(client.ping(), ANSWER_S)
        handle = client.handles[0]
        generating = [handle.generate.remote(f"prompt {i}", [i]) for i in range(CALLS)]
        assert await _poll(client.batches_started, 1) == 1  # the first batch runs (and blocks); the actor is full
        # Old code: these wait behind the queued generate calls, which never finish: wait_for times out.
        tokens = await asyncio.wait_for(client.count_tokens(["a red ball", "sky"]), ANSWER_S)
        ping = await asyncio.wait_for(client.ping(), ANSWER_S)
        stats = await asyncio.wait_for(client.stats(), ANSWER_S)
        done, pending = ray.wait(generating, num_returns=CALLS, timeout=0)
        assert tokens == [3, 1] and ping["ok"] and "batches" in stats
        assert done == [] and len(pending) == CALLS  # answered while every generate call was still pending
        await client.release()
        images = await asyncio.wait_for(asyncio.gather(*generating), ANSWER_S)
        assert [int(batch[0][0, 0, 0]) for batch in images] == list(range(CALLS))
    finally:
        client.kill()


@pytest.mark.ray
async def test_a_routed_role_pings_through_call_control_while_chats_queue(ray_local):
    from actors.config import LLMConfig, VLMConfig

    ray = ray_local
    res = ResourceConfig(num_cpus=0.1, max_concurrency=SLOTS, max_restarts=0, max_task_retries=0)
    sections = {"llm": LLMConfig(model="stub/vlm", backend="transformers"), "vlm": VLMConfig(model="stub/vlm", backend="transformers")}
    actors = start_role("llm+vlm", BlockedChatGroup, sections, res)
    llm = RoleClient("llm", actors.handles, route="llm", control=ChatGroupServer.role_control_methods("llm"))
    vlm = RoleClient("vlm", actors.handles, route="vlm", control=ChatGroupServer.role_control_methods("vlm"))
    try:
        await asyncio.wait_for(llm.ping(), ANSWER_S)
        handle = actors.handles[0]
        chats = [handle.call.remote("llm", "chat", [{"role": "user", "content": f"q{i}"}]) for i in range(CALLS)]
        assert await _poll(actors.chats_started, SLOTS) == SLOTS  # both slots hold a chat that waits
        ping = await asyncio.wait_for(vlm.ping(), ANSWER_S)
        stats = await asyncio.wait_for(llm.stats(), ANSWER_S)
        done, _ = ray.wait(chats, num_returns=CALLS, timeout=0)
        assert ping["role"] == "vlm" and stats["in_flight"] == SLOTS and done == []
        with pytest.raises(Exception, match="no control method 'chat'"):  # only control methods take the short way
            await asyncio.wait_for(handle.call_control.remote("llm", "chat", []), ANSWER_S)
        await actors.release()
        assert await asyncio.wait_for(asyncio.gather(*chats), ANSWER_S) == ["ok"] * CALLS
    finally:
        actors.kill()
