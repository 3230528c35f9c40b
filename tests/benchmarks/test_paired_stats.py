"""benchmarks/paired_stats.py: the small-sample interval, MDE and verdict the exposure-bias reports use."""
import math

import numpy as np

from benchmarks.paired_stats import min_detectable_effect, t_interval, union, verdict


def test_t_interval_and_mde_by_hand():
    d = np.array([1.0, 2.0, 3.0])  # mean 2, sd 1, n 3: t_{0.975, 2} = 4.3027, t_{0.8, 2} = 1.0607
    lo, hi = t_interval(d)
    assert math.isclose(lo, 2 - 4.302653 / math.sqrt(3), rel_tol=1e-5) and math.isclose(hi, 2 + 4.302653 / math.sqrt(3), rel_tol=1e-5)
    assert math.isclose(min_detectable_effect(d), (4.302653 + 1.060660) / math.sqrt(3), rel_tol=1e-5)
    assert all(math.isnan(x) for x in t_interval(np.array([1.0]))) and math.isnan(min_detectable_effect([1.0]))


def test_union_and_verdicts():
    assert union((-1.0, 0.5), (-0.5, 1.0)) == (-1.0, 1.0)
    assert all(math.isnan(x) for x in union((math.nan, math.nan), (0.0, 1.0)))
    assert verdict((-0.3, -0.1)) == "better" and verdict((0.1, 0.2)) == "worse"
    assert verdict((-0.1, 0.1)) == "inconclusive" and verdict((math.nan, math.nan)) == "n/a"
    # three seeds that agree in sign are not enough on their own: the t interval keeps it inconclusive
    d = np.array([-0.01, -0.02, -0.001])
    assert verdict(t_interval(d)) == "inconclusive"
