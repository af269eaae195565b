"""`hybench report` and `write_report`: the figures and summary.md of one results store, or of two
side by side. Every number comes from the shipped SQL; this module runs it and hands the small
per-cell results to the plotting and summary code."""
from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow as pa

from hybench.queries import catalog
from hybench.queries.compare import compare_cells
from hybench.queries.errors import QueryError
from hybench.queries.formats import PLOT_FORMATS
from hybench.queries.plots import draw_report_figures
from hybench.queries.store_views import Names, Selection, Side, open_views, print_skipped, sides
from hybench.queries.quality_plots import draw_quality_figures
from hybench.queries.summary import QUALITY_QUERIES, TABLE_QUERIES, render_summary

_REPORT_QUERIES = ("cells", "totals", "config_ratios", "failures", "environment", *TABLE_QUERIES, *QUALITY_QUERIES)


@dataclass(frozen=True)
class SideResults:
    """The report queries' results for one side."""

    side: Side
    tables: dict[str, pa.Table]
    skipped: dict[str, str]  # files left out -> why
    duplicated_jobs: tuple[str, ...]
    nan_values: int

    def rows(self, name: str) -> list[dict]:
        return self.tables[name].to_pylist()


def write_report(results_uri: str, output_dir: str, fmt: str = "png", *, sweep: Names = None,
                 model: Names = None, config: Names = None, where: str | None = None,
                 compare: str | None = None, compare_sweep: Names = None) -> str:
    """Write the figures and summary.md into output_dir; returns summary.md's path. `compare` names a
    second store and/or `compare_sweep` other sweeps, reported side by side as B against A."""
    if fmt not in PLOT_FORMATS:
        raise QueryError(f"--format must be one of {', '.join(PLOT_FORMATS)}, got {fmt!r}")
    selection = Selection.of(results_uri, sweep, model, config, where)
    results = [collect(side) for side in sides(selection, compare, compare_sweep)]
    comparison = compare_cells(results[0].tables["cells"], results[1].tables["cells"]) if len(results) == 2 else None
    try:
        os.makedirs(output_dir, exist_ok=True)
        figures = draw_report_figures([(r.side.label, r.rows("cells")) for r in results], output_dir, fmt,
                                      comparison[0].to_pylist() if comparison else None)
        for r in results:  # what each layout keeps, per side: quality has no B / A figure
            figures += draw_quality_figures(r.rows("perplexity"), r.rows("recall"), r.rows("cells"), output_dir, fmt,
                                            suffix=f"_{r.side.name}" if r.side.name else "")
        path = os.path.join(output_dir, "summary.md")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(render_summary(results, figures, comparison))
    except OSError as exc:
        raise QueryError(f"cannot write the report into {output_dir}: {exc}") from None
    return path


def collect(side: Side) -> SideResults:
    with open_views(side.selection, materialize_cells=True) as views:
        print_skipped(views.skipped)
        tables = {name: views.table(catalog.load(name)) for name in _REPORT_QUERIES}
    return SideResults(side, tables, views.skipped, views.duplicated_jobs, views.nan_values)
