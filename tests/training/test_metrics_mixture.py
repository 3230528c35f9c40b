"""The exact-distance metric: ~0 for true samples, growing under a known shift or spread change."""
import math

import pytest
import torch

from training.metrics.mixture import GaussianMixture, mixture_distance, sliced_wasserstein


def test_true_samples_are_near_zero_and_shift_grows_monotonically():
    mix = GaussianMixture.ring(8, radius=2.0, std=0.05)
    true = mix.sample(2000, torch.Generator().manual_seed(1))
    floor = mixture_distance(true, mix, seed=7)
    shifted = [mixture_distance(true + torch.tensor([s, 0.0], dtype=torch.float64), mix, seed=7)
               for s in (0.3, 0.6, 1.0)]
    # the floor is the generated set's own sampling noise (mostly the multinomial mode counts)
    assert floor < 0.15
    assert floor < shifted[0] < shifted[1] < shifted[2]
    # a shift s along one axis projects onto a random unit direction u as s·u_x: SW2 ≈ s·√E[u_x²] = s/√2 in 2-D
    assert shifted[2] == pytest.approx(1.0 / math.sqrt(2), rel=0.15)


def test_spread_change_and_mode_dropping_are_detected():
    mix = GaussianMixture.ring(8, std=0.05)
    gen = torch.Generator().manual_seed(2)
    floor = mixture_distance(mix.sample(2000, gen), mix, seed=3)
    wide = GaussianMixture(mix.means, 0.5).sample(2000, gen)
    half_modes = GaussianMixture(mix.means[:4], 0.05).sample(2000, gen)
    assert mixture_distance(wide, mix, seed=3) > 2 * floor
    assert mixture_distance(half_modes, mix, seed=3) > 3 * floor


def test_exact_likelihood_matches_a_single_gaussian_and_penalises_shift():
    mix = GaussianMixture(torch.zeros(1, 3), std=0.5)
    x = torch.tensor([[0.1, -0.2, 0.3]], dtype=torch.float64)
    expected = -1.5 * math.log(2 * math.pi * 0.25) - (0.01 + 0.04 + 0.09) / (2 * 0.25)
    assert float(mix.log_prob(x)) == pytest.approx(expected, rel=1e-12)
    ring = GaussianMixture.ring(8)
    true = ring.sample(4000, torch.Generator().manual_seed(0))
    assert ring.nll(true) == pytest.approx(ring.entropy_estimate(20000, seed=5), abs=0.1)
    assert ring.nll(true + 0.1) > ring.nll(true) + 1.0


def test_unequal_sizes_and_bad_input():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(500, 4, generator=gen), torch.randn(800, 4, generator=gen)
    assert sliced_wasserstein(a, b) < 0.15
    with pytest.raises(ValueError, match="dimension"):
        sliced_wasserstein(a, torch.randn(10, 3))
    with pytest.raises(ValueError, match="dimension"):
        GaussianMixture.ring(4).nll(torch.randn(5, 3))
