"""Queries: DuckDB SQL over the Parquet results store, and the report (tables, plots, summary) built on it.

Nothing here loads the store into Python: views read the Parquet files in place, every aggregate is
SQL over per-request rows, and only small per-cell results come back to Python.
"""
from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # `from hybench.queries import write_report` (hybench sweep) without loading matplotlib for every
    # import of the package (the CLI imports it to build its parser).
    if name == "write_report":
        from hybench.queries.report import write_report

        return write_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
