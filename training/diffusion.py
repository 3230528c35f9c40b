"""Gaussian diffusion math, free of networks and training loops.

Conventions (diffusers'): timesteps are 0-indexed, t ∈ {0, …, T−1}; ᾱ_t = ∏_{i≤t} α_i with
α_i = 1 − β_i; ᾱ_{−1} := 1, so a step from t = 0 lands on the clean data x₀. Every array is
computed once, in float64, and named after its formula. Tensor methods gather the coefficients
for a batch of timesteps and cast them to the tensor's dtype.

Forward process:   x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε.
Posterior mean:    μ̃_t(x_t, x₀) = c1_t x₀ + c2_t x_t,  c1_t = √ᾱ_{t−1} β_t / (1−ᾱ_t),
                   c2_t = √α_t (1−ᾱ_{t−1}) / (1−ᾱ_t);   variance β̃_t = (1−ᾱ_{t−1}) β_t / (1−ᾱ_t).
One DDPM step (mean) with a noise estimate ε̂ is μ̃_t with x₀ replaced by x̂₀(x_t, ε̂); in ε form
                   (x_t − β_t/√(1−ᾱ_t) ε̂) / √α_t.  With the true ε it *is* μ̃_t(x_t, x₀).
One DDIM step (η = 0):  √ᾱ_{t−1} x̂₀ + √(1−ᾱ_{t−1}) ε̂.

k-step closed forms. The thesis' Eqs. 3.9–3.11 hold as printed (tests/training/test_diffusion_math.py
implements them literally: equal to these to 1e-12). Its misprints are elsewhere: Alg. 9 line 2 and Eq. A.1
write √α_{t+i−1} for √ᾱ_{t+i−1} in the x₀ coefficient, and Alg. 7 lines 9–10 and Table 3.1 write
√(ᾱ_t β_{t+1}) for Eq. 3.9's √ᾱ_t β_{t+1}; the chain below follows Eq. 3.9.
Chaining the posterior mean k times from t+k down to t with the true x₀ is affine:
    x_t = γ_t x_{t+k} + ω_t x₀,
    γ_t = ∏_{s=t+1}^{t+k} c2_s = √(ᾱ_{t+k}/ᾱ_t) · (1−ᾱ_t)/(1−ᾱ_{t+k})      (the product telescopes),
    ω_t = √ᾱ_t − γ_t √ᾱ_{t+k} = √ᾱ_t (1 − ᾱ_{t+k}/ᾱ_t) / (1−ᾱ_{t+k}),
the second because each step maps the signal part √ᾱ_s x₀ to √ᾱ_{s−1} x₀ (c1_s + c2_s √ᾱ_s = √ᾱ_{s−1}).
These are exactly the mean coefficients of the k-step posterior q(x_t | x_{t+k}, x₀), whose
variance is (1−ᾱ_t)(1 − ᾱ_{t+k}/ᾱ_t)/(1−ᾱ_{t+k}) (β̃_{t+1} for k = 1).
The DDIM chain with the true x₀ keeps the noise direction: x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε̄ with
ε̄ = (x_{t+k} − √ᾱ_{t+k} x₀)/√(1−ᾱ_{t+k}), i.e. γ_t = √((1−ᾱ_t)/(1−ᾱ_{t+k})), ω_t = √ᾱ_t − γ_t √ᾱ_{t+k}.

A posterior-*mean* chain shrinks the noise: after n mean steps from s₀ = t+n, the ε part of x_t
is ∏_{s=t+1}^{t+n} √(α_s(1−ᾱ_{s−1})/(1−ᾱ_s)) times what the forward marginal would have
(:meth:`GaussianDiffusion.posterior_mean_chain_noise_scale`).
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

import numpy as np
import torch

from training.schedules import ScheduleConfig, betas_from_config

__all__ = ["ScheduleConfig", "GaussianDiffusion", "StepKind"]

StepKind = Literal["ddpm", "ddim"]
TimestepLike = Union[int, torch.Tensor]


class GaussianDiffusion:
    """Schedule arrays (float64 numpy) and the forward/posterior/step formulas on torch tensors."""

    def __init__(self, betas: np.ndarray, scheduler_config: Optional[dict[str, Any]] = None):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size < 2:
            raise ValueError(f"betas must be a 1-D array with at least 2 entries, got shape {betas.shape}")
        if not np.all(np.isfinite(betas)) or np.any(betas <= 0.0) or np.any(betas >= 1.0):
            raise ValueError("betas must be finite and strictly inside (0, 1)")
        #: the diffusers scheduler config the betas came from, if any (samplers reuse its settings)
        self.scheduler_config = dict(scheduler_config) if scheduler_config is not None else None
        self.num_timesteps = int(betas.size)

        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(self.alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        # log ᾱ_t and 1 − ᾱ_t without cancellation (1 − ᾱ_0 = β_0 is ~1e-4: 1 − cumprod loses 4 digits)
        self.log_alphas_cumprod = np.cumsum(np.log1p(-betas))
        self.one_minus_alphas_cumprod = -np.expm1(self.log_alphas_cumprod)
        self.one_minus_alphas_cumprod_prev = np.append(0.0, self.one_minus_alphas_cumprod[:-1])
        self.sqrt_alphas = np.sqrt(self.alphas)
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_alphas_cumprod_prev = np.sqrt(self.alphas_cumprod_prev)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(self.one_minus_alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod_prev = np.sqrt(self.one_minus_alphas_cumprod_prev)
        self.sqrt_recip_alphas_cumprod = 1.0 / self.sqrt_alphas_cumprod
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(self.one_minus_alphas_cumprod / self.alphas_cumprod)
        # q(x_{t-1} | x_t, x_0)
        self.posterior_variance = betas * self.one_minus_alphas_cumprod_prev / self.one_minus_alphas_cumprod
        self.posterior_mean_coef1 = betas * self.sqrt_alphas_cumprod_prev / self.one_minus_alphas_cumprod
        self.posterior_mean_coef2 = self.one_minus_alphas_cumprod_prev * self.sqrt_alphas / self.one_minus_alphas_cumprod
        # one DDPM step (mean) in ε form: x_{t-1} = recip_sqrt_alphas * (x_t - betas_over_sqrt_one_minus_alphas_cumprod * ε̂)
        self.recip_sqrt_alphas = 1.0 / self.sqrt_alphas
        self.betas_over_sqrt_one_minus_alphas_cumprod = betas / self.sqrt_one_minus_alphas_cumprod
        # one DDIM step (η = 0): x_{t-1} = ddim_coef_x0 * x_0 + ddim_coef_xt * x_t  (x_0 form)
        self.ddim_coef_xt = self.sqrt_one_minus_alphas_cumprod_prev / self.sqrt_one_minus_alphas_cumprod
        self.ddim_coef_x0 = self.sqrt_alphas_cumprod_prev - self.ddim_coef_xt * self.sqrt_alphas_cumprod
        # ... and in ε form: x_{t-1} = ddim_eps_coef_xt * x_t + ddim_eps_coef_eps * ε̂
        self.ddim_eps_coef_xt = self.sqrt_alphas_cumprod_prev / self.sqrt_alphas_cumprod
        self.ddim_eps_coef_eps = (
            self.sqrt_one_minus_alphas_cumprod_prev - self.ddim_eps_coef_xt * self.sqrt_one_minus_alphas_cumprod
        )
        self._k_step_cache: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_betas(cls, betas: np.ndarray) -> "GaussianDiffusion":
        return cls(betas)

    @classmethod
    def from_config(cls, cfg: ScheduleConfig) -> "GaussianDiffusion":
        betas, sched = betas_from_config(cfg)
        return cls(betas, scheduler_config=sched)

    def to_diffusers_scheduler(self, name: str = "ddpm", **overrides: Any):
        """A diffusers scheduler with this schedule (its own config if it came from one, else trained_betas).

        ``name``: 'ddpm', 'ddim', 'dpm_multistep' or 'dpm_singlestep'; ``overrides`` go to the
        scheduler's constructor (e.g. clip_sample=False, solver_order=3).
        """
        import diffusers  # lazily: the math itself never needs diffusers

        classes = {
            "ddpm": diffusers.DDPMScheduler,
            "ddim": diffusers.DDIMScheduler,
            "dpm_multistep": diffusers.DPMSolverMultistepScheduler,
            "dpm_singlestep": diffusers.DPMSolverSinglestepScheduler,
        }
        if name not in classes:
            raise ValueError(f"unknown scheduler name {name!r}; choose from {sorted(classes)}")
        if self.scheduler_config is not None:
            return classes[name].from_config(self.scheduler_config, **overrides)
        kwargs: dict[str, Any] = dict(
            num_train_timesteps=self.num_timesteps, trained_betas=self.betas.tolist(), prediction_type="epsilon"
        )
        kwargs.update(overrides)
        return classes[name](**kwargs)

    # ------------------------------------------------------------------ helpers
    def _timesteps(self, t: TimestepLike, like: torch.Tensor, limit: Optional[int] = None) -> torch.Tensor:
        limit = self.num_timesteps if limit is None else limit
        if not torch.is_tensor(t):
            t = torch.full((like.shape[0],), int(t), dtype=torch.long, device=like.device)
        t = t.to(device=like.device, dtype=torch.long).reshape(-1)
        if t.numel() not in (1, like.shape[0]):
            raise ValueError(f"t has {t.numel()} entries for a batch of {like.shape[0]}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= limit):
            raise ValueError(f"timesteps must lie in [0, {limit - 1}], got [{int(t.min())}, {int(t.max())}]")
        return t

    def gather(self, arr: np.ndarray, t: TimestepLike, like: torch.Tensor) -> torch.Tensor:
        """``arr[t]`` as a tensor shaped (B, 1, 1, …) in ``like``'s dtype and device."""
        t = self._timesteps(t, like, limit=len(arr))
        vals = torch.tensor(arr, dtype=torch.float64, device=like.device)[t]  # copies (arr may be read-only)
        return vals.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))

    # ------------------------------------------------------------------ one-step formulas
    def q_sample(self, x0: torch.Tensor, t: TimestepLike, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε."""
        return self.gather(self.sqrt_alphas_cumprod, t, x0) * x0 + self.gather(
            self.sqrt_one_minus_alphas_cumprod, t, x0
        ) * noise

    def predict_x0_from_eps(self, x_t: torch.Tensor, t: TimestepLike, eps: torch.Tensor) -> torch.Tensor:
        """x̂₀ = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t."""
        return self.gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - self.gather(
            self.sqrt_recipm1_alphas_cumprod, t, x_t
        ) * eps

    def predict_eps_from_x0(self, x_t: torch.Tensor, t: TimestepLike, x0: torch.Tensor) -> torch.Tensor:
        """ε_t = (x_t − √ᾱ_t x₀) / √(1−ᾱ_t)  (thesis Eq. 3.4)."""
        return (x_t - self.gather(self.sqrt_alphas_cumprod, t, x_t) * x0) / self.gather(
            self.sqrt_one_minus_alphas_cumprod, t, x_t
        )

    def q_posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, t: TimestepLike) -> torch.Tensor:
        """μ̃_t(x_t, x₀) = c1_t x₀ + c2_t x_t: the mean of q(x_{t−1} | x_t, x₀)."""
        return self.gather(self.posterior_mean_coef1, t, x_t) * x0 + self.gather(
            self.posterior_mean_coef2, t, x_t
        ) * x_t

    def p_mean_from_eps(self, x_t: torch.Tensor, t: TimestepLike, eps: torch.Tensor) -> torch.Tensor:
        """One DDPM step without its noise term: (x_t − β_t/√(1−ᾱ_t) ε̂)/√α_t (= μ̃_t(x_t, x̂₀(ε̂)))."""
        return self.gather(self.recip_sqrt_alphas, t, x_t) * (
            x_t - self.gather(self.betas_over_sqrt_one_minus_alphas_cumprod, t, x_t) * eps
        )

    def ddim_step_from_eps(self, x_t: torch.Tensor, t: TimestepLike, eps: torch.Tensor) -> torch.Tensor:
        """One deterministic DDIM step t → t−1: √ᾱ_{t−1} x̂₀(ε̂) + √(1−ᾱ_{t−1}) ε̂."""
        return self.gather(self.ddim_eps_coef_xt, t, x_t) * x_t + self.gather(self.ddim_eps_coef_eps, t, x_t) * eps

    def ddim_step_from_x0(self, x0: torch.Tensor, x_t: torch.Tensor, t: TimestepLike) -> torch.Tensor:
        """The same DDIM step written with a given x₀ (the true one in the training chain)."""
        return self.gather(self.ddim_coef_x0, t, x_t) * x0 + self.gather(self.ddim_coef_xt, t, x_t) * x_t

    def step_from_eps(self, kind: StepKind, x_t: torch.Tensor, t: TimestepLike, eps: torch.Tensor) -> torch.Tensor:
        """One sampler step (mean, no fresh noise) of the given kind."""
        if kind == "ddpm":
            return self.p_mean_from_eps(x_t, t, eps)
        if kind == "ddim":
            return self.ddim_step_from_eps(x_t, t, eps)
        raise ValueError(f"unknown step kind {kind!r} (use 'ddpm' or 'ddim')")

    def step_from_x0(self, kind: StepKind, x0: torch.Tensor, x_t: torch.Tensor, t: TimestepLike) -> torch.Tensor:
        """One chain step with a known x₀: the posterior mean ('ddpm') or the DDIM step ('ddim')."""
        if kind == "ddpm":
            return self.q_posterior_mean(x0, x_t, t)
        if kind == "ddim":
            return self.ddim_step_from_x0(x0, x_t, t)
        raise ValueError(f"unknown step kind {kind!r} (use 'ddpm' or 'ddim')")

    # ------------------------------------------------------------------ k-step closed forms
    def _check_k(self, k: int) -> int:
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0 or k > self.num_timesteps - 1:
            raise ValueError(f"k must be an integer in [0, {self.num_timesteps - 1}], got {k!r}")
        return int(k)

    def k_step_coefficients(self, k: int, kind: StepKind = "ddpm") -> tuple[np.ndarray, np.ndarray]:
        """(γ, ω), float64 arrays of length T−k: x_t = γ[t] x_{t+k} + ω[t] x₀ for t ∈ [0, T−1−k].

        ``kind='ddpm'``: k posterior-mean steps (the MDSS chain); ``'ddim'``: k deterministic DDIM
        steps with the true x₀. k = 0 gives γ = 1, ω = 0.
        """
        k = self._check_k(k)
        key = (kind, k)
        if key not in self._k_step_cache:
            n = self.num_timesteps - k
            ratio, one_minus_ratio, om_t, om_tk = self._k_step_terms(k)
            if kind == "ddpm":
                gamma = np.sqrt(ratio) * om_t / om_tk
                omega = self.sqrt_alphas_cumprod[:n] * one_minus_ratio / om_tk
            elif kind == "ddim":
                gamma = np.sqrt(om_t / om_tk)
                omega = self.sqrt_alphas_cumprod[:n] - gamma * self.sqrt_alphas_cumprod[k:]
            else:
                raise ValueError(f"unknown step kind {kind!r} (use 'ddpm' or 'ddim')")
            if k == 0:  # exact identity, not 1 ± rounding
                gamma, omega = np.ones(n), np.zeros(n)
            gamma.setflags(write=False)
            omega.setflags(write=False)
            self._k_step_cache[key] = (gamma, omega)
        return self._k_step_cache[key]

    def _k_step_terms(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """ᾱ_{t+k}/ᾱ_t, 1 − ᾱ_{t+k}/ᾱ_t, 1 − ᾱ_t, 1 − ᾱ_{t+k} for t ∈ [0, T−1−k], without cancellation."""
        n = self.num_timesteps - k
        log_ratio = self.log_alphas_cumprod[k:] - self.log_alphas_cumprod[:n]
        return np.exp(log_ratio), -np.expm1(log_ratio), self.one_minus_alphas_cumprod[:n], self.one_minus_alphas_cumprod[k:]

    def k_step_posterior_variance(self, k: int) -> np.ndarray:
        """Var of q(x_t | x_{t+k}, x₀), length T−k: (1−ᾱ_t)(1−ᾱ_{t+k}/ᾱ_t)/(1−ᾱ_{t+k}); 0 for k = 0."""
        k = self._check_k(k)
        _, one_minus_ratio, om_t, om_tk = self._k_step_terms(k)
        return om_t * one_minus_ratio / om_tk

    def posterior_mean_chain_noise_scale(self, n_steps: int) -> np.ndarray:
        """Length T−n: the ε coefficient of x_t after n posterior-*mean* steps from a forward sample
        x_{t+n}, relative to the forward marginal's √(1−ᾱ_t). Equals
        ∏_{s=t+1}^{t+n} √(α_s(1−ᾱ_{s−1})/(1−ᾱ_s)) = √(ᾱ_{t+n}(1−ᾱ_t) / (ᾱ_t(1−ᾱ_{t+n}))) ≤ 1."""
        n = self._check_k(n_steps)
        ratio, _, om_t, om_tn = self._k_step_terms(n)
        return np.sqrt(ratio * om_t / om_tn)
