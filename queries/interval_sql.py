"""The 95% intervals (workers/intervals.py) as DuckDB functions, so that the shipped SQL computes them:
- ratio_ci_low / ratio_ci_high(n_b, log_mean_b, log_var_b, n_a, log_mean_a, log_var_a): the interval of
  B / A from each side's per-iteration samples (Welch on logs); NULL with fewer than 2 samples a side;
- mean_ci_half(n, sd): half the t-interval of a mean of n samples; NULL with n < 2.
"""
from __future__ import annotations

import math

import duckdb
from duckdb.sqltypes import BIGINT, DOUBLE

from hybench.workers.intervals import LEVEL, log_ratio_bounds, t_quantile

_RATIO_ARGS = [BIGINT, DOUBLE, DOUBLE, BIGINT, DOUBLE, DOUBLE]


def _bound(index: int):
    def bound(n_b: int | None, log_mean_b: float | None, log_var_b: float | None,
              n_a: int | None, log_mean_a: float | None, log_var_a: float | None) -> float | None:
        interval = log_ratio_bounds(n_b, log_mean_b, log_var_b, n_a, log_mean_a, log_var_a)
        return None if interval is None else interval[index]
    return bound


def _mean_ci_half(n: int | None, sd: float | None) -> float | None:
    if n is None or sd is None or n < 2:
        return None
    return t_quantile(0.5 + LEVEL / 2, n - 1) * sd / math.sqrt(n)


def register(con: duckdb.DuckDBPyConnection) -> None:
    """Add the interval functions to a connection (before its configuration is locked)."""
    for name, index in (("ratio_ci_low", 0), ("ratio_ci_high", 1)):
        con.create_function(name, _bound(index), _RATIO_ARGS, DOUBLE, null_handling="special", side_effects=False)
    con.create_function("mean_ci_half", _mean_ci_half, [BIGINT, DOUBLE], DOUBLE, null_handling="special",
                        side_effects=False)
