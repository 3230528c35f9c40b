"""The prompt budget comes from the target pipeline's own tokenizers (actors/prompt_budget.py), loaded
through the real T2I role from each twin: CLIP's 77 for SD1.5 and SDXL, T5's sequence length for SD3.5
(256), FLUX.1 (512) and PixArt-α (120), counted with that encoder's tokenizer; settings a pipeline would
drop are refused naming the key."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import asyncio

import pytest

from actors.config import T2IConfig
from actors.model_source import ModelLoadError
from actors.t2i import T2IModel, T2IServer

# (tokenizer attribute, encoder, limit, special tokens the tokenizer adds)
EXPECTED = {
    "sd15": ("tokenizer", "CLIP", 77, 2),
    "sdxl": ("tokenizer", "CLIP", 77, 2),
    "sd3": ("tokenizer_3", "T5", 256, 1),
    "flux": ("tokenizer_2", "T5", 512, 1),
    "pixart": ("tokenizer", "T5", 120, 1),
}
# 98 CLIP tokens (more than SD1.5/SDXL read) and 152 tokens of the twins' small T5 vocabulary (within
# SD3.5's 256 and FLUX.1's 512; a real T5 vocabulary would need fewer).
LONG = ", ".join(["a red fox", "snowy pine forest", "golden hour light", "soft shadows", "film grain",
                  "wide angle", "misty mountains", "frozen lake", "warm colours", "cold air"] * 3)


@pytest.fixture(scope="module")
def sections(t2i_section, t2i_target_sections) -> dict:
    return {"sd15": t2i_section, **t2i_target_sections}


@pytest.fixture(scope="module")
def models(sections) -> dict:
    return {name: T2IModel(T2IConfig.model_validate(section)) for name, section in sections.items()}


def with_changes(section: dict, **changes) -> T2IConfig:
    return T2IConfig.model_validate({**section, **changes})


@pytest.mark.parametrize("name", list(EXPECTED))
def test_the_binding_encoder_and_its_limit(models, name):
    budget = models[name].budget
    assert (budget.tokenizer_attr, budget.encoder, budget.limit, budget.special) == EXPECTED[name]
    assert budget.max_sequence_length == (budget.limit if budget.encoder == "T5" else None)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_counts_come_from_the_targets_tokenizer(models, name):
    model = models[name]
    tokenizer = getattr(model.pipe, EXPECTED[name][0])
    texts = ["a red fox in the snow", LONG]
    assert model.count_tokens(texts) == [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]


def test_t5_and_clip_count_differently_so_the_tokenizer_matters(models):
    clip, t5 = models["sd15"].count_tokens([LONG])[0], models["sd3"].count_tokens([LONG])[0]
    assert clip != t5
    assert clip > 77 - 2  # the long prompt does not fit CLIP ...
    assert t5 <= 256 - 1  # ... and fits SD3.5's T5 whole


def test_the_server_tells_the_driver_its_budget(models):
    budget = asyncio.run(T2IServer(models["flux"].cfg, models["flux"]).prompt_budget())
    assert budget["limit"] == 512 and budget["tokenizer"] == "tokenizer_2" and "T5 binds" in budget["note"]


@pytest.mark.parametrize("name, too_many", [("sd15", 78), ("sdxl", 100), ("pixart", 513), ("flux", 600)])
def test_a_budget_the_target_cannot_hold_is_refused_naming_it(sections, name, too_many):
    with pytest.raises(ModelLoadError, match=rf"t2i.max_prompt_tokens {too_many} is more than"):
        T2IModel(with_changes(sections[name], max_prompt_tokens=too_many))


def test_a_configured_t5_budget_is_the_sequence_length_the_pipeline_is_called_with(sections):
    model = T2IModel(with_changes(sections["sd3"], max_prompt_tokens=300))
    assert model.budget.limit == 300 and model.budget.max_sequence_length == 300
    seen = {}
    original = type(model.pipe).__call__

    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        return original(self, *args, **kwargs)

    type(model.pipe).__call__, restore = spy, original
    try:
        images = model.generate_batch([(LONG, 0)])
    finally:
        type(model.pipe).__call__ = restore
    assert seen["max_sequence_length"] == 300 and images[0].shape == (64, 64, 3)


def test_a_smaller_configured_clip_budget_is_kept(sections):
    model = T2IModel(with_changes(sections["sdxl"], max_prompt_tokens=60))
    assert model.budget.limit == 60 and model.budget.tokenizer_attr == "tokenizer"


def test_flux_refuses_a_negative_prompt_it_would_drop(sections):
    with pytest.raises(ModelLoadError, match="t2i.negative_prompt: FluxPipeline"):
        T2IModel(with_changes(sections["flux"], negative_prompt="blurry"))
    # the others take it
    for name in ("sd15", "sdxl", "sd3", "pixart"):
        assert T2IModel(with_changes(sections[name], negative_prompt="blurry")).cfg.negative_prompt == "blurry"


def test_a_long_prompt_generates_on_every_t5_target(models):
    for name in ("sd3", "flux", "pixart"):
        assert models[name].generate_batch([(LONG, 1)])[0].shape == (64, 64, 3)
