"""Tiny random-weight model folders and data sets for the MDSS training tests (built offline, in seconds)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CAPTION_WORDS = ["a", "red", "blue", "green", "square", "circle", "photo", "of"]


def tiny_unet_folder(root: Path, *, channels: int = 1, timesteps: int = 50) -> Path:
    """A pretrained-style unconditional UNet folder: config.json + weights + scheduler_config.json
    at the root, the layout of google/ddpm-cifar10-32."""
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=32, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
                       layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=4)
    unet.save_pretrained(root)
    DDPMScheduler(num_train_timesteps=timesteps, beta_schedule="linear", beta_start=1e-4,
                  beta_end=0.02).save_pretrained(root)
    return root


def tiny_sd_folder(root: Path, timesteps: int = 50) -> Path:
    """A Stable-Diffusion-style pipeline folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/) with a
    word-level tokenizer over CAPTION_WORDS. The VAE halves the resolution: 32px images -> 4x16x16 latents."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=4, attention_head_dim=2)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=8, sample_size=32)
    text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                                num_attention_heads=2, vocab_size=len(CAPTION_WORDS) + 2,
                                                max_position_embeddings=16, pad_token_id=0, bos_token_id=0,
                                                eos_token_id=1))
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(CAPTION_WORDS)}}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token="[PAD]", unk_token="[UNK]",
                                        model_max_length=8)
    scheduler = DDIMScheduler(num_train_timesteps=timesteps, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(root)
    return root


def captioned_folder(root: Path, n: int = 8, size: int = 32) -> Path:
    """``n`` coloured-square images with captions.jsonl."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}
    rows = []
    for i in range(n):
        name = list(colours)[i % 3]
        img = np.full((size, size, 3), 255, np.uint8)
        lo, hi = size // 4 + i % 3, 3 * size // 4
        img[lo:hi, lo:hi] = colours[name]
        Image.fromarray(img).save(root / f"{i:03d}.png")
        rows.append({"file": f"{i:03d}.png", "text": f"a {name} square"})
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root
