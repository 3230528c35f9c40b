"""benchmarks/paired_stats.py: the small-sample interval, MDE and verdict the exposure-bias reports use."""
import math

import numpy as np

from benchmarks.paired_stats import (benjamini_hochberg, bootstrap_ci, mde_factors, min_detectable_effect,
                                    paired_summary, q_values, relative_trend, sign_flip_p, t_interval, t_test_p, union,
                                    verdict)


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


def test_bootstrap_ci_and_paired_summary():
    d = np.array([-0.03, -0.01, -0.02, -0.025, -0.015])
    lo, hi = bootstrap_ci(d, 4000)
    assert d.min() <= lo < d.mean() < hi <= d.max()  # a percentile bootstrap cannot leave the values' range
    assert all(math.isnan(x) for x in bootstrap_ci(np.array([1.0]), 100))
    assert all(math.isnan(x) for x in bootstrap_ci(np.array([1.0, math.inf]), 100))
    got = paired_summary(d, 4000)
    t_lo, t_hi = t_interval(d)
    assert got["ci"] == [min(lo, t_lo), max(hi, t_hi)] and math.isclose(got["diff"], -0.02)
    assert got["verdict"] == "better" and got["n"] == 5 and math.isclose(got["mde"], min_detectable_effect(d))
    assert paired_summary(np.array([-0.01, 0.02, 0.0]), 1000)["verdict"] == "inconclusive"


def test_t_test_p_and_benjamini_hochberg_by_hand():
    # d = 1, 2, 3: t = 2 / (1/√3) = 2√3 with 2 df, whose CDF is 1/2 + t / (2√(2 + t²)) in closed form
    t = 2 * math.sqrt(3)
    assert math.isclose(t_test_p(np.array([1.0, 2.0, 3.0])), 2 * (0.5 - t / (2 * math.sqrt(2 + t * t))), rel_tol=1e-9)
    assert math.isnan(t_test_p(np.array([1.0]))) and math.isnan(t_test_p(np.array([0.5, 0.5, 0.5])))
    # sorted p 0.005, 0.01, 0.03, 0.04 times m/rank = 0.02, 0.02, 0.04, 0.04 (already monotone)
    assert np.allclose(benjamini_hochberg([0.01, 0.04, 0.03, 0.005]), [0.02, 0.04, 0.04, 0.02])
    # the step-up keeps q monotone in p: 0.01·3/1 = 0.03 but 0.011·3/2 = 0.0165 caps it
    assert np.allclose(benjamini_hochberg([0.01, 0.011, 0.9]), [0.0165, 0.0165, 0.9])
    q = benjamini_hochberg([0.01, math.nan, 0.04])  # NaN is not in the family (m = 2)
    assert math.isclose(q[0], 0.02) and math.isnan(q[1]) and math.isclose(q[2], 0.04)
    assert benjamini_hochberg([]) == [] and paired_summary(np.array([1.0, 2.0, 3.0]), 100)["p"] == t_test_p([1.0, 2.0, 3.0])


def test_q_values_one_family_per_key_and_rows_without_p_skipped():
    rows = [{"dim": 2, "p": 0.01}, {"dim": 2, "p": 0.04}, {"dim": 16, "p": 0.01}, {"dim": 2}, {"dim": 16, "p": 0.9}]
    q = {id(r): q for r, q in q_values(rows, lambda r: r.get("p"), lambda r: r["dim"])}
    assert id(rows[3]) not in q and len(q) == 4
    # per dimension m = 2: 0.01·2 = 0.02, 0.04·2/2 = 0.04; 0.01·2 = 0.02, 0.9. One family of four (below) gives
    # 0.04·4/3 = 0.0533 to the second row
    assert np.allclose([q[id(rows[i])] for i in (0, 1, 2, 4)], [0.02, 0.04, 0.02, 0.9])
    together = dict((id(r), q) for r, q in q_values(rows, lambda r: r.get("p")))
    assert np.allclose([together[id(rows[i])] for i in (0, 1, 2, 4)], [0.02, 0.04 * 4 / 3, 0.02, 0.9])


def test_relative_trend_by_hand():
    # exactly on the line y = 1 − x/200 from x = 0 to 20: it falls 10 % of its start value, with no spread at all
    fall, lo, hi = relative_trend([0, 10, 20], [1.0, 0.95, 0.9])
    assert math.isclose(fall, 0.1) and math.isclose(lo, 0.1) and math.isclose(hi, 0.1)
    # residuals ±0.01 around y = 1 − x/200 at x = 0, 10, 20, 30: slope −0.005, stderr by hand
    x, y = np.array([0.0, 10, 20, 30]), np.array([1.01, 0.94, 0.91, 0.84])
    slope = np.polyfit(x, y, 1)[0]
    resid = y - np.polyval(np.polyfit(x, y, 1), x)
    stderr = math.sqrt((resid ** 2).sum() / 2 / ((x - x.mean()) ** 2).sum())
    start = np.polyval(np.polyfit(x, y, 1), 0.0)
    fall, lo, hi = relative_trend(x, y)
    assert math.isclose(fall, -slope * 30 / start)
    assert math.isclose(hi - fall, 4.302653 * stderr * 30 / start, rel_tol=1e-5) and math.isclose(fall - lo, hi - fall)
    # a rising curve is a negative fall; under three points there is no line with an interval
    assert relative_trend([0, 1, 2], [1.0, 1.1, 1.2])[0] < 0
    assert all(math.isnan(v) for v in relative_trend([0, 1], [1.0, 0.9]))


def test_mde_factors_formula_and_exact_noncentral_t():
    from scipy import stats

    approx, exact = mde_factors(3)
    # the formula min_detectable_effect uses: (t_{0.975, 2} + t_{0.8, 2}) / √3 = 3.10 sd; the noncentral t: 3.26 sd
    assert math.isclose(approx, (4.302653 + 1.060660) / math.sqrt(3), rel_tol=1e-5)
    assert math.isclose(approx, min_detectable_effect(np.array([1.0, 2.0, 3.0])), rel_tol=1e-12)
    assert round(exact, 2) == 3.26
    crit = stats.t.ppf(0.975, 2)
    power = lambda e: stats.nct.sf(crit, 2, e * math.sqrt(3)) + stats.nct.cdf(-crit, 2, e * math.sqrt(3))  # noqa: E731
    assert math.isclose(power(exact), 0.8, abs_tol=1e-6) and round(power(approx), 2) == 0.77
    # with many seeds the formula is exact
    a30, e30 = mde_factors(30)
    assert math.isclose(a30, e30, rel_tol=1e-3)


def test_the_exact_sign_flip_p_by_hand():
    # every seed the same sign: only all-plus and all-minus reach the observed |mean|: 2/2ⁿ
    assert sign_flip_p([0.01, 0.02, 0.03]) == 0.25
    assert sign_flip_p([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]) == 2 / 64 == 0.03125
    assert sign_flip_p([-0.1, -0.2, -0.3, -0.4, -0.5, -0.6]) == 0.03125  # two-sided
    # 1, 2, −0.5: the eight signed sums are ±3.5, ±2.5, ±1.5, ±0.5; |sum| ≥ 2.5 in four of them
    assert sign_flip_p([1.0, 2.0, -0.5]) == 0.5
    assert sign_flip_p([1.0, -1.0]) == 1.0 and sign_flip_p([0.0, 0.0, 0.0]) == 1.0
    assert math.isnan(sign_flip_p([])) and math.isnan(sign_flip_p([1.0, math.nan]))


def test_the_sign_flip_p_is_the_share_of_all_sign_assignments():
    import itertools

    d = np.random.default_rng(3).normal(0.2, 1.0, 7)
    sums = [abs(np.dot(signs, d)) for signs in itertools.product((1, -1), repeat=len(d))]
    want = sum(s >= abs(d.sum()) - 1e-12 for s in sums) / len(sums)
    assert sign_flip_p(d) == want
