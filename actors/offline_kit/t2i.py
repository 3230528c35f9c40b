"""Tiny random-weight Stable Diffusion pipeline for the text-to-image role.

Same on-disk format as SD1.5 (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
scheduler/), so it loads through ``T2IModel`` with AutoPipelineForText2Image. The VAE has
four blocks (downsampling 8×, like SD) so a 64×64 image is an 8×8 latent; the tokenizer is
the real CLIP BPE (see vocab.py) with 77 positions.
"""
from __future__ import annotations

from pathlib import Path

# Small enough to run a 4-step 64×64 batch in well under a second on two CPU cores.
TINY_UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(32, 64),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=32,
)
TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(16, 16, 32, 32),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=16,
    sample_size=64,
)
TINY_TEXT_ENCODER = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    projection_dim=32,
)
# SD1.5's noise schedule; DDIM with eta=0 is deterministic given the starting noise.
SD_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)
IMAGE_SIZE = 64


def sd_pipeline(tokenizer, unet: dict, vae: dict, text_encoder: dict):
    """A StableDiffusionPipeline with random weights from the given component configs."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    text_cfg = CLIPTextConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,  # pooled output is taken at the first EOS
        pad_token_id=tokenizer.pad_token_id,
        **text_encoder,
    )
    return StableDiffusionPipeline(
        vae=AutoencoderKL(**vae),
        text_encoder=CLIPTextModel(text_cfg),
        tokenizer=tokenizer,
        unet=UNet2DConditionModel(**unet),
        scheduler=DDIMScheduler(**SD_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build(out_dir: Path, seed: int = 0) -> dict:
    """Save the tiny pipeline under ``out_dir/t2i`` and return the T2I config section for it."""
    import torch

    from actors.config import T2IConfig
    from actors.offline_kit.vocab import build_clip_tokenizer

    folder = Path(out_dir) / "t2i"
    tokenizer = build_clip_tokenizer(folder / "tokenizer", model_max_length=77)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipe = sd_pipeline(tokenizer, TINY_UNET, TINY_VAE, TINY_TEXT_ENCODER)
    pipe.save_pretrained(str(folder))
    section = {
        "model": str(folder),
        "pipeline_class": "AutoPipelineForText2Image",
        "device": "cpu",
        "dtype": "float32",
        "num_inference_steps": 4,
        "guidance_scale": 7.5,
        "height": IMAGE_SIZE,
        "width": IMAGE_SIZE,
        "negative_prompt": None,
        "max_prompt_tokens": 77,
        "batching": {"max_batch_size": 8, "max_wait_ms": 20.0},
        "resources": {"num_gpus": 0, "num_cpus": 0.25},
    }
    return T2IConfig.model_validate(section).model_dump(mode="json")
