"""Pretraining (plain DDPM, to convergence, with its loss curve) and per-method fine-tuning.

Pretraining decays the learning rate (cosine, to 1% of ``lr``) so that "trained to convergence" is reachable
in a fixed step budget; fine-tuning uses a constant, smaller rate. Both go through :func:`training.strategies.build_strategy`'s ``training_losses``, fresh data from the exact
mixture every step, one seeded generator per unit (CPU, float32 model, float64 schedule).
"""
from __future__ import annotations

import copy
import numpy as np
import torch

from benchmarks.mixture_bias.config import BenchConfig, Method
from benchmarks.mixture_bias.model import MLPDenoiser, oracle_rollout
from training.diffusion import GaussianDiffusion
from training.metrics.mixture import GaussianMixture
from training.strategies import StrategyConfig, build_strategy


def _loop(model: MLPDenoiser, strategy, mixture: GaussianMixture, steps: int, lr: float, cfg: BenchConfig,
          gen: torch.Generator, rollout=None, oracle: bool = False, cosine: bool = False) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.01) if cosine else None
    curve, acc = [], []
    model.train()
    for step in range(steps):
        x0 = mixture.sample(cfg.batch_size, gen).float()
        kw = {"oracle_x0": x0} if oracle else None
        out = strategy.training_losses(model, x0, step=step, total_steps=steps, generator=gen,
                                       model_kwargs=kw, rollout_model=rollout)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        if sched is not None:
            sched.step()
        acc.append(float(out["eps_loss"].detach()))
        if len(acc) == cfg.loss_window:
            curve.append(float(np.mean(acc)))
            acc = []
    if acc:
        curve.append(float(np.mean(acc)))
    return curve


def convergence(curve: list[float]) -> dict:
    """Relative improvement of the windowed ε loss over the last quarter of training (< 5% = converged)."""
    q = max(1, len(curve) // 4)
    # the windows are already means over ``loss_window`` steps; average a further quarter of the tail at each end
    tail = curve[-q:]
    m = max(1, len(tail) // 4)
    first, last = float(np.mean(tail[:m])), float(np.mean(tail[-m:]))
    rel = (first - last) / first if first > 0 else 0.0
    return {"last_quarter_first": first, "last_quarter_last": last, "last_quarter_rel_improvement": rel,
            "converged": bool(rel < 0.05)}


def pretrain(cfg: BenchConfig, dim: int, seed: int, mixture: GaussianMixture,
             diffusion: GaussianDiffusion) -> tuple[MLPDenoiser, dict]:
    torch.manual_seed(seed)
    model = MLPDenoiser(dim, cfg.hidden, cfg.depth, cfg.time_dim)
    gen = torch.Generator().manual_seed(10_000 * dim + seed)
    strategy = build_strategy(StrategyConfig(name="ddpm"), diffusion)
    curve = _loop(model, strategy, mixture, cfg.pretrain_steps, cfg.lr, cfg, gen, cosine=True)
    return model, {"loss_curve": curve, "loss_window": cfg.loss_window, **convergence(curve)}


def finetune(cfg: BenchConfig, method: Method, base: MLPDenoiser, dim: int, seed: int, mixture: GaussianMixture,
             diffusion: GaussianDiffusion) -> tuple[MLPDenoiser, dict]:
    if method.strategy is None:
        raise ValueError(f"{method.label} has no fine-tune of its own")
    scfg = StrategyConfig(**method.strategy)
    strategy = build_strategy(scfg, diffusion)
    model = copy.deepcopy(base)
    if strategy.uses_xi:
        torch.manual_seed(seed)
        model.add_xi_head()
    # same data/t/ε stream for every method of a seed (paired comparison)
    gen = torch.Generator().manual_seed(20_000 * dim + seed)
    rollout = oracle_rollout(diffusion) if method.oracle_rollout else None
    curve = _loop(model, strategy, mixture, cfg.finetune_steps, cfg.finetune_lr, cfg, gen, rollout=rollout,
                  oracle=method.oracle_rollout)
    return model, {"loss_curve": curve, "uses_xi": strategy.uses_xi}


def build_model(cfg: BenchConfig, dim: int, xi_head: bool) -> MLPDenoiser:
    return MLPDenoiser(dim, cfg.hidden, cfg.depth, cfg.time_dim, xi_head=xi_head)


def load_model(cfg: BenchConfig, dim: int, state: dict) -> MLPDenoiser:
    model = build_model(cfg, dim, xi_head=any(k.startswith("xi_out") for k in state))
    model.load_state_dict(state)
    return model.eval()

