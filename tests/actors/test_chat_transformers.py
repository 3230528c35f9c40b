"""transformers backend, LLM role, with the offline kit's tiny Llama: strings out, seeded, batched."""
import asyncio

import pytest
import pytest_asyncio

from actors.chat.server import LLMServer
from tests.actors.conftest_chat import images, section_with, tiny_llm_section, vision_chat  # noqa: F401

# One event loop for the module: the servers' batchers live on it.
pytestmark = pytest.mark.asyncio(loop_scope="module")

CHAT = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Describe a cat on a sofa."}]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def llm(tiny_llm_section):
    server = LLMServer(section_with(tiny_llm_section, sampling={"max_new_tokens": 12, "temperature": 0.8, "seed": 0},
                                    batching={"max_batch_size": 8, "max_wait_ms": 50}))
    yield server
    await server.aclose()


async def test_llm_answers_with_a_string_reproducibly(llm):
    a = await llm.chat(CHAT)
    assert isinstance(a, str) and a
    assert await llm.chat(CHAT) == a  # same seed (from the config), same answer
    assert await llm.chat(CHAT, {"seed": 1}) != a
    assert await llm.chat(CHAT, {"seed": 0}) == a


async def test_llm_answer_does_not_depend_on_batch_mates(llm):
    alone = await llm.chat(CHAT, {"seed": 3})
    greedy_alone = await llm.chat(CHAT, {"temperature": 0})
    others = [[{"role": "user", "content": f"Write prompt number {i}."}] for i in range(5)]
    results = await asyncio.gather(
        llm.chat(CHAT, {"seed": 3}), llm.chat(CHAT, {"temperature": 0}),
        *(llm.chat(o, {"seed": i, "max_new_tokens": 4 + i}) for i, o in enumerate(others)))
    assert (await llm.stats())["batching"]["max_batch"] >= 4  # the concurrent calls really shared generate()
    assert results[0] == alone
    assert results[1] == greedy_alone
    assert len(set(results[2:])) > 1


async def test_llm_chat_many_and_stats(llm):
    convs = [[{"role": "user", "content": f"Prompt {i}"}] for i in range(3)]
    out = await llm.chat_many(convs, {"temperature": 0})
    assert out == [await llm.chat(c, {"temperature": 0}) for c in convs]
    stats = await llm.stats()
    assert stats["role"] == "llm" and stats["backend"] == "transformers"
    assert stats["calls"] >= 6 and stats["completion_tokens"] > 0 and stats["failures"] == 0
    assert await llm.ping() == {"role": "llm", "backend": "transformers", "model": llm.cfg.model, "engine": llm.engine_id}


async def test_llm_max_new_tokens_and_bad_input(llm):
    full = await llm.chat(CHAT, {"temperature": 0, "max_new_tokens": 12})
    short = await llm.chat(CHAT, {"temperature": 0, "max_new_tokens": 3})
    assert full.startswith(short) and len(short) < len(full)
    with pytest.raises(ValueError, match="this role takes text only"):
        await llm.chat(vision_chat(images()[:1]))
    with pytest.raises(ValueError, match="sampling override 'temp'"):
        await llm.chat(CHAT, {"temp": 0})
