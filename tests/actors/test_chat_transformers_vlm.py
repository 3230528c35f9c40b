"""transformers backend, VLM role, with the offline kit's tiny LLaVA-Next: one and two images, seeded, batched."""
import asyncio

import pytest
import pytest_asyncio

from actors.chat.server import VLMServer
from tests.actors.conftest_chat import images, section_with, tiny_vlm_section, vision_chat  # noqa: F401

# One event loop for the module: the server's batcher lives on it.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vlm(tiny_vlm_section):
    server = VLMServer(section_with(tiny_vlm_section, sampling={"max_new_tokens": 8, "temperature": 0.0},
                                    batching={"max_batch_size": 8, "max_wait_ms": 50}))
    yield server
    await server.aclose()


async def test_vlm_one_and_two_images(vlm):
    a, b, c = images()
    one = await vlm.chat(vision_chat([a]))
    two = await vlm.chat(vision_chat([a, b], "Compare the two images."))
    assert isinstance(one, str) and one and isinstance(two, str) and two
    # Greedy answers are reproducible and depend on the image content.
    assert await vlm.chat(vision_chat([a])) == one
    assert await vlm.chat(vision_chat([c])) != one
    assert await vlm.chat(vision_chat([b, a], "Compare the two images.")) != two


async def test_vlm_batches_mixed_image_counts_like_alone(vlm):
    a, b, c = images()
    convs = [vision_chat([a]), vision_chat([a, b], "Compare."), [{"role": "user", "content": "No image here."}], vision_chat([c])]
    alone = [await vlm.chat(conv) for conv in convs]
    together = await asyncio.gather(*(vlm.chat(conv) for conv in convs))
    assert list(together) == alone
    assert (await vlm.stats())["batching"]["max_batch"] >= 2


async def test_vlm_sampling_is_seeded(vlm):
    a = images()[0]
    s0 = await vlm.chat(vision_chat([a]), {"temperature": 1.0, "seed": 11})
    assert await vlm.chat(vision_chat([a]), {"temperature": 1.0, "seed": 11}) == s0
    assert await vlm.chat(vision_chat([a]), {"temperature": 1.0, "seed": 12}) != s0
