"""The simulated sampling chain behind SS, SDSS and MDSS (thesis Alg. 7, derived afresh).

For a training timestep t and accumulation depth k:

1. x_{t+k+1} = √ᾱ x₀ + √(1−ᾱ) ε  (forward process);
2. x̂_{t+k} = one sampler step from x_{t+k+1} with the model's ε̂ (no gradient), and
   x_{t+k}  = the same step with the true ε (noise-free: for the DDPM step this is the posterior
   mean μ̃(x_{t+k+1}, x₀); for the DDIM step it is the forward marginal with the same ε);
3. both are carried k steps down with the true x₀ in closed form, x_t = γ_t x_{t+k} + ω_t x₀
   (:meth:`GaussianDiffusion.k_step_coefficients`);
4. optionally (``posterior='sample'``, DDPM chains only) the same fresh noise √v z is added to
   both, v the variance of q(x_t | x_{t+k+1}, x₀) (k+1 steps): x_t then follows the forward
   marginal exactly, and ξ_t = x̂_t − x_t is unchanged.

The no-grad prediction in step 2 runs the model in whatever mode it is in (in training: train
mode, dropout on) and under the caller's autocast; its output is cast to x₀'s dtype.

Edge of the schedule (0-indexed, t+k+1 ≤ T−1): a timestep t ≤ T−2 uses the effective depth
k_t = min(k, T−2−t), so the chain always starts inside the schedule; t = T−1 has no step above it
and cannot use the chain at all (callers fall back to plain DDPM there). Strategies that draw t
themselves draw it from [0, T−2−k], so there k_t = k always (Alg. 7 draws t ∈ {1..T−k−1} 1-indexed).
"""
from __future__ import annotations

from typing import Any, Callable, Literal, Optional

import numpy as np
import torch

from training.diffusion import GaussianDiffusion, StepKind

Posterior = Literal["mean", "sample"]


def call_model(model: Callable, x: torch.Tensor, t: torch.Tensor, model_kwargs: dict[str, Any]):
    """Call ``model(x, t, **kw)`` and check it returns ``(eps, xi_or_None)``."""
    out = model(x, t, **model_kwargs)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(
            "the model must return a pair (eps, xi) with xi None for a model without ξ head; "
            f"got {type(out).__name__}. Wrap a diffusers UNet with training.xi_head.XiUNet."
        )
    eps, xi = out
    if eps.shape != x.shape:
        raise ValueError(f"model ε output has shape {tuple(eps.shape)}, expected the input's {tuple(x.shape)}")
    if xi is not None and xi.shape != x.shape:
        raise ValueError(f"model ξ output has shape {tuple(xi.shape)}, expected the input's {tuple(x.shape)}")
    return eps, xi


class RolloutChain:
    """Precomputed per-t tables for the chain of depth ``k`` with sampler step ``kind``."""

    def __init__(self, diffusion: GaussianDiffusion, k: int, kind: StepKind, posterior: Posterior = "mean"):
        T = diffusion.num_timesteps
        if not 0 <= k <= T - 2:
            raise ValueError(f"k={k} must lie in [0, T-2={T - 2}] so that some t has t+k+1 <= T-1")
        if posterior not in ("mean", "sample"):
            raise ValueError(f"posterior must be 'mean' or 'sample', got {posterior!r}")
        if posterior == "sample" and kind != "ddpm":
            raise ValueError("posterior='sample' applies to the DDPM chain only; the DDIM step is deterministic")
        self.diffusion, self.k, self.kind, self.posterior = diffusion, k, kind, posterior
        #: largest t that can use the chain at all, and largest t with the full depth k
        self.max_t = T - 2
        self.max_t_full_depth = T - 2 - k
        t_all = np.arange(T - 1)
        self.k_eff = np.minimum(k, T - 2 - t_all)
        self.start = t_all + self.k_eff + 1
        self.gamma = np.empty(T - 1)
        self.omega = np.empty(T - 1)
        self.noise_std = np.zeros(T - 1)  # √Var q(x_t | x_{t+k_t+1}, x₀), used by posterior='sample'
        for kk in np.unique(self.k_eff):
            sel = self.k_eff == kk
            g, w = diffusion.k_step_coefficients(int(kk), kind)
            self.gamma[sel], self.omega[sel] = g[t_all[sel]], w[t_all[sel]]
            self.noise_std[sel] = np.sqrt(diffusion.k_step_posterior_variance(int(kk) + 1)[t_all[sel]])

    def run(
        self,
        model: Callable,
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        model_kwargs: Optional[dict[str, Any]] = None,
        generator: Optional[torch.Generator] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂_t, x_t): the model-rolled input and its noise-free counterpart at timesteps ``t``."""
        d = self.diffusion
        t = d._timesteps(t, x0, limit=self.max_t + 1)
        start = torch.as_tensor(self.start, device=x0.device)[t]
        x_start = d.q_sample(x0, start, noise)
        with torch.no_grad():
            eps_hat, _ = call_model(model, x_start, start, model_kwargs or {})
        x_hat = d.step_from_eps(self.kind, x_start, start, eps_hat.detach().to(x0.dtype))
        x_true = d.step_from_eps(self.kind, x_start, start, noise)
        gamma, omega = d.gather(self.gamma, t, x0), d.gather(self.omega, t, x0)
        x_hat_t = gamma * x_hat + omega * x0
        x_t = gamma * x_true + omega * x0
        if self.posterior == "sample":
            z = randn_like_with(x0, generator)
            shared = d.gather(self.noise_std, t, x0) * z
            x_hat_t, x_t = x_hat_t + shared, x_t + shared
        return x_hat_t, x_t


def rand_with(n: int, generator: Optional[torch.Generator], device: torch.device) -> torch.Tensor:
    """Uniform [0,1) draws from ``generator`` (on its own device), moved to ``device``."""
    gdev = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, device=gdev).to(device)


def randn_like_with(x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    gdev = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=gdev, dtype=x.dtype).to(x.device)
