"""The file formats `hybench report` and `hybench query` write; apart so the CLI names them
without importing matplotlib or DuckDB on every command."""

PLOT_FORMATS = ("png", "svg", "pdf")
QUERY_FORMATS = ("table", "csv", "json", "parquet")
