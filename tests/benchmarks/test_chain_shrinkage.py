"""The posterior-mean chain's noise shrinkage figure (benchmarks/exposure_bias/chain_shrinkage.py)."""
import numpy as np

from benchmarks.exposure_bias.chain_shrinkage import main, shrinkage
from training.build import build_diffusion
from training.schedules import ScheduleConfig


def test_mean_chain_shrinks_more_with_depth_and_sample_chain_keeps_the_marginal(tmp_path, capsys):
    diffusion = build_diffusion(ScheduleConfig(kind="linear", num_train_timesteps=1000))
    s0, r0 = shrinkage(diffusion, 0)
    s4, r4 = shrinkage(diffusion, 4)
    s10, r10 = shrinkage(diffusion, 10)
    assert 1.0 > s0.mean() > s4.mean() > s10.mean() > 0.5
    assert np.all(s10 <= 1.0 + 1e-12) and s10[10] < s4[10] < s0[10]
    for r in (r0, r4, r10):
        np.testing.assert_allclose(r, 1.0, atol=1e-9)
    assert main(["--out", str(tmp_path / "s.csv")]) == 0
    assert (tmp_path / "s.csv").read_text().startswith("chain,k,t,s_mean_posterior,noise_ratio_sample")
