"""Benchmark configuration: the two presets (``quick`` smoke test, ``full`` recorded run) and the method table."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
import torch

from training.diffusion import GaussianDiffusion
from training.metrics.mixture import GaussianMixture


@dataclass(frozen=True)
class Method:
    """One row of the method table: a fine-tuning strategy (None for ε-scaling, which reuses ``ddpm``)."""

    label: str
    strategy: Optional[dict]  # StrategyConfig fields
    oracle_rollout: bool = False  # chain-only control: the chain's model step uses the true ε
    eps_scale_search: bool = False  # ε-scaling: λ chosen on a held-out split, sampling the 'ddpm' fine-tune


def methods(k: int = 4) -> tuple[Method, ...]:
    sched = dict(prob_start=0.1, prob_max=0.9)
    return (
        Method("ddpm", dict(name="ddpm")),
        Method("ip", dict(name="ip", ip_gamma=0.1, prob_start=1.0, prob_max=1.0)),
        Method("ss", dict(name="ss", **sched)),
        Method("sdss_mean", dict(name="sdss", posterior="mean", **sched)),
        Method("sdss_sample", dict(name="sdss", posterior="sample", **sched)),
        Method(f"mdss_k{k}_mean", dict(name="mdss", k=k, posterior="mean", **sched)),
        Method(f"mdss_k{k}_sample", dict(name="mdss", k=k, posterior="sample", **sched)),
        Method(f"chain_only_k{k}", dict(name="mdss", k=k, posterior="mean", **sched), oracle_rollout=True),
        Method(f"mdss_ddim_k{k}", dict(name="mdss_ddim", k=k, **sched)),
        Method("eps_scale", None, eps_scale_search=True),
    )


@dataclass(frozen=True)
class BenchConfig:
    dims: tuple[int, ...] = (2, 16)
    seeds: tuple[int, ...] = tuple(range(10))
    num_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    # model
    hidden: int = 256
    depth: int = 3
    time_dim: int = 64
    # pretraining / fine-tuning
    batch_size: int = 512
    lr: float = 1e-3
    pretrain_steps: int = 20_000
    finetune_steps: int = 4_000
    finetune_lr: float = 2e-4
    loss_window: int = 200  # steps per recorded loss-curve point
    k: int = 4
    # evaluation
    samplers: tuple[str, ...] = ("ddpm", "ddim")
    steps: tuple[int, ...] = (5, 10, 20, 50, 100)
    num_eval: int = 10_000
    num_projections: int = 256
    reference_size: int = 20_000
    lambda_grid: tuple[float, ...] = (0.98, 0.99, 0.995, 1.0, 1.005, 1.01, 1.02)
    bootstrap: int = 2000
    threads: int = 1
    preset: str = "full"
    method_labels: tuple[str, ...] = field(default_factory=lambda: tuple(m.label for m in methods()))

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    def method_table(self) -> tuple[Method, ...]:
        return tuple(m for m in methods(self.k) if m.label in self.method_labels)

    def diffusion(self) -> GaussianDiffusion:
        return GaussianDiffusion.from_betas(np.linspace(self.beta_start, self.beta_end, self.num_timesteps,
                                                        dtype=np.float64))


def mixture_for(dim: int) -> GaussianMixture:
    """2-D: the 8-mode ring (radius 2, σ 0.05). Other D: 8 modes with fixed random means (seed 1234) at norm 2,
    σ 0.1 — fixed across training seeds so that seeds only vary the training."""
    if dim == 2:
        return GaussianMixture.ring(8, 2.0, 0.05)
    g = torch.Generator().manual_seed(1234)
    means = torch.randn(8, dim, generator=g, dtype=torch.float64)
    means = 2.0 * means / means.norm(dim=1, keepdim=True)
    return GaussianMixture(means, 0.1)


def quick() -> BenchConfig:
    """CI-sized smoke test: 2-D only, 2 seeds, a few hundred steps. Its numbers are not results."""
    return BenchConfig(dims=(2,), seeds=(0, 1), num_timesteps=100, beta_start=1e-4 * 10, beta_end=0.02 * 10,
                       hidden=128, depth=3, time_dim=32, batch_size=256, pretrain_steps=2500,
                       finetune_steps=60, loss_window=100, k=2, steps=(5, 20, 100), num_eval=1000, num_projections=64,
                       reference_size=4000, lambda_grid=(0.99, 1.0, 1.01), bootstrap=200, preset="quick",
                       method_labels=tuple(m.label for m in methods(2)))


def full() -> BenchConfig:
    return BenchConfig()


PRESETS = {"quick": quick, "full": full}


def check_schedule(cfg: BenchConfig) -> None:
    if max(cfg.steps) > cfg.num_timesteps:
        raise ValueError(f"steps {cfg.steps} exceed T={cfg.num_timesteps}")
