"""summary.md: the findings first, in plain words, then the figures, then one table per shipped
query, grouped by variant (and by side in a comparison)."""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import pyarrow as pa

from hybench.queries import catalog
from hybench.queries.cells import VARIANT, by_variant, variant_title, varying
from hybench.queries.findings import comparison_findings, data_notes, findings
from hybench.queries.formatting import cell_text, markdown_table
from hybench.queries.quality_findings import quality_findings

if TYPE_CHECKING:
    from hybench.queries.plots import Drawn
    from hybench.queries.report import SideResults

OFFLINE_LATENCY = (
    "**Offline cells** (every request of an iteration arrives at once, the default): the requests of an "
    "iteration finish together, so E2E percentiles describe when the batch completes, not what one user "
    "waits (`e2e_distinct` counts the distinct values behind them); TTFT, which varies under chunked "
    "prefill, says more. For latency under load, run with `--request-rate R` (and `--max-concurrency`).")

# The per-cell tables, in the order the summary shows them.
TABLE_QUERIES = ("throughput", "latency", "token_latency", "prefix_caching", "memory", "utilization", "efficiency",
                 "status")
QUALITY_QUERIES = ("recall", "perplexity")  # shown where quality jobs ran


def render_summary(results: list[SideResults], figures: list[Drawn],
                   comparison: tuple[pa.Table, dict] | None) -> str:
    lines = ["# hybench report", ""]
    for r in results:
        t = r.rows("totals")[0]
        lines.append(f"- {r.side.name or 'Results'}: `{r.side.selection.uri}` ({r.side.selection.describe()}): "
                     f"{cell_text(t['jobs'])} jobs: {cell_text(t['ok'])} ok, {cell_text(t['oom'])} out of memory, "
                     f"{cell_text(t['error'])} error, {cell_text(t['incomplete'])} incomplete.")
    lines += ["", "## Findings", ""]
    for r in results:
        if len(results) > 1:
            lines += [f"### {r.side.label}", ""]
        lines += (findings(r.rows("cells"), r.rows("config_ratios"), r.rows("prefix_caching"))
                  + quality_findings(r.rows("perplexity"), r.rows("recall"), r.rows("cells"))
                  or ["- No cell has results yet."])
        lines += ["", "Notes on the data:", ""]
        notes = data_notes(r.rows("cells"), r.rows("totals")[0], r.skipped, r.duplicated_jobs, r.nan_values)
        lines += [f"- {note}" for note in notes]
        lines.append("")
    if comparison:
        lines += ["### B against A", "", *comparison_findings(comparison[1], comparison[0].to_pylist(),
                                                               results[0].side.description,
                                                               results[1].side.description), ""]
    lines += ["## Figures", ""]
    for figure in figures:
        name = os.path.basename(figure.path)
        title = figure.name.replace("_", " ").capitalize()
        lines += [f"![{title}]({name})" if not name.endswith(".pdf") else f"- [{title} (PDF)]({name})", ""]
    for name in TABLE_QUERIES:
        lines += _section(name, results)
    for name in QUALITY_QUERIES:
        if any(r.rows(name) for r in results):
            lines += _whole_table(name, name.capitalize(), results)
    if comparison:
        lines += ["## Comparison: B against A", "",
                  f"A: {results[0].side.description}; B: {results[1].side.description}. "
                  "Columns `_a`, `_b` and `_ratio` (B / A); a cell run on one side only has the other side empty.",
                  "", *_by_variant(comparison[0].to_pylist(), comparison[0].schema.names)]
    lines += _whole_table("failures", "Jobs that did not end ok", results)
    lines += _whole_table("environment", "Run environment", results)
    return "\n".join(lines).rstrip() + "\n"


def _section(name: str, results: list[SideResults]) -> list[str]:
    if name == "prefix_caching" and not any(r.rows(name) for r in results):
        return []  # no job ran with prefix caching
    lines = [f"## {name.replace('_', ' ').capitalize()}", "", catalog.description(name), ""]
    if name == "latency" and any(math.isinf(c["request_rate"]) for r in results for c in r.rows("cells")):
        lines += [OFFLINE_LATENCY, ""]
    for r in results:
        lines += _by_variant(r.rows(name), r.tables[name].schema.names, r.side.label)
    return lines


def _by_variant(rows: list[dict], columns: list[str], side_label: str = "") -> list[str]:
    shown = [c for c in columns if c not in VARIANT]
    lines = []
    groups = by_variant(rows)
    named = varying(groups)
    for variant, variant_rows in groups.items():
        lines += [f"### {side_label + ' · ' if side_label else ''}{variant_title(variant, named)}", "",
                  markdown_table(shown, variant_rows), ""]
    return lines


def _whole_table(name: str, heading: str, results: list[SideResults]) -> list[str]:
    lines = [f"## {heading}", "", catalog.description(name), ""]
    for r in results:
        rows = r.rows(name)
        if r.side.label and len(results) > 1:
            lines += [f"**{r.side.label}**", ""]
        lines += [markdown_table(r.tables[name].schema.names, rows) if rows else "None.", ""]
    return lines
