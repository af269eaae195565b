"""95% intervals from a job's measured iterations, each iteration one sample (the standard library only).

Two intervals, both Student t:
- `mean_interval`: the mean of one job's per-iteration values, mean +- t(0.975, n-1) * sd / sqrt(n).
- `log_ratio_bounds`: the ratio of two sets of samples (config against config, run against run), from
  each side's count, mean and variance of the logs (as SQL aggregates them): Welch's interval on the
  difference of the mean logs, exponentiated: the interval of the ratio of
  geometric means, unequal variances allowed (Welch-Satterthwaite degrees of freedom). Logs make the
  interval of B/A the reciprocal of that of A/B, and keep a ratio's bounds positive.
Fewer than two samples on a side give no interval (None): one run has no spread to judge noise by.
The t quantile comes from the regularized incomplete beta function (Numerical Recipes' continued
fraction), so no SciPy is needed at run time; the tests hold it against SciPy.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

LEVEL = 0.95


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with df (> 0, not necessarily whole) degrees of freedom."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):  # bisection: the cdf is monotone, and 200 halvings reach double precision
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def _mean_var(values: Sequence[float]) -> tuple[int, float, float]:
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return n, mean, var


def mean_interval(values: Sequence[float]) -> dict:
    """n, mean, sample standard deviation and the 95% t-interval of the mean (None with n < 2)."""
    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not values:
        return {"n": 0, "mean": None, "sd": None, "ci_low": None, "ci_high": None}
    n, mean, var = _mean_var(values)
    if n < 2:
        return {"n": n, "mean": mean, "sd": None, "ci_low": None, "ci_high": None}
    half = t_quantile(0.5 + LEVEL / 2, n - 1) * math.sqrt(var / n)
    return {"n": n, "mean": mean, "sd": math.sqrt(var), "ci_low": mean - half, "ci_high": mean + half}


def log_ratio_bounds(n_b: int | None, log_mean_b: float | None, log_var_b: float | None,
                     n_a: int | None, log_mean_a: float | None, log_var_a: float | None) -> tuple[float, float] | None:
    """The 95% interval of B / A from each side's count, mean and sample variance of the logs."""
    if None in (n_b, log_mean_b, log_var_b, n_a, log_mean_a, log_var_a) or n_a < 2 or n_b < 2:
        return None
    va, vb = log_var_a / n_a, log_var_b / n_b
    diff = log_mean_b - log_mean_a
    if va + vb == 0.0:  # identical samples on both sides: no spread, the ratio is exact
        return math.exp(diff), math.exp(diff)
    df = (va + vb) ** 2 / (va * va / (n_a - 1) + vb * vb / (n_b - 1))
    half = t_quantile(0.5 + LEVEL / 2, df) * math.sqrt(va + vb)
    return math.exp(diff - half), math.exp(diff + half)
