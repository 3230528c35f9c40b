"""The DINO / ViT image-embedding role on the offline kit's tiny random ViTModels."""
import asyncio
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from actors.image_embedder import ImageEmbedderConfig, ImageEmbedderModel, ImageEmbedderServer  # noqa: E402
from actors.model_source import ModelLoadError  # noqa: E402


@pytest.fixture(scope="module")
def sections(tmp_path_factory):
    from actors.offline_kit import image_embedders

    return image_embedders.build(tmp_path_factory.mktemp("embedders"), seed=0)


@pytest.fixture(scope="module")
def dino(sections):
    return ImageEmbedderModel(ImageEmbedderConfig(**sections["dino"]))


def _image(seed: int, h: int = 40, w: int = 56) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_kit_writes_loadable_folders_in_the_real_format(sections):
    for name in ("dino", "vit"):
        folder = sections[name]["model"]
        assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors", "preprocessor_config.json"]
        ImageEmbedderConfig.model_validate(sections[name])


def test_embeddings_are_deterministic_per_image(dino):
    a, b = _image(1), _image(2)
    first = np.stack(dino.embed_batch([a, b]))
    again = np.stack(dino.embed_batch([b, a]))
    assert first.shape == (2, 48) and first.dtype == np.float32
    np.testing.assert_allclose(first[0], again[1], rtol=1e-4, atol=1e-5)
    assert not np.allclose(first[0], first[1])


def test_pooling_modes_differ_and_cls_is_the_first_token(sections):
    import torch

    cfg = ImageEmbedderConfig(**sections["vit"])
    model = ImageEmbedderModel(cfg)
    image = _image(3)
    cls = model.embed_batch([image])[0]
    pixels = model.processor(images=[image], return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        hidden = model.model(pixel_values=pixels).last_hidden_state
    np.testing.assert_allclose(cls, hidden[0, 0].numpy(), rtol=1e-5, atol=1e-6)
    mean = ImageEmbedderModel(cfg.model_copy(update={"pooling": "mean"})).embed_batch([image])[0]
    np.testing.assert_allclose(mean, hidden[0, 1:].mean(0).numpy(), rtol=1e-5, atol=1e-6)


async def test_server_batches_concurrent_callers(sections):
    server = ImageEmbedderServer(ImageEmbedderConfig(**{**sections["dino"], "batching": {"max_batch_size": 16, "max_wait_ms": 50}}))
    images = [_image(i) for i in range(6)]
    out = await asyncio.gather(*(server.embed_images([im]) for im in images))
    stats = await server.stats()
    assert [o.shape for o in out] == [(1, 48)] * 6
    assert stats["forward_passes"] < 6 and stats["images_embedded"] == 6
    assert (await server.ping())["ok"]


async def test_server_rejects_bad_images(sections, dino):
    server = ImageEmbedderServer(ImageEmbedderConfig(**sections["dino"]), model=dino)
    with pytest.raises(ValueError, match=r"images\[0\] must be a uint8"):
        await server.embed_images([np.zeros((8, 8), dtype=np.uint8)])
    with pytest.raises(ValueError, match="at least one image"):
        await server.embed_images([])


def test_missing_model_folder_names_the_path(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        ImageEmbedderModel(ImageEmbedderConfig(model=str(tmp_path / "nope"), device="cpu"))
    with pytest.raises(ValueError):
        ImageEmbedderConfig(model="  ")
