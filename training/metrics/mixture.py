"""The exact-distance case: Gaussian mixtures whose density is known, so no feature network is needed.

A :class:`GaussianMixture` (equal weights, shared isotropic σ, any dimension D) gives samples and the
exact log-density. Two distances to it:

* :func:`sliced_wasserstein` — the sliced 2-Wasserstein distance between two sample sets (random unit
  directions; on each, the W2 distance of the sorted 1-D projections). ``mixture_distance`` compares
  generated samples with *fresh* true samples of the same size, so its value for true samples is the
  finite-sample floor (≈ 0, shrinking as 1/√n), and it grows with any shift or spread change.
* :meth:`GaussianMixture.nll` — mean negative log-likelihood of samples under the true density (exact;
  its floor is the mixture's entropy, which ``entropy_estimate`` gives by Monte Carlo).
"""
from __future__ import annotations

import math
from typing import Optional

import torch


class GaussianMixture:
    """p(x) = (1/K) Σ_k N(x; μ_k, σ² I), means (K, D)."""

    def __init__(self, means: torch.Tensor, std: float):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim != 2 or means.shape[0] < 1:
            raise ValueError(f"means must be (K, D) with K >= 1, got shape {tuple(means.shape)}")
        if not std > 0:
            raise ValueError(f"std must be positive, got {std}")
        self.means, self.std = means, float(std)

    @classmethod
    def ring(cls, num_modes: int = 8, radius: float = 2.0, std: float = 0.05) -> "GaussianMixture":
        """The classic 2-D benchmark: ``num_modes`` modes evenly spaced on a circle."""
        angle = torch.arange(num_modes, dtype=torch.float64) * (2 * math.pi / num_modes)
        return cls(torch.stack([radius * angle.cos(), radius * angle.sin()], 1), std)

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        comp = torch.randint(0, self.means.shape[0], (n,), generator=generator)
        return self.means[comp] + self.std * torch.randn(n, self.dim, generator=generator, dtype=torch.float64)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        x = self._check(x)
        sq = torch.cdist(x, self.means).pow(2)  # (N, K)
        log_norm = -0.5 * self.dim * math.log(2 * math.pi * self.std ** 2) - math.log(self.means.shape[0])
        return torch.logsumexp(-sq / (2 * self.std ** 2), dim=1) + log_norm

    def nll(self, x: torch.Tensor) -> float:
        """Mean −log p(x) (nats) of the samples ``x`` under the true density."""
        return float(-self.log_prob(x).mean())

    def entropy_estimate(self, n: int = 100_000, seed: int = 0) -> float:
        return self.nll(self.sample(n, torch.Generator().manual_seed(seed)))

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x).double().reshape(len(x), -1)
        if x.shape[1] != self.dim:
            raise ValueError(f"samples have dimension {x.shape[1]}, the mixture {self.dim}")
        return x


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, num_projections: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between sample sets x (N, D) and y (M, D).

    With N ≠ M the 1-D quantile functions are compared on a common grid of max(N, M) levels."""
    x, y = x.double().reshape(len(x), -1), y.double().reshape(len(y), -1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"dimension mismatch: {x.shape[1]} vs {y.shape[1]}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError("need at least 2 samples in each set")
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.randn(x.shape[1], num_projections, generator=gen, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    px, py = (x @ dirs).sort(0).values, (y @ dirs).sort(0).values
    if len(px) != len(py):
        levels = torch.linspace(0, 1, max(len(px), len(py)), dtype=torch.float64)
        px, py = _quantiles(px, levels), _quantiles(py, levels)
    return float((px - py).pow(2).mean().sqrt())


def _quantiles(sorted_proj: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    pos = levels * (len(sorted_proj) - 1)
    lo = pos.floor().long()
    hi = torch.clamp(lo + 1, max=len(sorted_proj) - 1)
    w = (pos - lo).unsqueeze(1)
    return sorted_proj[lo] * (1 - w) + sorted_proj[hi] * w


def mixture_distance(samples: torch.Tensor, mixture: GaussianMixture, seed: int = 0,
                     num_projections: int = 256, reference_size: int = 20_000) -> float:
    """Sliced W2 between ``samples`` and ``max(len(samples), reference_size)`` fresh true samples (drawn
    with ``seed``); a large reference keeps the floor down to the generated set's own sampling noise."""
    samples = mixture._check(samples)
    fresh = mixture.sample(max(len(samples), reference_size), torch.Generator().manual_seed(seed))
    return sliced_wasserstein(samples, fresh, num_projections, seed=seed + 1)
