"""Tiny random-weight twin of google/ddpm-cifar10-32: an unconditional UNet2DModel and its DDPM scheduler.

The real repository (Ho et al.'s CIFAR-10 DDPM in diffusers' format) holds the UNet's ``config.json`` and
weights at the top level beside ``scheduler_config.json`` (linear betas 1e-4..0.02, 1000 steps); the
MDSS fine-tuning profile loads the UNet with ``UNet2DModel.from_pretrained`` and the schedule from that
scheduler config. The twin has the same layout, block types (plain and attention blocks), 32×32 RGB
input and the same scheduler, at toy width.
"""
from __future__ import annotations

from pathlib import Path

TINY_DDPM_UNET = dict(
    sample_size=32, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=8, attention_head_dim=8, dropout=0.1, flip_sin_to_cos=False, freq_shift=1,
)
DDPM_CIFAR10_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                              variance_type="fixed_large", clip_sample=True)


def build(out_dir: Path, seed: int = 0, channels: int = 3) -> dict:
    """Write the twin into ``out_dir`` (``channels``: 3 as CIFAR-10, 1 for a Fashion-MNIST fine-tune); return
    the MDSS config pieces that point at it."""
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DModel(**{**TINY_DDPM_UNET, "in_channels": channels, "out_channels": channels})
    unet.save_pretrained(out_dir)
    DDPMScheduler(**DDPM_CIFAR10_SCHEDULER).save_config(out_dir)
    return {"model": {"pretrained": str(out_dir)}, "schedule": {"from_scheduler_config": str(out_dir)}}
