"""CLIP scorer on the offline kit's tiny open_clip model: embeddings, caches, cross-caller batching."""
import asyncio
import math
from pathlib import Path

import numpy as np
import pytest

from actors.clip_scorer import ClipModel, ClipServer
from actors.config import ClipConfig
from actors.model_source import ModelLoadError
from actors.roles import ClipRole

N_CALLERS = 256


@pytest.fixture(scope="module")
def clip_cfg(clip_section) -> ClipConfig:
    return ClipConfig.model_validate(clip_section)


@pytest.fixture(scope="module")
def model(clip_cfg) -> ClipModel:
    return ClipModel(clip_cfg)


def images(n: int, seed: int = 0, size: int = 40) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8) for _ in range(n)]


def test_kit_files_and_section(clip_cfg):
    assert Path(clip_cfg.pretrained).is_file()
    assert (Path(clip_cfg.model_config_dir) / f"{clip_cfg.model_name}.json").is_file()
    assert (clip_cfg.device, clip_cfg.resources.num_gpus) == ("cpu", 0)


def test_checkpoint_weights_are_the_ones_loaded(clip_cfg, model):
    from safetensors.torch import load_file

    saved = load_file(clip_cfg.pretrained)
    loaded = model.model.state_dict()
    assert set(saved) == set(loaded)
    assert all(np.array_equal(saved[k].numpy(), loaded[k].numpy()) for k in saved)


def test_embeddings_are_normalised_with_the_right_shapes(model):
    t = model.encode_texts(["a cat", "a dog", "a red car"])
    i = model.encode_images(images(2))
    assert t.shape == (3, 32) and i.shape == (2, 32)
    assert t.dtype == np.float32 and i.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(i, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(t[0], t[1])


def test_batched_encodings_equal_unbatched(model):
    texts = ["a cat", "a photo of an astronaut riding a horse", "oil painting of a lake"]
    batched = model.encode_texts(texts)
    single = np.concatenate([model.encode_texts([t]) for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5, rtol=0)
    imgs = images(3, seed=1)
    np.testing.assert_allclose(model.encode_images(imgs), np.concatenate([model.encode_images([im]) for im in imgs]), atol=1e-5, rtol=0)


async def test_scores_are_cosines_of_the_model_embeddings(model, clip_cfg):
    server = ClipServer(clip_cfg, model=model)
    assert isinstance(server, ClipRole)
    texts = ["a cat", "a dog on a sofa", "a mountain lake"]
    img, ref = images(2, seed=2)
    scores = await server.text_image_scores(texts, img)
    expected = model.encode_texts(texts) @ model.encode_images([img])[0]
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert all(isinstance(s, float) for s in scores)
    ii = await server.image_image_scores([img, ref], ref)
    assert ii[1] == pytest.approx(1.0, abs=1e-5) and ii[0] < ii[1]
    assert await server.text_image_scores([], img) == []
    assert (await server.embed_texts(texts)).shape == (3, 32)
    assert (await server.embed_images([img, ref], keys=["a", None])).shape == (2, 32)


async def test_cache_hits_skip_forward_passes(model, clip_cfg):
    server = ClipServer(clip_cfg, model=model)
    texts = ["cached one", "cached two"]
    img = images(1, seed=3)[0]
    first = await server.text_image_scores(texts, img, image_key="img-3")
    before = await server.stats()
    again = await server.text_image_scores(texts, img, image_key="img-3")
    after = await server.stats()
    assert again == first
    assert after["text_forward_passes"] == before["text_forward_passes"]
    assert after["image_forward_passes"] == before["image_forward_passes"]
    assert after["text_cache"]["hits"] - before["text_cache"]["hits"] == 2
    assert after["image_cache"]["hits"] - before["image_cache"]["hits"] == 1
    # One new text: exactly one more pass, encoding one text.
    await server.text_image_scores(texts + ["new"], img, image_key="img-3")
    final = await server.stats()
    assert final["text_forward_passes"] == after["text_forward_passes"] + 1
    assert final["texts_encoded"] == after["texts_encoded"] + 1


async def test_duplicate_texts_are_encoded_once(model, clip_cfg):
    server = ClipServer(clip_cfg.model_copy(update={"text_cache_size": 0}), model=model)
    before = model.counters()
    emb = await server.embed_texts(["dup", "dup", "other", "dup"])
    after = model.counters()
    assert after["texts_encoded"] - before["texts_encoded"] == 2
    assert after["text_forward_passes"] - before["text_forward_passes"] == 1
    assert np.array_equal(emb[0], emb[1]) and np.array_equal(emb[0], emb[3])
    # The batch function also dedupes on its own (callers that bypass the cache).
    rows = server._encode_text_batch(["x", "y", "x"])
    assert model.counters()["texts_encoded"] - after["texts_encoded"] == 2
    assert np.array_equal(rows[0], rows[2])


async def test_many_concurrent_callers_share_few_forward_passes(model, clip_cfg):
    server = ClipServer(clip_cfg, model=model)
    max_batch = clip_cfg.batching.max_batch_size
    bound = math.ceil(N_CALLERS / max_batch) + 1
    ref = images(1, seed=4)[0]
    texts = [f"a photo of thing number {i}" for i in range(N_CALLERS)]
    before = model.counters()
    scores = await asyncio.gather(*(server.text_image_scores([t], ref, image_key="ref") for t in texts))
    after = model.counters()
    text_passes = after["text_forward_passes"] - before["text_forward_passes"]
    image_passes = after["image_forward_passes"] - before["image_forward_passes"]
    print(f"\n{N_CALLERS} concurrent text_image_scores callers (max_batch {max_batch}): "
          f"{text_passes} text forward passes, {image_passes} image forward passes")
    assert text_passes <= bound
    assert image_passes == 1  # the shared keyed image is encoded once for everyone
    assert after["texts_encoded"] - before["texts_encoded"] == N_CALLERS
    expected = model.encode_texts(texts[:5]) @ model.encode_images([ref])[0]
    np.testing.assert_allclose([s[0] for s in scores[:5]], expected, atol=1e-5)
    assert (await server.stats())["text_batches"]["max_batch"] <= max_batch

    # Each caller with its own unkeyed image: the image encoder batches across callers too.
    imgs = images(N_CALLERS, seed=5, size=32)
    before = model.counters()
    ii = await asyncio.gather(*(server.image_image_scores([im], ref, reference_key="ref") for im in imgs))
    image_passes = model.counters()["image_forward_passes"] - before["image_forward_passes"]
    print(f"{N_CALLERS} concurrent image_image_scores callers: {image_passes} image forward passes")
    assert image_passes <= bound
    assert len(ii) == N_CALLERS and all(len(s) == 1 for s in ii)


async def test_a_failed_batch_fails_its_callers_and_caches_nothing(model, clip_cfg):
    class ExplodingEncoder:
        identity = "exploding"

        def encode_texts(self, texts):
            raise RuntimeError("encoder exploded")

        def counters(self):
            return {}

    server = ClipServer(clip_cfg, model=ExplodingEncoder())
    with pytest.raises(RuntimeError, match="exploded"):
        await asyncio.gather(server.embed_texts(["p"]), server.embed_texts(["p"]))
    assert (await server.stats())["text_cache"]["size"] == 0


async def test_bad_inputs_are_rejected_with_the_argument_named(model, clip_cfg):
    server = ClipServer(clip_cfg, model=model)
    img = images(1)[0]
    with pytest.raises(TypeError, match="texts"):
        await server.text_image_scores("a single string", img)
    with pytest.raises(ValueError, match="image"):
        await server.text_image_scores(["a"], img.astype(np.float32))
    with pytest.raises(ValueError, match="reference"):
        await server.image_image_scores([img], img[:, :, :2])
    with pytest.raises(ValueError, match=r"images\[1\]"):
        await server.image_image_scores([img, np.zeros((4, 4), np.uint8)], img)


def test_missing_checkpoint_file_is_named(clip_section, tmp_path):
    missing = str(tmp_path / "weights" / "nope.safetensors")
    with pytest.raises(ModelLoadError, match="nope.safetensors.*does not exist"):
        ClipModel(ClipConfig.model_validate({**clip_section, "pretrained": missing}))


def test_unknown_architecture_is_named(clip_section):
    with pytest.raises(ModelLoadError, match="no-such-arch"):
        ClipModel(ClipConfig.model_validate({**clip_section, "model_name": "no-such-arch"}))


def test_missing_config_dir_is_named(clip_section, tmp_path):
    with pytest.raises(ModelLoadError, match="no_configs_here"):
        ClipModel(ClipConfig.model_validate({**clip_section, "model_config_dir": str(tmp_path / "no_configs_here")}))
