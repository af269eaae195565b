"""Two result sets side by side: each cell's headline metrics on side A and side B and the ratio
B / A, as SQL over the two sides' `cells` tables (small: one row per cell)."""
from __future__ import annotations

import duckdb
import pyarrow as pa

from hybench.queries.cells import CONFIG_ORDER, VARIANT
from hybench.queries.store_views import quote

COMPARED = ("throughput_tok_s", "latency_p50_ms", "latency_p99_ms", "tpot_p50_ms", "peak_torch_gib")
_CELL = (*VARIANT, "input_len", "config")


def compare_cells(a: pa.Table, b: pa.Table) -> tuple[pa.Table, dict]:
    """(one row per cell of either side, matched on the cell key; a summary of the ratios).
    A cell found on one side only keeps its row, with the other side's columns empty."""
    keys = ", ".join(f'coalesce(a."{k}", b."{k}") AS "{k}"' for k in _CELL)
    match = " AND ".join(f'a."{k}" IS NOT DISTINCT FROM b."{k}"' for k in _CELL)
    metrics = ", ".join(f"a.{m} AS {m}_a, b.{m} AS {m}_b, b.{m} / nullif(a.{m}, 0) AS {m}_ratio" for m in COMPARED)
    configs = ", ".join(map(quote, CONFIG_ORDER))
    with duckdb.connect() as con:
        con.register("a", a)
        con.register("b", b)
        con.execute(f"""
            CREATE TEMP TABLE joined AS
            SELECT {keys}, a.status AS status_a, b.status AS status_b, {metrics}
            FROM a FULL OUTER JOIN b ON {match}""")
        joined = con.sql(f"""
            SELECT * FROM joined
            ORDER BY model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit,
                dataset_sha256, input_len, list_position([{configs}], config), config
        """).to_arrow_table()
        summary = con.sql("""
            SELECT count(*) FILTER (status_a IS NOT NULL AND status_b IS NOT NULL) AS matched,
                count(*) FILTER (status_b IS NULL) AS only_a,
                count(*) FILTER (status_a IS NULL) AS only_b,
                median(throughput_tok_s_ratio) AS throughput_median, min(throughput_tok_s_ratio) AS throughput_min,
                max(throughput_tok_s_ratio) AS throughput_max,
                median(latency_p99_ms_ratio) AS p99_median, min(latency_p99_ms_ratio) AS p99_min,
                max(latency_p99_ms_ratio) AS p99_max
            FROM joined""").to_arrow_table().to_pylist()[0]
    return joined, summary
