"""Small-sample statistics of paired differences (one value per training seed), shared by the exposure-bias
benchmarks: the t interval, the minimal detectable effect, and the verdict a confidence interval gives.

With 3 to 10 seeds a percentile bootstrap alone is too narrow (it cannot be wider than the values it resamples),
so the benchmarks report the union of their bootstrap interval and the t interval.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from functools import lru_cache

import numpy as np


def bootstrap_ci(d: np.ndarray, n: int, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``d`` (one value per seed); NaNs below two values or with a
    non-finite one."""
    d = np.asarray(d, dtype=float)
    if len(d) < 2 or not np.all(np.isfinite(d)):
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n, len(d)))].mean(1)
    tail = 100 * (1 - level) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def paired_summary(d: np.ndarray, n_boot: int) -> dict:
    """Mean of the per-seed paired differences ``d`` with the union of the bootstrap and t intervals, the verdict
    that interval gives, the minimal detectable effect and the one-sample t test's p: {diff, ci, mde, verdict, p, n}."""
    d = np.asarray(d, dtype=float)
    ci = union(bootstrap_ci(d, n_boot), t_interval(d))
    return {"diff": float(d.mean()), "ci": list(ci), "mde": min_detectable_effect(d), "verdict": verdict(ci),
            "p": t_test_p(d), "n": len(d)}


def t_test_p(d: np.ndarray) -> float:
    """Two-sided p of the one-sample t test of mean(d) = 0; NaN below two values or with no spread."""
    from scipy import stats

    d = np.asarray(d, dtype=float)
    if len(d) < 2 or not np.all(np.isfinite(d)) or d.std(ddof=1) == 0:
        return math.nan
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def sign_flip_p(d: np.ndarray) -> float:
    """Exact two-sided sign-flip (permutation) p of mean(d) = 0: under the null each per-seed difference is as
    likely to have either sign, so p is the share of the 2ⁿ sign assignments whose |mean| is at least the observed
    one. It needs no normality, but cannot go below 2/2ⁿ: 0.25 with 3 seeds, 0.03125 with 6. NaN without a value
    or with a non-finite one; exact up to 24 values (2²⁴ sums)."""
    d = np.asarray(d, dtype=float)
    if len(d) == 0 or not np.all(np.isfinite(d)):
        return math.nan
    if len(d) > 24:
        raise ValueError(f"sign_flip_p is exact over 2^n assignments: n = {len(d)} is too many")
    sums = np.zeros(1)
    for x in d:  # every signed sum, doubling per value
        sums = np.concatenate([sums + x, sums - x])
    observed = abs(d.sum())
    tol = 1e-12 * max(1.0, float(np.abs(d).sum()))  # the observed assignment itself must count, rounding aside
    return float(np.count_nonzero(np.abs(sums) >= observed - tol) / len(sums))


def benjamini_hochberg(p: list[float]) -> list[float]:
    """Benjamini–Hochberg q-values (false-discovery-rate adjusted p) of a family of tests; NaN p stay NaN and do
    not count in the family. A cell is a discovery at FDR α when q < α: with many cells per table, some CIs
    exclude 0 by chance alone (1 in 20 at 95 % when nothing differs)."""
    p_arr = np.asarray(p, dtype=float)
    q = np.full(len(p_arr), math.nan)
    ok = np.flatnonzero(np.isfinite(p_arr))
    if len(ok) == 0:
        return q.tolist()
    order = ok[np.argsort(p_arr[ok])]
    ranked = p_arr[order] * len(ok) / np.arange(1, len(ok) + 1)
    q[order] = np.minimum(1.0, np.minimum.accumulate(ranked[::-1])[::-1])
    return q.tolist()


def q_values(rows: list[dict], p_of: Callable[[dict], float | None],
             family_of: Callable[[dict], Hashable] = lambda row: None) -> list[tuple[dict, float]]:
    """(row, Benjamini–Hochberg q) for every row whose ``p_of`` is not None, one family per ``family_of`` value (a
    table, or one dimension of it): the one place the reports assign q, whatever their rows look like."""
    families: dict[Hashable, list[tuple[dict, float]]] = {}
    for row in rows:
        p = p_of(row)
        if p is not None:
            families.setdefault(family_of(row), []).append((row, p))
    return [(row, q) for members in families.values()
            for (row, _), q in zip(members, benjamini_hochberg([p for _, p in members]))]


def t_interval(d: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The t interval of the mean of ``d``; NaNs below two values."""
    from scipy import stats

    d = np.asarray(d, dtype=float)
    if len(d) < 2:
        return (math.nan, math.nan)
    half = stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean() - half), float(d.mean() + half)


def min_detectable_effect(d: np.ndarray, power: float = 0.8, level: float = 0.95) -> float:
    """The mean difference a two-sided test at ``level`` would detect with ``power``, given ``d``'s spread:
    (t_{(1+level)/2} + t_{power}) · sd / √n with n − 1 degrees of freedom; NaN below two values."""
    from scipy import stats

    d = np.asarray(d, dtype=float)
    if len(d) < 2:
        return math.nan
    df = len(d) - 1
    return float((stats.t.ppf(0.5 + level / 2, df) + stats.t.ppf(power, df)) * d.std(ddof=1) / math.sqrt(len(d)))


@lru_cache(maxsize=None)
def mde_factors(n: int, power: float = 0.8, level: float = 0.95) -> tuple[float, float]:
    """The minimal detectable effect in units of the per-seed sd for ``n`` seeds: (the formula
    ``min_detectable_effect`` uses, (t_{(1+level)/2} + t_{power}) / √n, and the exact value, the effect at which the
    two-sided one-sample t test has ``power`` under the noncentral t). With few seeds the formula understates it:
    n = 3 gives 3.10 against 3.26 (the formula's effect has 77 % power, not 80 %)."""
    from scipy import optimize, stats

    df, crit = n - 1, stats.t.ppf(0.5 + level / 2, n - 1)
    approx = float((crit + stats.t.ppf(power, df)) / math.sqrt(n))

    def power_at(effect: float) -> float:
        nc = effect * math.sqrt(n)
        lower = stats.nct.cdf(-crit, df, nc)  # the wrong-sign rejections: negligible, and NaN far out in the tail
        return float(stats.nct.sf(crit, df, nc) + (lower if math.isfinite(lower) else 0.0))

    return approx, float(optimize.brentq(lambda e: power_at(e) - power, approx / 2, approx * 2))


def union(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    if any(math.isnan(x) for x in (*a, *b)):
        return (math.nan, math.nan)
    return (min(a[0], b[0]), max(a[1], b[1]))


def verdict(ci: tuple[float, float]) -> str:
    """better / worse when the interval excludes 0 (negative = better), else inconclusive; n/a without one."""
    lo, hi = ci
    if math.isnan(lo) or math.isnan(hi):
        return "n/a"
    return "better" if hi < 0 else "worse" if lo > 0 else "inconclusive"


def relative_trend(steps, scores, level: float = 0.95) -> tuple[float, float, float]:
    """The least-squares line through (step, score): its fall over the span as a fraction of its value at the first
    step (positive = the score fell, i.e. improved), with the t interval of the slope carried over; NaNs below three
    points. Reads a noisy training curve better than its two end points do."""
    from scipy import stats

    x, y = np.asarray(steps, dtype=float), np.asarray(scores, dtype=float)
    if len(x) < 3:
        return (math.nan, math.nan, math.nan)
    fit = stats.linregress(x, y)
    span, start = x.max() - x.min(), fit.intercept + fit.slope * x.min()
    half = stats.t.ppf(0.5 + level / 2, len(x) - 2) * fit.stderr
    fall = lambda slope: float(-slope * span / start)  # noqa: E731
    return fall(fit.slope), fall(fit.slope + half), fall(fit.slope - half)
