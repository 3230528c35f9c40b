"""The MLP denoiser on D-vectors: ε_θ(x, t) and, optionally, ξ_θ(x, t) (the SDSS/MDSS input-error head).

Called as the project's models are, ``model(x, t, **kw) -> (eps, xi_or_None)``; x is (B, D) (the diffusion
math and the strategies broadcast coefficients over any trailing shape, and diffusers' DDPM/DDIM steps work
on (B, D) too, so no (B, D, 1, 1) view is needed). Extra keyword arguments are ignored: the chain-only
control passes the clean batch as ``oracle_x0`` through ``model_kwargs`` to its oracle rollout model.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from training.diffusion import GaussianDiffusion


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float().reshape(-1, 1) * freqs
    return torch.cat([args.sin(), args.cos()], dim=1)


class MLPDenoiser(nn.Module):
    def __init__(self, dim: int, hidden: int = 256, depth: int = 3, time_dim: int = 64, xi_head: bool = False):
        super().__init__()
        self.dim, self.time_dim = dim, time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden)) for _ in range(depth))
        self.eps_out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))
        self.xi_out: Optional[nn.Module] = None
        if xi_head:
            self.add_xi_head()

    def add_xi_head(self) -> None:
        """A zero-initialised ξ output (so a fine-tune starts from the pretrained model's behaviour: ξ = 0)."""
        if self.xi_out is None:
            hidden = self.inp.out_features
            self.xi_out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, self.dim))
            nn.init.zeros_(self.xi_out[1].weight)
            nn.init.zeros_(self.xi_out[1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **_ignored):
        shape = x.shape
        h = self.inp(x.reshape(shape[0], -1).float())
        temb = self.time_mlp(timestep_embedding(t.reshape(-1).expand(shape[0]), self.time_dim))
        for blk in self.blocks:
            h = h + blk(h + temb)
        eps = self.eps_out(h).reshape(shape)
        xi = self.xi_out(h).reshape(shape) if self.xi_out is not None else None
        return eps, xi


def oracle_rollout(diffusion: GaussianDiffusion):
    """The chain-only control's rollout model: the *true* ε of x_t given the clean batch (no model error), so
    x̂ = x and only the chain's posterior-mean shrinkage differs from DDPM training."""

    def model(x: torch.Tensor, t: torch.Tensor, oracle_x0: torch.Tensor, **_ignored):
        return diffusion.predict_eps_from_x0(x, t, oracle_x0.to(x.dtype)), None

    return model
