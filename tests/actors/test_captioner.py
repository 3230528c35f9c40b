"""Captioner role on the offline kit's tiny BLIP2 (OPT) model."""
import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from actors.captioner import CaptionerModel, CaptionerServer, strip_prompt
from actors.config import CaptionerConfig
from actors.model_source import ModelLoadError
from actors.roles import CaptionerRole


@pytest.fixture(scope="module")
def cap_cfg(captioner_section) -> CaptionerConfig:
    return CaptionerConfig.model_validate(captioner_section)


@pytest.fixture(scope="module")
def model(cap_cfg) -> CaptionerModel:
    return CaptionerModel(cap_cfg)


def images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40 + 4 * i, 56, 3), dtype=np.uint8) for i in range(n)]


def test_kit_saves_a_blip2_with_processor(cap_cfg):
    folder = Path(cap_cfg.model)
    assert json.loads((folder / "config.json").read_text())["model_type"] == "blip-2"
    assert (folder / "processor_config.json").is_file() or (folder / "preprocessor_config.json").is_file()
    assert (cap_cfg.device, cap_cfg.resources.num_gpus) == ("cpu", 0)


def test_loads_through_the_auto_classes(model):
    assert type(model.model).__name__ == "Blip2ForConditionalGeneration"
    assert type(model.processor).__name__ == "Blip2Processor"
    tok = model.processor.tokenizer
    assert tok.convert_tokens_to_ids("<image>") == model.model.config.image_token_index
    assert len(tok) == model.model.config.text_config.vocab_size


def test_captions_are_non_empty_strings_and_deterministic(model):
    imgs = images(3)
    caps = model.caption_batch(imgs)
    assert len(caps) == 3 and all(isinstance(c, str) and c.strip() for c in caps)
    assert model.caption_batch(imgs) == caps
    assert model.caption_batch([]) == []


def test_prompt_is_not_part_of_the_caption(cap_cfg):
    prompted = CaptionerModel(cap_cfg.model_copy(update={"prompt": "a photo of"}))
    caps = prompted.caption_batch(images(2, seed=1))
    assert all(isinstance(c, str) and c and not c.lower().startswith("a photo of") for c in caps)


def test_strip_prompt_removes_an_echoed_prompt_only():
    assert strip_prompt(" A photo of a cat ", "a photo of") == "a cat"
    assert strip_prompt("a cat on a mat", "a photo of") == "a cat on a mat"
    assert strip_prompt("  a cat ", None) == "a cat"


async def test_server_batches_concurrent_captions(model, cap_cfg):
    server = CaptionerServer(cap_cfg, model=model)
    assert isinstance(server, CaptionerRole)
    imgs = images(5, seed=2)
    caps = await asyncio.gather(*(server.caption(im) for im in imgs))
    stats = await server.stats()
    assert stats["batches"]["batches"] == 1 and stats["batches"]["items"] == 5
    assert all(isinstance(c, str) and c for c in caps)
    assert (await server.ping())["ok"] is True


async def test_server_rejects_a_bad_image(model, cap_cfg):
    server = CaptionerServer(cap_cfg, model=model)
    with pytest.raises(ValueError, match="image"):
        await server.caption(np.zeros((8, 8), dtype=np.uint8))


def test_missing_model_folder_is_named(captioner_section, tmp_path):
    missing = str(tmp_path / "no_such_blip")
    with pytest.raises(ModelLoadError, match="no_such_blip.*does not exist"):
        CaptionerModel(CaptionerConfig.model_validate({**captioner_section, "model": missing}))


def test_folder_that_is_not_a_model_is_named(captioner_section, tmp_path):
    with pytest.raises(ModelLoadError, match=f"{tmp_path}.*config.json"):
        CaptionerModel(CaptionerConfig.model_validate({**captioner_section, "model": str(tmp_path)}))
