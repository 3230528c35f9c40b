"""Text-to-image role on the offline kit's tiny Stable Diffusion pipeline (CPU, float32)."""
import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from actors.config import T2IConfig
from actors.model_source import ModelLoadError
from actors.roles import T2IRole
from actors.t2i import T2IModel, T2IServer

PROMPTS = ["a red apple on a table", "a blue car in the city", "portrait of an old man", "mountain lake at sunset"]


@pytest.fixture(scope="module")
def t2i_cfg(t2i_section) -> T2IConfig:
    return T2IConfig.model_validate(t2i_section)


@pytest.fixture(scope="module")
def model(t2i_cfg) -> T2IModel:
    return T2IModel(t2i_cfg)


def as_int(img: np.ndarray) -> np.ndarray:
    return img.astype(np.int16)


def test_kit_section_is_a_cpu_config_pointing_at_a_saved_pipeline(t2i_cfg):
    folder = Path(t2i_cfg.model)
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"
    assert (t2i_cfg.device, t2i_cfg.dtype, t2i_cfg.resources.num_gpus) == ("cpu", "float32", 0)
    assert t2i_cfg.resources.num_cpus <= 0.5


def test_auto_pipeline_loads_the_kit_folder(model):
    assert type(model.pipe).__name__ == "StableDiffusionPipeline"
    assert model.pipe.tokenizer.model_max_length == 77
    assert model.pipe.safety_checker is None


def test_kit_tokenizer_gives_distinct_ids_to_ordinary_words(model):
    tok = model.pipe.tokenizer
    ids = [tok(p, add_special_tokens=False).input_ids for p in PROMPTS]
    assert len({tuple(i) for i in ids}) == len(PROMPTS)
    unk = tok.unk_token_id
    assert all(unk not in i for i in ids)  # no word fell out of the vocabulary
    assert tok("a cat", add_special_tokens=False).input_ids != tok("a dog", add_special_tokens=False).input_ids


def test_images_are_uint8_hw3_of_the_configured_size(model, t2i_cfg):
    images = model.generate_batch([(PROMPTS[0], 0), (PROMPTS[1], 1)])
    assert len(images) == 2
    for img in images:
        assert isinstance(img, np.ndarray) and img.dtype == np.uint8
        assert img.shape == (t2i_cfg.height, t2i_cfg.width, 3)
    assert model.generate_batch([]) == []


def test_same_prompt_and_seed_repeat_bit_for_bit(model):
    items = [(PROMPTS[0], 7), (PROMPTS[1], 3)]
    first, second = model.generate_batch(items), model.generate_batch(items)
    for a, b in zip(first, second):
        assert np.array_equal(a, b)


def test_same_prompt_and_seed_regardless_of_batch_company(model):
    alone = model.generate_batch([(PROMPTS[0], 7)])[0]
    crowd = model.generate_batch([(PROMPTS[1], 3), (PROMPTS[0], 7), (PROMPTS[2], 7), (PROMPTS[0], 8)])
    # Same starting noise (per-item generator); only kernel summation order may differ with
    # the batch size: at most one uint8 level, in a tiny fraction of pixels (see actors/t2i.py).
    diff = np.abs(as_int(alone) - as_int(crowd[1]))
    assert diff.max() <= 1
    assert (diff > 0).mean() < 0.005
    # The row position inside a batch is subject to the same kernel noise, and no more.
    twice = model.generate_batch([(PROMPTS[0], 7), (PROMPTS[1], 5), (PROMPTS[0], 7)])
    diff = np.abs(as_int(twice[0]) - as_int(twice[2]))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.005


def test_different_prompts_and_seeds_give_different_images(model):
    a, b, c = model.generate_batch([(PROMPTS[0], 7), (PROMPTS[3], 7), (PROMPTS[0], 8)])
    # Far above the <=1-level batch noise: the prompt really conditions the image.
    assert np.abs(as_int(a) - as_int(b)).mean() > 1.0
    assert np.abs(as_int(a) - as_int(c)).mean() > 10.0


def test_count_tokens_excludes_special_tokens_and_does_not_truncate(model):
    tok = model.pipe.tokenizer
    long_prompt = " ".join(["castle"] * 100)
    counts = model.count_tokens(["a cat", "an astronaut riding a horse", "", long_prompt])
    assert counts[:3] == [2, 5, 0]
    assert counts[3] == 100 > tok.model_max_length
    assert counts[1] == len(tok("an astronaut riding a horse", add_special_tokens=False).input_ids)
    with pytest.raises(TypeError):
        model.count_tokens("a single string")


def test_bad_seeds_and_prompts_are_rejected(model):
    with pytest.raises(ValueError, match="seed"):
        model.generate_batch([("a cat", -1)])
    with pytest.raises(TypeError, match="seed"):
        model.generate_batch([("a cat", 1.5)])
    with pytest.raises(TypeError, match="prompt"):
        model.generate_batch([(None, 1)])


async def test_server_coalesces_concurrent_callers_into_one_pipeline_call(model, t2i_cfg):
    server = T2IServer(t2i_cfg, model=model)
    assert isinstance(server, T2IRole)
    calls = [server.generate(PROMPTS[0], [7, 8]), server.generate(PROMPTS[1], [3]), server.generate(PROMPTS[2], [1])]
    results = await asyncio.gather(*calls)
    stats = await server.stats()
    assert stats["batches"]["batches"] == 1 and stats["batches"]["items"] == 4
    assert [len(r) for r in results] == [2, 1, 1]
    alone = model.generate_batch([(PROMPTS[0], 7)])[0]
    assert np.abs(as_int(alone) - as_int(results[0][0])).max() <= 1
    assert await server.count_tokens(["a cat"]) == [2]
    assert (await server.ping())["ok"] is True


async def test_server_rejects_a_bad_seed_before_queueing(model, t2i_cfg):
    server = T2IServer(t2i_cfg, model=model)
    with pytest.raises(ValueError, match="seed"):
        await server.generate("a cat", [1, -5])
    assert (await server.stats())["batches"]["batches"] == 0


def test_missing_model_folder_is_named(t2i_section, tmp_path):
    missing = str(tmp_path / "no_such_pipeline")
    with pytest.raises(ModelLoadError, match="no_such_pipeline.*does not exist"):
        T2IModel(T2IConfig.model_validate({**t2i_section, "model": missing}))


def test_folder_without_model_index_is_named(t2i_section, tmp_path):
    with pytest.raises(ModelLoadError, match=f"{tmp_path}.*model_index.json"):
        T2IModel(T2IConfig.model_validate({**t2i_section, "model": str(tmp_path)}))


def test_unknown_pipeline_class_is_named(t2i_section):
    with pytest.raises(ModelLoadError, match="NoSuchPipeline"):
        T2IModel(T2IConfig.model_validate({**t2i_section, "pipeline_class": "NoSuchPipeline"}))


def test_unreachable_hub_id_is_named(t2i_section):
    with pytest.raises(ModelLoadError, match="nobody/no-such-model"):
        T2IModel(T2IConfig.model_validate({**t2i_section, "model": "nobody/no-such-model"}))


def test_the_dtype_keyword_follows_the_diffusers_release():
    """diffusers 0.40 renamed from_pretrained's torch_dtype to dtype; older releases would ignore a `dtype`
    (float32 weights where float16 was asked), newer ones warn on `torch_dtype`."""
    import torch

    from actors.t2i import _dtype_kwarg

    assert _dtype_kwarg(torch.float16, "0.39.2") == {"torch_dtype": torch.float16}
    assert _dtype_kwarg(torch.float16, "0.40.0.dev0") == {"dtype": torch.float16}
    assert _dtype_kwarg(torch.float16, "0.42.1") == {"dtype": torch.float16}
    assert _dtype_kwarg(torch.float16, "1.0.0") == {"dtype": torch.float16}


# --------------------------------------------------------------------------- per-call negative prompts (agent.negative)

def test_a_per_item_negative_prompt_acts_and_leaves_plain_items_bit_identical(model):
    plain = model.generate_batch([(PROMPTS[0], 0), (PROMPTS[1], 1)])
    negative = model.generate_batch([(PROMPTS[0], 0, "blurry, watermark")])[0]
    assert not np.array_equal(negative, plain[0])  # the negative prompt changed the image (CFG is on: 7.5)
    # one call mixing items with and without a negative prompt gives each what it gets alone
    mixed = model.generate_batch([(PROMPTS[0], 0), (PROMPTS[0], 0, "blurry, watermark"), (PROMPTS[1], 1, None)])
    assert np.abs(as_int(mixed[0]) - as_int(plain[0])).max() <= 1 and np.abs(as_int(mixed[2]) - as_int(plain[1])).max() <= 1
    assert np.abs(as_int(mixed[1]) - as_int(negative)).max() <= 1
    assert model.negative_refusal is None


async def test_the_server_passes_a_negative_prompt_and_reports_when_it_cannot_act(model, t2i_cfg):
    server = T2IServer(t2i_cfg, model=model)
    with_neg = await server.generate(PROMPTS[2], [3], negative_prompt="dark")
    assert np.abs(as_int(with_neg[0]) - as_int(model.generate_batch([(PROMPTS[2], 3, "dark")])[0])).max() <= 1
    assert (await server.prompt_budget())["negative_prompt_refused"] is None
    with pytest.raises(ValueError, match="negative_prompt is empty"):
        await server.generate(PROMPTS[2], [3], negative_prompt="   ")
    with pytest.raises(TypeError, match="prompt must be a str"):
        await server.generate(PROMPTS[2], [3], negative_prompt=["dark"])


def test_targets_where_a_negative_prompt_does_not_act_say_why(t2i_cfg):
    import diffusers

    from actors.t2i import negative_prompt_refusal

    flux = diffusers.FluxPipeline.__new__(diffusers.FluxPipeline)
    assert "FLUX.1" in negative_prompt_refusal(flux, t2i_cfg)
    sd = diffusers.StableDiffusionPipeline.__new__(diffusers.StableDiffusionPipeline)
    assert negative_prompt_refusal(sd, t2i_cfg) is None
    no_cfg = t2i_cfg.model_copy(update={"guidance_scale": 1.0})
    assert "guidance_scale is 1" in negative_prompt_refusal(sd, no_cfg)

    class NoNegative:
        def __call__(self, prompt): ...

    assert "takes no negative prompt" in negative_prompt_refusal(NoNegative(), t2i_cfg)
