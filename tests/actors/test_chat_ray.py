"""LLMServer as a Ray actor (loopback local Ray) with the transformers backend and the tiny Llama."""
import asyncio
import os

import numpy as np
import pytest

from actors.chat.server import LLMServer
from actors.ray_actors import actor_options, start_role, wait_ready
from tests.actors.conftest_chat import section_with, tiny_llm_section  # noqa: F401

pytestmark = [pytest.mark.ray, pytest.mark.asyncio(loop_scope="module")]

CHAT = [{"role": "user", "content": "Describe a lighthouse at dusk."}]


async def test_llm_server_runs_as_a_ray_actor(ray_local, tiny_llm_section):
    from actors.config import LLMConfig

    cfg = LLMConfig.model_validate(section_with(tiny_llm_section, sampling={"max_new_tokens": 10, "temperature": 0.8, "seed": 2}))
    client = start_role("llm", "actors.chat.server:LLMServer", cfg, cfg.resources)
    await wait_ready(client)
    assert actor_options(cfg.resources)["num_cpus"] == 0.25
    ping = await client.ping()
    engine = ping.pop("engine")  # "<actor pid>:<backend id>": roles sharing one engine report the same
    assert ping == {"role": "llm", "backend": "transformers", "model": cfg.model}
    assert engine.split(":")[0] != str(os.getpid())  # loaded in the actor's process, not here

    remote = await asyncio.gather(*(client.chat(CHAT) for _ in range(4)), client.chat(CHAT, {"seed": 3}))
    assert len(set(remote[:4])) == 1 and remote[4] != remote[0]
    many = await client.chat_many([CHAT, [{"role": "user", "content": "hello"}]], {"temperature": 0})
    assert len(many) == 2 and all(isinstance(t, str) and t for t in many)

    # The actor runs the real model: the same config answers identically in this process.
    local = LLMServer(cfg)
    assert await local.chat(CHAT) == remote[0]
    assert await local.chat_many([CHAT, [{"role": "user", "content": "hello"}]], {"temperature": 0}) == many

    stats = await client.stats()
    assert stats["calls"] == 7 and stats["failures"] == 0 and stats["batching"]["max_batch"] >= 2
    with pytest.raises(Exception, match="this role takes text only"):
        await client.chat([{"role": "user", "content": [{"type": "image", "image": np.zeros((2, 2, 3), np.uint8)}]}])
    client.kill()
