"""Sampling D-vectors with the project's diffusers-based samplers (training/samplers.py), no clipping."""
from __future__ import annotations

import torch

from training.diffusion import GaussianDiffusion
from training.samplers import SamplerConfig, sample


def sample_vectors(model, diffusion: GaussianDiffusion, sampler: str, steps: int, n: int, dim: int, *, seed: int,
                   xi_denoise: bool, eps_scale: float = 1.0) -> torch.Tensor:
    """(n, dim) float64 samples; DDPM (fixed_small variance) or deterministic DDIM with ``steps`` steps."""
    cfg = SamplerConfig(name=sampler, num_steps=steps, xi_denoise=xi_denoise, eps_scale=eps_scale,
                        clip_sample=False)
    x = sample(model, diffusion, cfg, (n, dim), seed=seed, clamp=False)
    return x.double()
