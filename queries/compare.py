"""Two result sets side by side: each cell's headline metrics on side A and side B, the ratio B / A and,
where both sides measured at least two iterations, its 95% interval, as SQL over the two sides' `cells`
tables (small: one row per cell). A ratio whose interval holds 1 is no difference beyond noise.

Iterations of one job share their process and moment, so their spread misses what moves between two
runs (measured: identical tiny-model sweeps on a 2-core CPU differ by 10-50% per cell while a job's
iterations agree within 5%). The interval therefore adds the between-run variance of the cells, estimated
from the matched cells themselves as a random effect: the squared median absolute deviation of their log
ratios (x 1.4826, the normal's scale) less their median within-job variance. The median keeps a minority
of cells that truly differ from widening the rest; cells that all moved alike (a faster GPU) show no
spread between them and keep their narrow intervals. Each cell's interval is the Welch interval on logs
(queries/interval_sql.py), widened where sqrt(within + between) times the t quantile of the cells' k - 1
degrees of freedom reaches further."""
from __future__ import annotations

import statistics

import duckdb
import pyarrow as pa

from hybench.queries import interval_sql
from hybench.workers.intervals import LEVEL, t_quantile
from hybench.queries.cells import CONFIG_ORDER, VARIANT
from hybench.queries.store_views import quote

# Each compared metric, and the per-iteration figure of cells.sql whose spread gives its interval.
COMPARED = {"throughput_tok_s": "throughput_tok_s", "latency_p50_ms": "e2e_p50_ms", "latency_p99_ms": "e2e_p99_ms",
            "tpot_p50_ms": "tpot_p50_ms", "peak_torch_gib": None}
# The metrics the summary judges: cells with no difference beyond noise, cells that differ, cells without spread.
JUDGED = ("throughput_tok_s", "latency_p99_ms")
_CELL = (*VARIANT, "input_len", "config")


def _columns(metric: str, samples: str | None) -> str:
    """A metric's two sides and their ratio: of the sides' geometric means over their samples where both
    have samples (the centre of the interval), else of the cells' figures."""
    ratio = f"b.{metric} / nullif(a.{metric}, 0)"
    if samples is not None:
        ratio = f"coalesce(exp(b.{samples}_log_mean - a.{samples}_log_mean), {ratio})"
    columns = f"a.{metric} AS {metric}_a, b.{metric} AS {metric}_b, {ratio} AS {metric}_ratio"
    if samples is None:
        return columns
    args = (f"b.samples, b.{samples}_log_mean, b.{samples}_log_var, "
            f"a.samples, a.{samples}_log_mean, a.{samples}_log_var")
    within = f"b.{samples}_log_var / b.samples + a.{samples}_log_var / a.samples"
    return (columns + f", ratio_ci_low({args}) AS {metric}_ratio_ci_low, ratio_ci_high({args}) AS {metric}_ratio_ci_high"
            f", b.{samples}_log_mean - a.{samples}_log_mean AS _{metric}_log_ratio"
            f", if(a.samples >= 2 AND b.samples >= 2, {within}, NULL) AS _{metric}_within_var")


def _verdicts(metric: str) -> str:
    low, high = f"{metric}_ratio_ci_low", f"{metric}_ratio_ci_high"
    return (f"count(*) FILTER ({low} <= 1 AND {high} >= 1) AS {metric}_same, "
            f"count(*) FILTER ({low} > 1 OR {high} < 1) AS {metric}_differ, "
            f"count(*) FILTER ({metric}_ratio IS NOT NULL AND {low} IS NULL) AS {metric}_no_spread")


def between_run_variance(log_ratios: list[float], within: list[float]) -> float:
    """The variance of the cells' log ratios beyond their within-job variance, robustly: (1.4826 x their
    median absolute deviation)^2 less the median within-job variance; 0 when they scatter no more than
    their iterations predict."""
    center = statistics.median(log_ratios)
    mad = statistics.median(abs(d - center) for d in log_ratios)
    return max(0.0, (1.4826 * mad) ** 2 - statistics.median(within))


def _widen_by_between_run_variance(con: duckdb.DuckDBPyConnection, metric: str) -> None:
    rows = con.sql(f"SELECT _{metric}_log_ratio, _{metric}_within_var FROM joined "
                   f"WHERE _{metric}_within_var > 0 AND isfinite(_{metric}_log_ratio)").fetchall()
    if len(rows) < 3:  # too few cells to estimate a spread between runs
        return
    tau2 = between_run_variance([d for d, _ in rows], [v for _, v in rows])
    if tau2 == 0:
        return
    t = t_quantile(0.5 + LEVEL / 2, len(rows) - 1)
    for bound, sign in (("low", -1), ("high", 1)):
        con.execute(f"""
            UPDATE joined SET {metric}_ratio_ci_{bound} = CASE WHEN _{metric}_within_var IS NULL THEN NULL ELSE
                {'least' if sign < 0 else 'greatest'}({metric}_ratio_ci_{bound},
                    exp(_{metric}_log_ratio {'-' if sign < 0 else '+'} {t} * sqrt(_{metric}_within_var + {tau2}))) END""")


def compare_cells(a: pa.Table, b: pa.Table) -> tuple[pa.Table, dict]:
    """(one row per cell of either side, matched on the cell key; a summary of the ratios).
    A cell found on one side only keeps its row, with the other side's columns empty."""
    keys = ", ".join(f'coalesce(a."{k}", b."{k}") AS "{k}"' for k in _CELL)
    match = " AND ".join(f'a."{k}" IS NOT DISTINCT FROM b."{k}"' for k in _CELL)
    metrics = ", ".join(_columns(m, samples) for m, samples in COMPARED.items())
    configs = ", ".join(map(quote, CONFIG_ORDER))
    with duckdb.connect() as con:
        interval_sql.register(con)
        con.register("a", a)
        con.register("b", b)
        con.execute(f"""
            CREATE TEMP TABLE joined AS
            SELECT {keys}, a.status AS status_a, b.status AS status_b,
                a.iterations AS iterations_a, b.iterations AS iterations_b, {metrics}
            FROM a FULL OUTER JOIN b ON {match}""")
        for metric, samples in COMPARED.items():
            if samples is not None:
                _widen_by_between_run_variance(con, metric)
        joined = con.sql(f"""
            SELECT * EXCLUDE ({', '.join(f'_{m}_log_ratio, _{m}_within_var' for m, s in COMPARED.items() if s)})
            FROM joined
            ORDER BY model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit,
                dataset_sha256, input_len, list_position([{configs}], config), config
        """).to_arrow_table()
        summary = con.sql(f"""
            SELECT count(*) FILTER (status_a IS NOT NULL AND status_b IS NOT NULL) AS matched,
                count(*) FILTER (status_b IS NULL) AS only_a,
                count(*) FILTER (status_a IS NULL) AS only_b,
                {', '.join(_verdicts(m) for m in JUDGED)}
            FROM joined""").to_arrow_table().to_pylist()[0]
    return joined, summary
