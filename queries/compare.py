"""Two result sets side by side: each cell's headline metrics on side A and side B, the ratio B / A and,
where both sides measured at least two iterations, its 95% interval (Welch on the logs of the
per-iteration values, queries/interval_sql.py), as SQL over the two sides' `cells` tables (small: one
row per cell). A ratio whose interval holds 1 is no difference beyond noise."""
from __future__ import annotations

import duckdb
import pyarrow as pa

from hybench.queries import interval_sql
from hybench.queries.cells import CONFIG_ORDER, VARIANT
from hybench.queries.store_views import quote

# Each compared metric, and the per-iteration figure of cells.sql whose spread gives its interval.
COMPARED = {"throughput_tok_s": "throughput_tok_s", "latency_p50_ms": "e2e_p50_ms", "latency_p99_ms": "e2e_p99_ms",
            "tpot_p50_ms": "tpot_p50_ms", "peak_torch_gib": None}
# The metrics the summary judges: cells with no difference beyond noise, cells that differ, cells without spread.
JUDGED = ("throughput_tok_s", "latency_p99_ms")
_CELL = (*VARIANT, "input_len", "config")


def _columns(metric: str, samples: str | None) -> str:
    ratio = f"b.{metric} / nullif(a.{metric}, 0)"
    columns = f"a.{metric} AS {metric}_a, b.{metric} AS {metric}_b, {ratio} AS {metric}_ratio"
    if samples is None:
        return columns
    args = (f"b.iterations, b.{samples}_log_mean, b.{samples}_log_var, "
            f"a.iterations, a.{samples}_log_mean, a.{samples}_log_var")
    return columns + f", ratio_ci_low({args}) AS {metric}_ratio_ci_low, ratio_ci_high({args}) AS {metric}_ratio_ci_high"


def _verdicts(metric: str) -> str:
    low, high = f"{metric}_ratio_ci_low", f"{metric}_ratio_ci_high"
    return (f"count(*) FILTER ({low} <= 1 AND {high} >= 1) AS {metric}_same, "
            f"count(*) FILTER ({low} > 1 OR {high} < 1) AS {metric}_differ, "
            f"count(*) FILTER ({metric}_ratio IS NOT NULL AND {low} IS NULL) AS {metric}_no_spread")


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
        joined = con.sql(f"""
            SELECT * FROM joined
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
