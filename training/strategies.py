"""Training strategies against exposure bias: DDPM, IP, SS, SDSS, MDSS and the DDIM-based SDSS/MDSS.

Every strategy computes ``loss = ‖ε_target − ε_θ(x_in, t)‖² + xi_weight·‖ξ_target − ξ_θ(x_in, t)‖²``
(mean over elements; the ξ term only for SDSS/MDSS). On each mini-batch (or each sample, with
``per_sample``) the strategy is used with the scheduled probability of thesis Appendix A.2,
p = min(prob_max, prob_start + step/total_steps); otherwise the sample is plain DDPM: clean input
x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε, target ε and ξ target 0.

* ``ddpm``  — always plain DDPM (scheduled_prob is 0).
* ``ip``    — Input Perturbation (Ning et al. 2023): input √ᾱ_t x₀ + √(1−ᾱ_t)(ε + γ ε′), target ε.
  The schedule applies to IP too (the paper perturbs every batch: set prob_start = prob_max = 1).
* ``ss``    — Scheduled Sampling (Deng et al.): input x̂_t = one model DDPM step from x_{t+1};
  target ε derived from the input, (x̂_t − √ᾱ_t x₀)/√(1−ᾱ_t) (thesis Table 3.1).
* ``sdss`` / ``mdss`` — thesis Alg. 7 with k = 0 / k (see :mod:`training.rollout`): input x̂_t,
  target ε_t = (x_t − √ᾱ_t x₀)/√(1−ᾱ_t) from the noise-free x_t, ξ target x̂_t − x_t.
* ``sdss_ddim`` / ``mdss_ddim`` — the same with the deterministic DDIM step in the chain (§3.3.4).

Random draws, in this order, all from ``generator``: B uniforms for the usage decision (drawn by
every strategy, DDPM included, so that strategies with p = 0 see the same t and ε as DDPM), B
uniforms for t if ``t`` is None, ε if ``noise`` is None, then strategy-specific noise.
"""
from __future__ import annotations

from typing import Any, Callable, Literal, Optional

import torch
from pydantic import Field, model_validator

from core.config import StrictModel
from training.diffusion import GaussianDiffusion
from training.rollout import RolloutChain, call_model, rand_with, randn_like_with

StrategyName = Literal["ddpm", "ip", "ss", "sdss", "mdss", "sdss_ddim", "mdss_ddim"]
_POSTERIOR_STRATEGIES = ("ss", "sdss", "mdss")


class StrategyConfig(StrictModel):
    """Which exposure-bias strategy to train with, and its parameters."""

    name: StrategyName = Field(
        "ddpm",
        description="ddpm (baseline), ip (input perturbation), ss (scheduled sampling), sdss, mdss "
        "(multi-step denoising scheduled sampling), sdss_ddim / mdss_ddim (the DDIM-step variants).",
    )
    k: int = Field(
        4, ge=0, description="MDSS accumulation depth k (posterior steps after the model step); mdss/mdss_ddim only, "
        "sdss* use k = 0. Must be <= T-2."
    )
    ip_gamma: float = Field(0.1, ge=0.0, description="IP perturbation scale γ (input noise ε + γ·ε′); ip only.")
    prob_start: float = Field(
        0.1, ge=0.0, le=1.0, description="Scheduled probability of using the strategy at step 0 (Appendix A.2)."
    )
    prob_max: float = Field(
        0.9, ge=0.0, le=1.0, description="Cap of the scheduled probability: p = min(prob_max, prob_start + step/total)."
    )
    per_sample: bool = Field(
        False, description="Decide strategy-vs-DDPM per sample instead of per mini-batch (the thesis' default)."
    )
    posterior: Literal["mean", "sample"] = Field(
        "mean",
        description="How SS/SDSS/MDSS carry x_t down: 'mean' = the posterior mean as printed in the thesis "
        "(shrinks the noise in x_t below the forward marginal's); 'sample' = add the same fresh posterior "
        "noise to both chains (x_t then follows the forward marginal; ξ_t unchanged). DDPM chains only.",
    )
    xi_weight: float = Field(1.0, ge=0.0, description="Weight of the ξ loss term (sdss/mdss variants).")

    @model_validator(mode="after")
    def _check(self) -> "StrategyConfig":
        if self.posterior == "sample" and self.name not in _POSTERIOR_STRATEGIES:
            raise ValueError(
                f"posterior='sample' applies to {list(_POSTERIOR_STRATEGIES)} only, not {self.name!r} "
                "(the DDIM chain is deterministic; ddpm/ip have no chain)"
            )
        return self


def _mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.mean((pred.float() - target.float()) ** 2)


def _subset_kwargs(kw: dict[str, Any], idx: torch.Tensor, batch: int) -> dict[str, Any]:
    """Select the samples ``idx`` from every tensor whose first dimension is the batch (recursing into dicts)."""

    def pick(v: Any) -> Any:
        if torch.is_tensor(v) and v.ndim > 0 and v.shape[0] == batch:
            return v[idx]
        if isinstance(v, dict):
            return {k: pick(x) for k, x in v.items()}
        return v

    return {k: pick(v) for k, v in kw.items()}


class Strategy:
    """Base: the scheduled mix of plain DDPM and a strategy-specific input/target construction."""

    uses_xi: bool = False

    def __init__(self, cfg: StrategyConfig, diffusion: GaussianDiffusion):
        self.cfg, self.diffusion = cfg, diffusion
        self.name = cfg.name

    # -- what subclasses define ------------------------------------------------------------
    @property
    def max_strategy_t(self) -> int:
        """Largest t drawn for strategy samples when the strategy samples t itself."""
        return self.diffusion.num_timesteps - 1

    def applicable(self, t: torch.Tensor) -> torch.Tensor:
        """Which given timesteps can use the strategy (the others fall back to plain DDPM)."""
        return torch.ones_like(t, dtype=torch.bool)

    def perturb(
        self, model: Callable, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
        model_kwargs: dict[str, Any], generator: Optional[torch.Generator],
    ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """(input, ε target, ξ target or None) for the samples that use the strategy."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------
    def scheduled_prob(self, step: int, total_steps: int) -> float:
        """p = min(prob_max, prob_start + step/total_steps) (thesis Eq. A.2)."""
        if total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return float(min(self.cfg.prob_max, self.cfg.prob_start + step / total_steps))

    def training_losses(
        self,
        model: Callable,
        x0: torch.Tensor,
        t: Optional[torch.Tensor] = None,
        *,
        step: int,
        total_steps: int,
        noise: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
        model_kwargs: Optional[dict[str, Any]] = None,
        rollout_model: Optional[Callable] = None,
        return_targets: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Loss terms for one batch ``x0`` (B, C, …).

        ``model(x, t, **model_kwargs)`` must return ``(eps, xi)`` (xi None without a ξ head).
        ``rollout_model`` (default ``model``) makes the no-grad one-step prediction of SS/SDSS/MDSS,
        e.g. the unwrapped module under DDP or an EMA copy. In per-sample mode, tensors in
        ``model_kwargs`` whose first dimension is B are subset along with the batch.
        Returns scalars "loss" (to backprop), "eps_loss", "xi_loss", "strategy_frac"; with
        ``return_targets`` also detached "t", "use", "x_in", "eps_target", "xi_target".
        """
        d = self.diffusion
        B, device = x0.shape[0], x0.device
        kw = dict(model_kwargs or {})
        p = self.scheduled_prob(step, total_steps)
        u = rand_with(B, generator, device)
        use = (u < p) if self.cfg.per_sample else (u[:1] < p).expand(B)
        if t is None:
            high = torch.where(use, self.max_strategy_t + 1, d.num_timesteps).to(torch.float32)
            t = (rand_with(B, generator, device) * high).floor().long()
            t = torch.minimum(t, high.long() - 1)
        else:
            t = d._timesteps(t, x0).expand(B)
            use = use & self.applicable(t)
        if noise is None:
            noise = randn_like_with(x0, generator)
        elif noise.shape != x0.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}, expected x0's {tuple(x0.shape)}")

        x_in = d.q_sample(x0, t, noise)
        eps_target = noise
        xi_target = torch.zeros_like(x0) if self.uses_xi else None
        idx = use.nonzero().squeeze(1)
        if idx.numel() == B:
            x_in, eps_target, xi_s = self.perturb(rollout_model or model, x0, t, noise, kw, generator)
            if self.uses_xi:
                xi_target = xi_s
        elif idx.numel() > 0:
            x_s, eps_s, xi_s = self.perturb(
                rollout_model or model, x0[idx], t[idx], noise[idx], _subset_kwargs(kw, idx, B), generator
            )
            x_in, eps_target = x_in.index_copy(0, idx, x_s), eps_target.index_copy(0, idx, eps_s)
            if self.uses_xi:
                xi_target = xi_target.index_copy(0, idx, xi_s)

        eps_pred, xi_pred = call_model(model, x_in.detach(), t, kw)
        eps_loss = _mse(eps_pred, eps_target.detach())
        if self.uses_xi:
            if xi_pred is None:
                raise ValueError(
                    f"strategy {self.name!r} trains the ξ head but the model returned xi=None; "
                    "wrap the UNet with XiUNet.from_unet(unet, widen=True)"
                )
            xi_loss = _mse(xi_pred, xi_target.detach())
            loss = eps_loss + self.cfg.xi_weight * xi_loss
        else:
            xi_loss = eps_loss.new_zeros(())
            loss = eps_loss
        out = {"loss": loss, "eps_loss": eps_loss, "xi_loss": xi_loss, "strategy_frac": use.float().mean()}
        if return_targets:
            out.update(
                t=t, use=use, x_in=x_in.detach(), eps_target=eps_target.detach(),
                xi_target=(xi_target.detach() if xi_target is not None else torch.zeros_like(x0)),
            )
        return out


class DDPMStrategy(Strategy):
    """Plain DDPM training (L_simple): never uses a strategy."""

    def scheduled_prob(self, step: int, total_steps: int) -> float:
        super().scheduled_prob(step, total_steps)  # same argument checks
        return 0.0

    def perturb(self, model, x0, t, noise, model_kwargs, generator):  # pragma: no cover - p is always 0
        raise AssertionError("DDPMStrategy never perturbs")


class InputPerturbation(Strategy):
    """IP: x̂_t = √ᾱ_t x₀ + √(1−ᾱ_t)(ε + γ ε′), target ε."""

    def perturb(self, model, x0, t, noise, model_kwargs, generator):
        extra = randn_like_with(x0, generator)
        return self.diffusion.q_sample(x0, t, noise + self.cfg.ip_gamma * extra), noise, None


class _ChainStrategy(Strategy):
    """Strategies whose input is rolled by the model from a higher timestep (SS, SDSS, MDSS)."""

    def __init__(self, cfg: StrategyConfig, diffusion: GaussianDiffusion, k: int, kind: str):
        super().__init__(cfg, diffusion)
        self.k, self.kind = k, kind
        self.chain = RolloutChain(diffusion, k, kind, cfg.posterior)

    @property
    def max_strategy_t(self) -> int:
        return self.chain.max_t_full_depth

    def applicable(self, t: torch.Tensor) -> torch.Tensor:
        return t <= self.chain.max_t


class ScheduledSampling(_ChainStrategy):
    """SS: input = one model step from x_{t+1}; target ε derived from that input."""

    def perturb(self, model, x0, t, noise, model_kwargs, generator):
        x_hat, _ = self.chain.run(model, x0, t, noise, model_kwargs, generator)
        return x_hat, self.diffusion.predict_eps_from_x0(x_hat, t, x0), None


class DenoisingScheduledSampling(_ChainStrategy):
    """SDSS (k = 0) and MDSS (k > 0): input x̂_t, targets ε_t from the noise-free x_t and ξ_t = x̂_t − x_t."""

    uses_xi = True

    def perturb(self, model, x0, t, noise, model_kwargs, generator):
        x_hat, x_true = self.chain.run(model, x0, t, noise, model_kwargs, generator)
        return x_hat, self.diffusion.predict_eps_from_x0(x_true, t, x0), x_hat - x_true


def build_strategy(cfg: StrategyConfig, diffusion: GaussianDiffusion) -> Strategy:
    """The strategy named by ``cfg`` over ``diffusion``'s schedule."""
    if cfg.name == "ddpm":
        return DDPMStrategy(cfg, diffusion)
    if cfg.name == "ip":
        return InputPerturbation(cfg, diffusion)
    if cfg.name == "ss":
        return ScheduledSampling(cfg, diffusion, k=0, kind="ddpm")
    kind = "ddim" if cfg.name.endswith("_ddim") else "ddpm"
    k = cfg.k if cfg.name.startswith("mdss") else 0
    if k > diffusion.num_timesteps - 2:
        raise ValueError(f"strategy.k={k} is too large for T={diffusion.num_timesteps} (max T-2)")
    return DenoisingScheduledSampling(cfg, diffusion, k=k, kind=kind)
