"""Samplers: diffusers' DDPM, DDIM and DPM-Solver-1/2/3 schedulers, with optional ξ-denoising.

Each step: ``eps, xi = model(x_t, t)``; with ξ-denoising the input is cleaned first,
x̃_t = x_t − ξ_θ(x_t, t), and the scheduler steps from it: ``scheduler.step(ε_θ/λ, t, x̃_t)``,
where λ = ``eps_scale`` is the ε-scaling of Ning et al. 2024 ("Elucidating the exposure bias in
diffusion models": ε_θ/λ with λ slightly above 1; λ = 1 is off). With ``xi_denoise=False`` and
λ = 1 the loop is exactly the plain diffusers loop (initial noise ``torch.randn(shape,
generator)``, then ``scheduler.step(model(x, t), t, x, generator=…)``), bit for bit.

DPM-Solver-k (k = 1, 2, 3) uses ``DPMSolverMultistepScheduler(solver_order=k)`` by default, or
the single-step solver of the DPM-Solver paper (thesis Alg. 4–6) with ``dpm_singlestep``.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import numpy as np
import torch
from pydantic import Field, model_validator

from core.config import StrictModel
from training.diffusion import GaussianDiffusion
from training.schedules import load_scheduler_config

SamplerName = Literal["ddpm", "ddim", "dpm1", "dpm2", "dpm3"]
ScheduleSource = Union[GaussianDiffusion, dict, str, Path]


class SamplerConfig(StrictModel):
    """How to sample from a trained ε (and ξ) model."""

    name: SamplerName = Field("ddim", description="ddpm, ddim, or dpm1/dpm2/dpm3 (DPM-Solver of order 1/2/3).")
    num_steps: int = Field(50, ge=1, description="Number of sampling steps (model evaluations for all but dpm singlestep).")
    xi_denoise: bool = Field(True, description="Subtract the model's ξ prediction from x_t before each step.")
    eps_scale: float = Field(
        1.0, gt=0.0, description="λ of ε-scaling (Ning et al. 2024): the scheduler gets ε_θ/λ. 1.0 = off."
    )
    eta: float = Field(0.0, ge=0.0, description="DDIM η (0 = deterministic DDIM); ddim only.")
    clip_sample: Optional[bool] = Field(
        None, description="Clip the predicted x₀ to [-1, 1] in DDPM/DDIM steps; None = the scheduler's "
        "own setting (diffusers' default True, or the loaded scheduler config's). ddpm/ddim only."
    )
    timestep_spacing: Optional[Literal["linspace", "leading", "trailing"]] = Field(
        None, description="How inference timesteps are spaced; None = the scheduler's default/config."
    )
    dpm_algorithm_type: Literal["dpmsolver", "dpmsolver++"] = Field(
        "dpmsolver++", description="DPM-Solver formulation: 'dpmsolver++' (data prediction; diffusers' default) or "
        "'dpmsolver' (noise prediction, the thesis' Alg. 4-6; deprecated in diffusers, and run with "
        "final_sigmas_type='sigma_min' there). Order 1 is DDIM in both. dpm* only."
    )
    dpm_singlestep: bool = Field(
        False, description="Use DPMSolverSinglestepScheduler (the DPM-Solver paper's k-stage steps) instead of "
        "the multistep solver. dpm* only."
    )

    @model_validator(mode="after")
    def _check(self) -> "SamplerConfig":
        if self.eta != 0.0 and self.name != "ddim":
            raise ValueError(f"eta applies to the ddim sampler only, not {self.name!r}")
        if self.clip_sample is not None and self.name not in ("ddpm", "ddim"):
            raise ValueError(f"clip_sample applies to ddpm/ddim only, not {self.name!r}")
        return self


def _scheduler_source(source: ScheduleSource) -> tuple[Optional[GaussianDiffusion], Optional[dict]]:
    if isinstance(source, GaussianDiffusion):
        return source, source.scheduler_config
    if isinstance(source, dict):
        return None, source
    if isinstance(source, (str, Path)):
        return None, load_scheduler_config(source)
    raise TypeError(
        f"expected a GaussianDiffusion, a scheduler config dict or a path to one, got {type(source).__name__}"
    )


def make_scheduler(cfg: SamplerConfig, diffusion: ScheduleSource):
    """The diffusers scheduler for ``cfg`` with ``diffusion``'s schedule.

    A GaussianDiffusion built from a diffusers scheduler config (or a config dict/path given
    directly) reuses that config (steps_offset, set_alpha_to_one, …); otherwise the scheduler gets
    the diffusion's betas as ``trained_betas``. ε-prediction only; a learned variance type is
    replaced by 'fixed_small' (the ξ model returns ε only), with a warning.
    """
    import diffusers

    gd, config = _scheduler_source(diffusion)
    if cfg.name == "ddpm":
        cls = diffusers.DDPMScheduler
    elif cfg.name == "ddim":
        cls = diffusers.DDIMScheduler
    else:
        cls = diffusers.DPMSolverSinglestepScheduler if cfg.dpm_singlestep else diffusers.DPMSolverMultistepScheduler
    overrides: dict[str, Any] = {}
    if cfg.name.startswith("dpm"):
        overrides.update(solver_order=int(cfg.name[-1]), algorithm_type=cfg.dpm_algorithm_type)
        if cfg.dpm_algorithm_type == "dpmsolver":  # diffusers refuses final_sigmas_type='zero' for it
            overrides["final_sigmas_type"] = "sigma_min"
    if cfg.clip_sample is not None:
        overrides["clip_sample"] = cfg.clip_sample
    if cfg.timestep_spacing is not None:
        overrides["timestep_spacing"] = cfg.timestep_spacing
    if config is not None:
        prediction_type = config.get("prediction_type", "epsilon")
        if prediction_type != "epsilon":
            raise ValueError(f"scheduler config has prediction_type={prediction_type!r}; only 'epsilon' is supported")
        variance_type = config.get("variance_type")
        if cfg.name == "ddpm" and variance_type in ("learned", "learned_range"):
            warnings.warn(f"variance_type={variance_type!r} replaced by 'fixed_small': the model returns ε only")
            overrides["variance_type"] = "fixed_small"
        return cls.from_config(config, **overrides)
    assert gd is not None
    return cls(num_train_timesteps=gd.num_timesteps, trained_betas=gd.betas.tolist(),
               prediction_type="epsilon", **overrides)


def _step_kwargs(cfg: SamplerConfig, generator: torch.Generator) -> dict[str, Any]:
    if cfg.name == "ddim":
        return {"eta": cfg.eta, "generator": generator}
    return {"generator": generator}


@torch.no_grad()
def sample(
    model: Callable,
    diffusion_or_scheduler_config: ScheduleSource,
    cfg: SamplerConfig,
    shape: tuple[int, ...],
    *,
    seed: int,
    device: Union[str, torch.device] = "cpu",
    model_kwargs: Optional[dict[str, Any]] = None,
    return_trajectory: bool = False,
    clamp: bool = True,
    dtype: torch.dtype = torch.float32,
):
    """Generate a batch of shape ``shape`` = (B, C, H, W) from ``model(x, t, **kw) -> (eps, xi)``.

    Returns x₀ clamped to [-1, 1] (``clamp=False`` for latents), or ``(x0, trajectory)`` with the
    trajectory stacked as (steps+1, B, C, H, W) (x_T first; before clamping) when ``return_trajectory``.
    """
    scheduler = make_scheduler(cfg, diffusion_or_scheduler_config)
    scheduler.set_timesteps(cfg.num_steps, device=device)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    kw = model_kwargs or {}
    x = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    x = x * scheduler.init_noise_sigma
    trajectory = [x] if return_trajectory else None
    step_kwargs = _step_kwargs(cfg, generator)
    for t in scheduler.timesteps:
        x_model = scheduler.scale_model_input(x, t)
        eps, xi = model(x_model, t.expand(shape[0]), **kw)
        if cfg.xi_denoise:
            if xi is None:
                raise ValueError("xi_denoise=True but the model has no ξ head (it returned xi=None); "
                                 "set xi_denoise=False")
            x = x - xi.to(x.dtype)
        eps = eps.to(x.dtype)
        if cfg.eps_scale != 1.0:
            eps = eps / cfg.eps_scale
        x = scheduler.step(eps, t, x, **step_kwargs).prev_sample
        if trajectory is not None:
            trajectory.append(x)
    out = x.clamp(-1.0, 1.0) if clamp else x
    if return_trajectory:
        return out, torch.stack(trajectory)
    return out


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] → uint8 (B, H, W, C), rounded as diffusers' pipelines do."""
    if x.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    arr = (x.detach().float() / 2 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).numpy()
    return (arr * 255).round().astype(np.uint8)


def save_images(x: Union[torch.Tensor, np.ndarray], folder: Union[str, Path], *, start_index: int = 0,
                prefix: str = "") -> list[Path]:
    """Write each image as ``{prefix}{index:06d}.png``; ``x`` is a [-1, 1] tensor or uint8 (B, H, W, C)."""
    from PIL import Image

    arr = to_uint8(x) if torch.is_tensor(x) else np.asarray(x)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"expected uint8 (B, H, W, 1|3) images, got {arr.dtype} {arr.shape}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(arr):
        p = out / f"{prefix}{start_index + i:06d}.png"
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(p)
        paths.append(p)
    return paths


def generate(
    model: Callable,
    diffusion_or_scheduler_config: ScheduleSource,
    cfg: SamplerConfig,
    num_images: int,
    image_shape: tuple[int, ...],
    *,
    seed: int,
    batch_size: int = 64,
    device: Union[str, torch.device] = "cpu",
    out_dir: Optional[Union[str, Path]] = None,
    model_kwargs: Optional[dict[str, Any]] = None,
) -> np.ndarray:
    """Generate ``num_images`` (C, H, W) images in batches; batch b is seeded with ``seed + b``.

    Returns uint8 (N, H, W, C); with ``out_dir`` also writes 000000.png, 000001.png, ….
    Tensors in ``model_kwargs`` whose first dimension is ``batch_size`` are cut to a short last batch.
    """
    if num_images < 1 or batch_size < 1:
        raise ValueError(f"num_images and batch_size must be >= 1, got {num_images}, {batch_size}")
    chunks = []
    for b, start in enumerate(range(0, num_images, batch_size)):
        n = min(batch_size, num_images - start)
        kw = {k: (v[:n] if torch.is_tensor(v) and v.ndim and v.shape[0] == batch_size else v)
              for k, v in (model_kwargs or {}).items()}
        x = sample(model, diffusion_or_scheduler_config, cfg, (n, *image_shape), seed=seed + b, device=device,
                   model_kwargs=kw)
        imgs = to_uint8(x)
        if out_dir is not None:
            save_images(imgs, out_dir, start_index=start)
        chunks.append(imgs)
    return np.concatenate(chunks)
