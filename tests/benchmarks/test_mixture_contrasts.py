"""benchmarks/mixture_bias/contrasts.py on hand-made per-seed metrics: the paired contrasts, their verdicts and the
per-method summary."""
import math

import numpy as np

from benchmarks.mixture_bias.config import full
from benchmarks.mixture_bias.contrasts import contrast_pairs, contrast_table, contrasts, summary_table
from benchmarks.paired_stats import benjamini_hochberg


def _values(rng):
    """Ten seeds of one 2-D DDPM-5 cell: chain-only is 0.01 better than MDSS in every seed (plus small noise), the
    posterior-sample variant is no different (noise only); sdss is missing from seed 9."""
    base = rng.normal(0.25, 0.01, 10)
    def cells(shift, noise, seeds=range(10)):
        return {s: {"sw2": base[s] + shift + rng.normal(0, noise), "nll": 1.0 + shift} for s in seeds}
    return {(2, "ddpm", 5, "mdss_k4_mean"): cells(0.0, 0.0005),
            (2, "ddpm", 5, "chain_only_k4"): cells(-0.01, 0.0005),
            (2, "ddpm", 5, "mdss_k4_sample"): cells(0.0, 0.01),
            (2, "ddpm", 5, "sdss_mean"): cells(0.002, 0.0005, range(9))}


def test_contrasts_pair_by_seed_and_judge_each_question():
    values = _values(np.random.default_rng(0))
    rows = {(r["first"], r["second"]): r for r in contrasts(full(), values)}
    chain = rows[("chain_only_k4", "mdss_k4_mean")]
    by_hand = np.mean([values[(2, "ddpm", 5, "chain_only_k4")][s]["sw2"] - values[(2, "ddpm", 5, "mdss_k4_mean")][s]["sw2"]
                       for s in range(10)])
    assert math.isclose(chain["sw2"]["diff"], by_hand) and chain["sw2"]["verdict"] == "better" and chain["n_seeds"] == 10
    assert math.isclose(chain["nll"]["diff"], -0.01)
    assert rows[("mdss_k4_sample", "mdss_k4_mean")]["sw2"]["verdict"] == "inconclusive"
    assert rows[("mdss_k4_mean", "sdss_mean")]["n_seeds"] == 9  # only the seeds both have
    # a pair with a missing method is left out, not reported empty
    assert ("mdss_ddim_k4", "mdss_k4_mean") not in rows and ("eps_scale", "mdss_k4_mean") not in rows
    table = "\n".join(contrast_table(list(rows.values())))
    assert "| chain_only_k4 − mdss_k4_mean |" in table and "| ddpm-5 |" in table
    assert f"better ({chain['sw2']['diff']:+.4f} [{chain['sw2']['ci'][0]:+.4f}" in table
    assert {p[:2] for p in contrast_pairs(2)} >= {("chain_only_k2", "mdss_k2_mean"), ("mdss_k2_sample", "mdss_k2_mean")}


def test_summary_lists_the_cells_each_method_wins_or_loses():
    rows = [{"dim": 2, "sampler": "ddim", "steps": 5, "method": "ddpm"},
            {"dim": 2, "sampler": "ddim", "steps": 5, "method": "ip", "sw2_verdict": "better", "sw2_q": 0.01},
            {"dim": 2, "sampler": "ddim", "steps": 10, "method": "ip", "sw2_verdict": "worse", "sw2_q": 0.2},
            {"dim": 2, "sampler": "ddpm", "steps": 5, "method": "ip", "sw2_verdict": "inconclusive", "sw2_q": 0.01},
            {"dim": 16, "sampler": "ddim", "steps": 5, "method": "ip", "sw2_verdict": "inconclusive", "sw2_q": 0.9}]
    lines = summary_table(rows)
    # a CI-based verdict is listed; only those with q < 0.05 count as discoveries
    assert "| 2 | ip | ddim-5 | ddim-10 | 1 of 3 | ddim-5 |" in lines and "| 16 | ip | — | — | 1 of 1 | — |" in lines
    assert not any("| ddpm |" in line for line in lines)


def test_contrast_q_values_form_one_family_per_dimension():
    values = _values(np.random.default_rng(1))
    values.update({(16, *k[1:]): v for k, v in values.items()})  # the same cells again in D = 16
    rows = contrasts(full(), values)
    for dim in (2, 16):
        mine = [r for r in rows if r["dim"] == dim]
        assert [r["sw2"]["q"] for r in mine] == benjamini_hochberg([r["sw2"]["p"] for r in mine])
