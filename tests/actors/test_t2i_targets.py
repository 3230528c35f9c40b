"""The offline kit's tiny twins of SDXL, SD3.5, FLUX.1-dev and PixArt-α load and generate like the real ones (CPU)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
from pathlib import Path

import numpy as np
import pytest

from actors.config import T2IConfig
from actors.offline_kit import t2i_targets
from actors.t2i import T2IModel

ITEMS = [("a red fox in the snow", 1), ("a lighthouse at dusk", 2)]
PROMPT = "a red fox sitting in the snow at dusk"

# Pipeline class and component classes of each real repository.
EXPECTED = {
    "sdxl": ("StableDiffusionXLPipeline", {
        "unet": "UNet2DConditionModel", "vae": "AutoencoderKL", "scheduler": "EulerDiscreteScheduler",
        "text_encoder": "CLIPTextModel", "text_encoder_2": "CLIPTextModelWithProjection",
        "tokenizer": "CLIPTokenizer", "tokenizer_2": "CLIPTokenizer",
    }),
    "sd3": ("StableDiffusion3Pipeline", {
        "transformer": "SD3Transformer2DModel", "vae": "AutoencoderKL", "scheduler": "FlowMatchEulerDiscreteScheduler",
        "text_encoder": "CLIPTextModelWithProjection", "text_encoder_2": "CLIPTextModelWithProjection",
        "text_encoder_3": "T5EncoderModel",
        "tokenizer": "CLIPTokenizer", "tokenizer_2": "CLIPTokenizer", "tokenizer_3": "T5Tokenizer",
    }),
    "flux": ("FluxPipeline", {
        "transformer": "FluxTransformer2DModel", "vae": "AutoencoderKL", "scheduler": "FlowMatchEulerDiscreteScheduler",
        "text_encoder": "CLIPTextModel", "text_encoder_2": "T5EncoderModel",
        "tokenizer": "CLIPTokenizer", "tokenizer_2": "T5Tokenizer",
    }),
    "pixart": ("PixArtAlphaPipeline", {
        "transformer": "PixArtTransformer2DModel", "vae": "AutoencoderKL", "scheduler": "DPMSolverMultistepScheduler",
        "text_encoder": "T5EncoderModel", "tokenizer": "T5Tokenizer",
    }),
}
T5_TOKENIZERS = [("sd3", "tokenizer_3"), ("flux", "tokenizer_2"), ("pixart", "tokenizer")]
LATENT_CHANNELS = {"sdxl": 4, "sd3": 16, "flux": 16, "pixart": 4}


@pytest.fixture(scope="module")
def sections(t2i_target_sections) -> dict:
    return t2i_target_sections


@pytest.fixture(scope="module")
def models(sections) -> dict:
    return {target: T2IModel(T2IConfig.model_validate(section)) for target, section in sections.items()}


def files_of(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_targets_are_the_four_pipelines():
    assert t2i_targets.TARGETS == tuple(EXPECTED)
    with pytest.raises(ValueError, match="unknown text-to-image target"):
        t2i_targets.build(Path("/nonexistent"), "sd15")


@pytest.mark.parametrize("target", t2i_targets.TARGETS)
def test_section_is_a_small_cpu_config_with_the_pipeline_defaults(sections, target):
    cfg = T2IConfig.model_validate(sections[target])
    assert (cfg.pipeline_class, cfg.device, cfg.dtype) == ("AutoPipelineForText2Image", "cpu", "float32")
    assert (cfg.num_inference_steps, cfg.height, cfg.width, cfg.negative_prompt) == (2, 64, 64, None)
    assert cfg.guidance_scale == {"sdxl": 5.0, "sd3": 7.0, "flux": 3.5, "pixart": 4.5}[target]
    assert cfg.max_prompt_tokens == T2IConfig().max_prompt_tokens  # left at its default
    assert (cfg.batching.max_batch_size, cfg.resources.num_gpus, cfg.resources.num_cpus) == (4, 0, 0.25)
    folder = Path(cfg.model)
    assert folder.name == target
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == EXPECTED[target][0]
    for component in EXPECTED[target][1]:
        assert (folder / component).is_dir(), component


@pytest.mark.parametrize("target", t2i_targets.TARGETS)
def test_auto_pipeline_loads_the_real_classes(sections, target):
    from diffusers import AutoPipelineForText2Image

    pipe = AutoPipelineForText2Image.from_pretrained(sections[target]["model"])
    name, components = EXPECTED[target]
    assert type(pipe).__name__ == name
    assert {k: type(getattr(pipe, k)).__name__ for k in components} == components
    assert pipe.vae.config.latent_channels == LATENT_CHANNELS[target]
    assert pipe.vae_scale_factor == 8
    if target == "flux":
        assert pipe.transformer.config.guidance_embeds  # FLUX.1-dev, not schnell


@pytest.mark.parametrize("target", t2i_targets.TARGETS)
def test_generate_batch_gives_seeded_uint8_images(models, target):
    model = models[target]
    images = model.generate_batch(ITEMS)
    assert len(images) == 2
    for img in images:
        assert isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.shape == (64, 64, 3)
    assert not np.array_equal(images[0], images[1])
    again = model.generate_batch(ITEMS)
    assert all(np.array_equal(a, b) for a, b in zip(images, again))


@pytest.mark.parametrize("target,attr", T5_TOKENIZERS)
def test_t5_tokenizer_is_saved_like_the_hub_repos(sections, models, target, attr):
    import sentencepiece as spm
    from transformers import T5TokenizerFast

    folder = Path(sections[target]["model"]) / attr
    assert {"spiece.model", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    tok = getattr(models[target].pipe, attr)
    assert isinstance(tok, T5TokenizerFast)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.bos_token_id) == (0, 1, 2, None)
    assert 1000 <= len(tok) <= 5000
    ids = tok(PROMPT).input_ids
    assert ids[-1] == 1 and ids.count(1) == 1
    assert len(tok(PROMPT, add_special_tokens=False).input_ids) >= 5
    assert tok.unk_token_id not in ids
    # tokenizer.json and spiece.model agree.
    sp = spm.SentencePieceProcessor(model_file=str(folder / "spiece.model"))
    assert sp.encode(PROMPT) + [1] == ids


def test_sdxl_clip_tokenizers_have_77_positions(models):
    pipe = models["sdxl"].pipe
    for tok in (pipe.tokenizer, pipe.tokenizer_2):
        assert type(tok).__name__ == "CLIPTokenizer"
        assert tok.model_max_length == 77
    assert pipe.tokenizer(PROMPT).input_ids == pipe.tokenizer_2(PROMPT).input_ids


def test_rebuilding_with_the_same_seed_gives_identical_files(sections, tmp_path):
    first = Path(sections["sd3"]["model"])  # CLIP, T5 and the transformer: every kind of file
    again = Path(t2i_targets.build(tmp_path / "again", "sd3", seed=0)["model"])
    assert files_of(again) == files_of(first)
    other = Path(t2i_targets.build(tmp_path / "other", "sd3", seed=1)["model"])
    weights = "transformer/diffusion_pytorch_model.safetensors"
    assert (other / weights).read_bytes() != (first / weights).read_bytes()


def test_each_twin_says_whether_the_agents_negative_prompt_would_act(models):
    """agent.negative is refused on FLUX.1 (guidance-distilled) and accepted where CFG is on, on the real classes."""
    refused = {target: model.negative_refusal for target, model in models.items()}
    assert "FLUX.1" in refused["flux"]
    for target in ("sdxl", "sd3", "pixart"):
        guidance = models[target].cfg.guidance_scale
        assert (refused[target] is None) == (guidance > 1), (target, guidance, refused[target])


def test_sdxl_takes_a_per_item_negative_prompt_without_changing_plain_items(models):
    model = models["sdxl"]
    plain = model.generate_batch(ITEMS)
    mixed = model.generate_batch([ITEMS[0], (*ITEMS[1], "blurry")])
    assert np.abs(mixed[0].astype(int) - plain[0].astype(int)).max() <= 1  # no negative: as before
    if model.negative_refusal is None:
        assert not np.array_equal(mixed[1], plain[1])
