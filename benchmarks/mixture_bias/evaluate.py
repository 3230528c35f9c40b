"""Exact metrics of one sample set (training/metrics/mixture.py) and the true-sample floors.

Test metrics use the reference seed ``TEST_REF``; the ε-scaling λ search uses a disjoint held-out split
(other sampling seeds and reference seed ``HELDOUT_REF``), so λ is never chosen on the numbers it is judged by.
"""
from __future__ import annotations

import math

import torch

from training.metrics.mixture import GaussianMixture, mixture_distance

TEST_REF, HELDOUT_REF = 7_001, 7_002


def metrics(samples: torch.Tensor, mixture: GaussianMixture, *, ref_seed: int, num_projections: int,
            reference_size: int) -> dict:
    finite = bool(torch.isfinite(samples).all())
    if not finite:
        return {"nll": math.inf, "sw2": math.inf, "finite": False}
    return {"nll": mixture.nll(samples),
            "sw2": mixture_distance(samples, mixture, seed=ref_seed, num_projections=num_projections,
                                    reference_size=reference_size),
            "finite": True}


def floors(mixture: GaussianMixture, n: int, *, num_projections: int, reference_size: int, draws: int = 5,
           seed: int = 99) -> dict:
    """What true samples of the same size score against the same test reference: the NLL floor (≈ entropy) and
    the finite-sample sliced-W2 floor, over ``draws`` independent true sample sets (the W2 floor is noisy: with
    few samples it is dominated by the random mode proportions)."""
    runs = [metrics(mixture.sample(n, torch.Generator().manual_seed(seed + i)), mixture, ref_seed=TEST_REF,
                    num_projections=num_projections, reference_size=reference_size) for i in range(draws)]
    sw = [r["sw2"] for r in runs]
    nll = [r["nll"] for r in runs]
    return {"nll": sum(nll) / draws, "sw2": sum(sw) / draws, "sw2_draws": sw, "sw2_max": max(sw), "nll_draws": nll,
            "entropy_mc": mixture.entropy_estimate(n=max(n, 50_000))}
