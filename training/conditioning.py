"""Turn a data batch into the diffusion model's ``x0`` and its conditioning keyword arguments.

Unconditional runs diffuse the pixels themselves. Text-conditional (Stable-Diffusion-style) runs
diffuse VAE latents and condition the UNet on the frozen text encoder's hidden states; the VAE and
the text encoder never train, so they run under ``no_grad`` and are not wrapped by DDP.
"""
from __future__ import annotations

from typing import Any, Optional

import torch


class PixelSpace:
    """x0 = the images in [-1, 1]; no conditioning."""

    text_conditional = False

    def __init__(self, device: torch.device):
        self.device = device

    def encode_batch(self, batch: dict, generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, dict]:
        return batch["pixels"].to(self.device, non_blocking=True), {}

    def prompt_kwargs(self, prompts: list[str]) -> dict:
        return {}

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        return x0


class LatentTextSpace:
    """x0 = ``scaling_factor · VAE.encode(images)``; ``encoder_hidden_states`` = text encoder(captions)."""

    text_conditional = True

    def __init__(self, vae, text_encoder, tokenizer, device: torch.device):
        self.vae, self.text_encoder, self.tokenizer, self.device = vae, text_encoder, tokenizer, device
        for module in (vae, text_encoder):
            module.requires_grad_(False).eval().to(device)
        self.scaling_factor = float(vae.config.scaling_factor)
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def prompt_kwargs(self, prompts: list[str]) -> dict[str, Any]:
        tokens = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        hidden = self.text_encoder(tokens.input_ids.to(self.device))[0]
        return {"encoder_hidden_states": hidden}

    @torch.no_grad()
    def encode_batch(self, batch: dict, generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, dict]:
        pixels = batch["pixels"].to(self.device, dtype=self.vae.dtype, non_blocking=True)
        latents = self.vae.encode(pixels).latent_dist.sample(generator=generator)
        return (latents * self.scaling_factor).float(), self.prompt_kwargs(list(batch["caption"]))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        images = self.vae.decode(latents.to(self.vae.dtype) / self.scaling_factor).sample
        return images.float().clamp(-1, 1)
