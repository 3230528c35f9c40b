"""Generating image sets with the project's samplers, and scoring them against the reference splits."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from benchmarks.exposure_bias.config import Cell, ProtocolConfig
from training.diffusion import GaussianDiffusion
from training.metrics.fid import default_metric
from training.samplers import SamplerConfig, sample


def sampler_config(cell: Cell, *, xi_denoise: bool, lam: float = 1.0, clip_sample: Optional[bool] = None) -> SamplerConfig:
    """``clip_sample`` (DDPM/DDIM only; None: diffusers' default, True) clips the predicted x₀ at every step."""
    clip = clip_sample if cell.sampler in ("ddpm", "ddim") else None
    return SamplerConfig(name=cell.sampler, num_steps=cell.steps, xi_denoise=xi_denoise, eps_scale=lam, clip_sample=clip)


@torch.no_grad()
def generate(model, diffusion: GaussianDiffusion, cfg: SamplerConfig, n: int, seed: int, batch_size: int,
             device: str = "cpu") -> torch.Tensor:
    """``n`` images (n, 1, 32, 32) in [-1, 1]; batch b is seeded with ``seed·100003 + b`` so sets of the same
    seed share their initial noise across methods (common random numbers)."""
    model.eval()
    shape = tuple(model.config.sample_size if isinstance(model.config.sample_size, tuple)
                  else (model.config.sample_size,) * 2)
    chunks = []
    for b, start in enumerate(range(0, n, batch_size)):
        m = min(batch_size, n - start)
        chunks.append(sample(model, diffusion, cfg, (m, model.config.in_channels, *shape), seed=seed * 100_003 + b,
                             device=device).cpu())
    return torch.cat(chunks)


METRIC_SIZE = 32  # the feature network's (and Inception's loader's) input: Fashion-MNIST padded to 32×32


def at_resolution(images: torch.Tensor, size: int) -> torch.Tensor:
    """Fashion-MNIST (N, 1, 32, 32) at the protocol's resolution: 2×2 average pooling for 16."""
    if size == images.shape[-1]:
        return images
    return F.avg_pool2d(images, images.shape[-1] // size)


def to_metric_size(images: torch.Tensor) -> torch.Tensor:
    """Any protocol resolution back to 32×32 (bilinear) for the metric: the references go through the same
    down-and-up, so both sides carry the same loss of detail."""
    if images.shape[-1] == METRIC_SIZE:
        return images
    return F.interpolate(images, size=(METRIC_SIZE, METRIC_SIZE), mode="bilinear", align_corners=False).clamp(-1, 1)


class Scorer:
    """The distance of a generated set to the held-out ('val', for the λ search) or the test reference."""

    def __init__(self, cfg: ProtocolConfig, feature_dir: Optional[Path]):
        from benchmarks.exposure_bias.data import load_split

        images = load_split(cfg, "test", cfg.val_size + cfg.test_size)
        native = at_resolution(images, cfg.image_size)
        #: the reference splits at the protocol's resolution (diagnostics' clean images)
        self.native = {"val": native[:cfg.val_size], "test": native[cfg.val_size:]}
        images = to_metric_size(native)
        self.refs = {"val": images[:cfg.val_size], "test": images[cfg.val_size:]}
        self.metrics = {}
        for split, ref in self.refs.items():
            metric = default_metric(None if cfg.inception_weights else feature_dir, cfg.inception_weights)
            self.metrics[split] = metric.set_reference(ref)
        self.name = self.metrics["test"].name

    def __call__(self, images: torch.Tensor, split: str = "test") -> float:
        return self.metrics[split].score(to_metric_size(images))
