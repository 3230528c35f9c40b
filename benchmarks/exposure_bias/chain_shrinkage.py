"""How much the SS/SDSS/MDSS chain's noise-free input x_t under-states the forward marginal's noise.

    python -m benchmarks.exposure_bias.chain_shrinkage [--out docs/exposure_bias/chain_shrinkage.csv]

With ``posterior: mean`` the chain's x_t (training/rollout.py, the true ε in place of the model's) is
γ_t·μ̃ + ω_t·x₀, whose ε part is s_t·√(1−ᾱ_t)·ε with s_t ≤ 1, while q(x_t | x₀) has √(1−ᾱ_t)·ε.
Measured here by running ``RolloutChain`` with x₀ = 0 and ε = 1 (so x_t is the ε coefficient) on the
exposure-bias benchmark's schedule (linear, T = 1000). ``posterior: sample`` adds fresh noise so the
total noise matches the forward marginal (printed as a check: its noise std / √(1−ᾱ_t) must be 1).
Prints s averaged over the t each strategy trains on (uniform on [0, T−2−k]) and at a few t.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch

from training.build import build_diffusion
from training.rollout import RolloutChain
from training.schedules import ScheduleConfig

CHAINS = (("ss/sdss", 0), ("mdss k=4", 4), ("mdss k=10", 10))
SHOWN_T = (10, 50, 100, 500, 900)


def shrinkage(diffusion, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(s_t for t = 0..T−2−k under posterior 'mean', total noise ratio under 'sample')."""
    T = diffusion.num_timesteps
    t = torch.arange(T - 1 - k)
    x0 = torch.zeros(len(t), 1, dtype=torch.float64)
    eps = torch.ones_like(x0)
    oracle = lambda x, tt: (eps, None)  # noqa: E731 - the chain-only control: the true ε
    _, x_t = RolloutChain(diffusion, k, "ddpm", "mean").run(oracle, x0, t, eps)
    marginal = np.sqrt(1.0 - diffusion.alphas_cumprod[: T - 1 - k])
    s = x_t.squeeze(1).numpy() / marginal
    extra = RolloutChain(diffusion, k, "ddpm", "sample").noise_std[: T - 1 - k]
    sample_ratio = np.sqrt((s * marginal) ** 2 + extra ** 2) / marginal
    return s, sample_ratio


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.exposure_bias.chain_shrinkage", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("docs/exposure_bias/chain_shrinkage.csv"))
    args = p.parse_args(argv)
    diffusion = build_diffusion(ScheduleConfig(kind="linear", num_train_timesteps=1000))
    rows = []
    print(f"{'chain':10s} {'mean s':>8s} {'min s':>7s} " + " ".join(f"{'t=' + str(t):>7s}" for t in SHOWN_T)
          + "  sample: max |ratio-1|")
    for name, k in CHAINS:
        s, ratio = shrinkage(diffusion, k)
        print(f"{name:10s} {s.mean():8.3f} {s.min():7.3f} " + " ".join(f"{s[t]:7.3f}" for t in SHOWN_T)
              + f"  {np.abs(ratio - 1).max():.1e}")
        rows += [{"chain": name, "k": k, "t": t, "s_mean_posterior": float(s[t]), "noise_ratio_sample": float(ratio[t])}
                 for t in range(len(s))]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"per t: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
