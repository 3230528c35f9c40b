"""Per-step error measures (thesis Figure 3.2) and the variance error of Ning et al. along the trajectory.

**Effective ε.** Methods with a ξ head sample from x̃_t = x_t − ξ_θ, so their raw ε_θ is not comparable
with a plain model's. Every model is therefore scored through the noise estimate its sampler step
actually uses: x̂₀ = (x̃_t − √(1−ᾱ_t) ε_θ)/√ᾱ_t, ε_eff = (x_t − √ᾱ_t x̂₀)/√(1−ᾱ_t); for a model without
ξ, ε_eff = ε_θ. The ground truth for an input x_t built from a real x₀ is ε* = (x_t − √ᾱ_t x₀)/√(1−ᾱ_t).

Inputs at each timestep t of the sampler's grid (descending t_0 > t_1 > …):
* ``clean``:    x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε (the training input);
* ``one_step``: one sampler step (with the model, as in sampling) from the clean x at the previous grid time;
* ``sampled``:  the sampler run from x_{t_0} = q(x_{t_0} | x₀) down to t, carrying every earlier step's error.

**Variance error.** Drawing samples from pure noise, at each grid time: the per-pixel variance of the
sampled x_t across samples (averaged over pixels) divided by the same for the forward process q(x_t)
on test images, minus 1 — how far the sampled marginal's spread departs from the training marginal's.
"""
from __future__ import annotations

from typing import Optional

import torch

from benchmarks.exposure_bias.config import Cell
from training.diffusion import GaussianDiffusion
from training.samplers import SamplerConfig, make_scheduler, sample


@torch.no_grad()
def eps_effective(model, d: GaussianDiffusion, x: torch.Tensor, t: int, xi_denoise: bool) -> torch.Tensor:
    tt = torch.full((len(x),), int(t), dtype=torch.long, device=x.device)
    eps, xi = model(x, tt)
    x_clean = x - xi if (xi_denoise and xi is not None) else x
    return d.predict_eps_from_x0(x, tt, d.predict_x0_from_eps(x_clean, tt, eps))


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) ** 2).mean())


@torch.no_grad()
def step_errors(model, d: GaussianDiffusion, cell: Cell, x0: torch.Tensor, seed: int, device: str = "cpu",
                clip_sample: Optional[bool] = None) -> list[dict]:
    """Rows {kind, index, t, mse} for the clean / one_step / sampled inputs on ``cell``'s grid."""
    if isinstance(model, torch.nn.Module):
        model.eval()
    xi_denoise = bool(getattr(model, "has_xi", False))
    scheduler = make_scheduler(SamplerConfig(name=cell.sampler, num_steps=cell.steps, xi_denoise=xi_denoise,
                                             clip_sample=clip_sample), d)
    scheduler.set_timesteps(cell.steps)
    ts = [int(t) for t in scheduler.timesteps]
    gen = torch.Generator().manual_seed(seed)
    x0 = x0.to(device)
    noise = torch.randn(x0.shape, generator=gen).to(device)

    def model_step(x: torch.Tensor, t: int) -> torch.Tensor:
        eps, xi = model(x, torch.full((len(x),), t, dtype=torch.long, device=x.device))
        if xi_denoise and xi is not None:
            x = x - xi
        return scheduler.step(eps, t, x, generator=gen).prev_sample

    rows = []
    x = d.q_sample(x0, ts[0], noise)
    for i, t in enumerate(ts):
        truth = d.predict_eps_from_x0(x, t, x0)
        rows.append({"kind": "sampled", "index": i, "t": t, "mse": _mse(eps_effective(model, d, x, t, xi_denoise), truth)})
        clean = d.q_sample(x0, t, noise)
        rows.append({"kind": "clean", "index": i, "t": t, "mse": _mse(eps_effective(model, d, clean, t, xi_denoise), noise)})
        if i > 0:
            one = model_step(d.q_sample(x0, ts[i - 1], noise), ts[i - 1])
            rows.append({"kind": "one_step", "index": i, "t": t,
                         "mse": _mse(eps_effective(model, d, one, t, xi_denoise), d.predict_eps_from_x0(one, t, x0))})
        x = model_step(x, t)
    return rows


@torch.no_grad()
def variance_error(model, d: GaussianDiffusion, cell: Cell, test_images: torch.Tensor, n: int, seed: int,
                   device: str = "cpu", clip_sample: Optional[bool] = None) -> list[dict]:
    """Rows {index, t, var_sampled, var_forward, variance_error} along ``cell``'s grid (t = −1: the output x₀)."""
    if isinstance(model, torch.nn.Module):
        model.eval()
    xi_denoise = bool(getattr(model, "has_xi", False))
    cfg = SamplerConfig(name=cell.sampler, num_steps=cell.steps, xi_denoise=xi_denoise, clip_sample=clip_sample)
    scheduler = make_scheduler(cfg, d)
    scheduler.set_timesteps(cell.steps)
    ts = [int(t) for t in scheduler.timesteps] + [-1]
    _, traj = sample(model, d, cfg, (n, *test_images.shape[1:]), seed=seed, return_trajectory=True,
                     device=device)
    gen = torch.Generator().manual_seed(seed + 1)
    rows = []
    for i, t in enumerate(ts):
        x_s = traj[i].float().cpu()
        x_q = test_images if t < 0 else d.q_sample(test_images, t, torch.randn(test_images.shape, generator=gen))
        vs, vq = float(x_s.var(0).mean()), float(x_q.var(0).mean())
        rows.append({"index": i, "t": t, "var_sampled": vs, "var_forward": vq, "variance_error": vs / vq - 1.0})
    return rows
