"""The 95% intervals (workers/intervals.py) against SciPy, and what they conclude on known samples."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from hybench.workers.intervals import log_ratio_bounds, mean_interval, t_quantile


def log_ratio_interval(b, a):
    """The interval of B / A from the samples, through the bounds SQL's aggregates feed."""
    sides = [np.log(np.asarray(side, dtype=np.float64)) for side in (b, a)]
    stats_of = [(len(s), float(s.mean()), float(s.var(ddof=1)) if len(s) > 1 else 0.0) for s in sides]
    return log_ratio_bounds(*stats_of[0], *stats_of[1])


@pytest.mark.parametrize("df", [1, 1.5, 2, 3, 4.7, 9, 30, 250])
@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995, 0.025])
def test_t_quantile_matches_scipy(p, df):
    assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)


def test_mean_interval_matches_scipy():
    values = [10.2, 9.7, 10.9, 10.1, 9.5]
    got = mean_interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert got["n"] == 5 and got["mean"] == pytest.approx(np.mean(values))
    assert got["sd"] == pytest.approx(np.std(values, ddof=1))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((low, high))


def test_one_sample_has_no_spread():
    assert mean_interval([3.0]) == {"n": 1, "mean": 3.0, "sd": None, "ci_low": None, "ci_high": None}
    assert log_ratio_interval([2.0, 2.1], [1.0]) is None


def test_log_ratio_interval_is_welch_on_logs():
    rng = np.random.default_rng(0)
    a, b = rng.lognormal(0.0, 0.1, 6), rng.lognormal(0.3, 0.2, 4)
    la, lb = np.log(a), np.log(b)
    va, vb = la.var(ddof=1) / len(a), lb.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    diff = lb.mean() - la.mean()
    assert log_ratio_interval(b, a) == pytest.approx((math.exp(diff - half), math.exp(diff + half)))
    low, high = log_ratio_interval(a, b)  # A / B is the reciprocal of B / A
    assert (1 / high, 1 / low) == pytest.approx(log_ratio_interval(b, a))


def test_a_known_2x_difference_is_found_and_noise_is_not():
    rng = np.random.default_rng(1)
    a = 100 * (1 + rng.uniform(-0.1, 0.1, 5))
    doubled = 200 * (1 + rng.uniform(-0.1, 0.1, 5))
    same = 100 * (1 + rng.uniform(-0.1, 0.1, 5))
    low, high = log_ratio_interval(doubled, a)
    assert 1.7 < low < 2 < high < 2.3
    low, high = log_ratio_interval(same, a)
    assert low < 1 < high
