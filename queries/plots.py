"""The report's figures, drawn from per-cell rows that SQL computed (matplotlib, Agg canvas, no pyplot).

Every figure has a row of panels per variant (model, engine, window, output length, and workload:
prefix caching on or off, request rate, concurrency limit, dataset); in a comparison,
side A's row then side B's, one y axis per metric across both. Each config keeps its colour in every
figure; a cell whose jobs all failed is marked with its status where its bar or point would be.
Measured throughput and latency carry error bars: the 95% interval of the cell's samples (its jobs under
--repeats, else its job's iterations; none where a cell has one sample). Another engine (`--engine hf`) is drawn as a config of its own,
"full (hf)", on the same axes as this engine's configs. A figure uses one y scale (log or linear) for
all its panels. Each figure returns the series it drew, so that tests check the data behind it, not
only the file.
"""
from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from hybench.queries.cells import by_variant, config_rank, variant_title, varying

# Okabe-Ito colours: distinct for colour-blind readers and in greyscale print.
CONFIG_COLORS = {"full": "#0072B2", "sliding": "#E69F00", "hybrid": "#009E73"}
_OTHER_COLORS = ("#CC79A7", "#56B4E9", "#D55E00", "#000000")
_LOG_SPAN = 20  # a log axis once the largest value is this many times the smallest
_PERCENTILES = (("mean", "latency_mean_ms"), ("P50", "latency_p50_ms"), ("P90", "latency_p90_ms"),
                ("P99", "latency_p99_ms"))
# The interval columns (cells.sql, compare.py) behind a plotted column's error bars.
_INTERVALS = {"throughput_tok_s": ("throughput_ci_low", "throughput_ci_high"),
              "latency_p50_ms": ("latency_p50_ci_low", "latency_p50_ci_high"),
              "latency_p99_ms": ("latency_p99_ci_low", "latency_p99_ci_high")}
_INTERVALS |= {f"{m}_ratio": (f"{m}_ratio_ci_low", f"{m}_ratio_ci_high")
               for m in ("throughput_tok_s", "latency_p50_ms", "latency_p99_ms", "tpot_p50_ms")}
_ENGINE = "hybrid"  # this engine; a peer's cells are drawn as configs named "<config> (<engine>)"
_LINE_STYLES = ("-", "--", ":")
_FAILED = "failed"
_BY_LENGTH = "input length (tokens)"
_MAX_COLUMNS = 4
_MIN_WIDTH = 9.0  # inches: room for the title and legend of a one-panel figure
_TITLE_CHARS_PER_INCH = 12  # of a 9-point title, so that wrapped titles fit their panel


@dataclass(frozen=True)
class Series:
    """One config's values in one panel: y[i] belongs to x[i]; None where the cell has no value."""

    figure: str
    panel: str
    config: str
    column: str
    x: tuple
    y: tuple


@dataclass(frozen=True)
class Drawn:
    name: str
    path: str
    series: tuple[Series, ...]


@dataclass(frozen=True)
class Panel:
    """One metric's panel: `draw(ax, cells, colors)` plots it and returns what it drew as
    (config, column, x, y) tuples."""

    title: str
    ylabel: str
    xlabel: str
    draw: Callable[[Axes, list[dict], dict[str, str]], list[tuple]]


def config_colors(configs: Sequence[str]) -> dict[str, str]:
    """The fixed colour of each config; configs beyond the three known ones get the spare colours."""
    others = iter(_OTHER_COLORS * len(configs))
    return {c: CONFIG_COLORS.get(c) or next(others) for c in sorted(set(configs), key=config_rank)}


def draw_report_figures(sides: list[tuple[str, list[dict]]], out_dir: str, fmt: str,
                        comparison: list[dict] | None = None) -> list[Drawn]:
    """Every report figure for the sides' (label, cells), and the B / A figure of a comparison's rows."""
    sides = [(label, [_as_config(c) for c in side_cells]) for label, side_cells in sides]
    cells = [c for _, side_cells in sides for c in side_cells]
    colors = config_colors([c["config"] for c in cells])
    lengths = sorted({c["input_len"] for c in cells if c["input_len"] is not None})
    state_key = [Patch(facecolor="white", edgecolor="grey", hatch="///", label="SSM state (stacked, hatched)")]
    percentile_key = [Line2D([], [], color="grey", linestyle="-", marker="o", label="P50"),
                      Line2D([], [], color="grey", linestyle="--", marker="^", label="P99")]
    figures = [
        ("memory_comparison", "Memory: KV in use (analytic), measured peak, and sequences that fit", state_key, [
            Panel("KV cache + SSM state in use at peak (analytic)", "GiB", _BY_LENGTH,
                  partial(_bars, columns=("kv_used_gib", "ssm_state_gib"))),
            Panel("Peak memory allocated by torch (measured)", "GiB", _BY_LENGTH,
                  partial(_bars, columns=("peak_torch_gib",))),
            Panel("Sequences that fit in the KV pool", "sequences", _BY_LENGTH,
                  partial(_bars, columns=("kv_capacity_seqs",))),
        ], sides),
        ("throughput_comparison", "Throughput over the measured wall time", [], [
            Panel("Token throughput (prompt + output)", "tokens/s", _BY_LENGTH,
                  partial(_bars, columns=("throughput_tok_s",))),
            Panel("Request throughput", "requests/s", _BY_LENGTH, partial(_bars, columns=("requests_per_s",))),
        ], sides),
        ("latency_percentiles", "End-to-end latency over requests: mean and percentiles", [], [
            Panel(f"input length {n} tokens", "latency (ms)", "statistic over requests (n requests, distinct values)",
                  partial(_percentile_bars, input_len=n)) for n in lengths
        ], sides),
        ("latency_vs_input_length", "Latency against input length", percentile_key, [
            Panel("End-to-end latency", "ms", _BY_LENGTH,
                  partial(_lines, columns=("latency_p50_ms", "latency_p99_ms"))),
            Panel("Time to first token (TTFT)", "ms", _BY_LENGTH,
                  partial(_lines, columns=("ttft_p50_ms", "ttft_p99_ms"))),
            Panel("Time per output token (TPOT)", "ms", _BY_LENGTH,
                  partial(_lines, columns=("tpot_p50_ms", "tpot_p99_ms"))),
        ], sides),
        ("memory_efficiency", "Memory efficiency: throughput per GiB the job needed", [], [
            Panel("Throughput per GiB (weights + SSM params + KV and SSM state at peak)", "tokens/s per GiB",
                  _BY_LENGTH, partial(_bars, columns=("tok_s_per_gib",))),
        ], sides),
    ]
    if comparison:
        figures.append(("compare_ratio", f"B against A, ratio B / A (1 = equal); {sides[1][0]}; {sides[0][0]}", [], [
            Panel("Token throughput, B / A", "ratio B / A", _BY_LENGTH,
                  partial(_lines, columns=("throughput_tok_s_ratio",), reference=1.0)),
            Panel("P99 end-to-end latency, B / A", "ratio B / A", _BY_LENGTH,
                  partial(_lines, columns=("latency_p99_ms_ratio",), reference=1.0)),
            Panel("P50 time per output token, B / A", "ratio B / A", _BY_LENGTH,
                  partial(_lines, columns=("tpot_p50_ms_ratio",), reference=1.0)),
        ], [("", comparison)]))
    return [_figure(name, title, panels, data, colors, key, out_dir, fmt)
            for name, title, key, panels, data in figures]


def _as_config(cell: dict) -> dict:
    """A peer engine's cell as a config of this engine's variant, so it shares their axes."""
    if cell.get("engine") in (None, _ENGINE):
        return cell
    return cell | {"config": f"{cell['config']} ({cell['engine']})", "engine": _ENGINE}


def _errorbars(ax: Axes, xs: list[float], cells: list[dict | None], column: str, color: str) -> None:
    """The 95% interval of `column` at each x, where the cell has one."""
    if column not in _INTERVALS:
        return
    low, high = _INTERVALS[column]
    for x, cell in zip(xs, cells):
        if cell is not None and cell.get(low) is not None and cell.get(high) is not None and cell.get(column) is not None:
            value = cell[column]
            ax.errorbar([x], [value], yerr=[[max(value - cell[low], 0)], [max(cell[high] - value, 0)]],
                        color="black", ecolor="0.2", capsize=3, linewidth=1, zorder=5)


def wrap(text: str, width: int) -> str:
    """Each line of `text` wrapped at `width` characters, words kept whole."""
    return "\n".join(part for line in text.splitlines() for part in textwrap.wrap(line, width, break_long_words=False))


def _figure(name: str, title: str, panels: list[Panel], sides: list[tuple[str, list[dict]]],
            colors: dict[str, str], style_key: Sequence, out_dir: str, fmt: str) -> Drawn:
    """Rows: variant, then side, then panels wrapped at _MAX_COLUMNS; y shared across sides per panel."""
    groups = [(side, by_variant(side_cells)) for side, side_cells in sides]
    variants = sorted({v for _, side_groups in groups for v in side_groups}, key=lambda v: tuple(map(str, v)))
    shown = varying(variants)
    chunks = [panels[i:i + _MAX_COLUMNS] for i in range(0, len(panels), _MAX_COLUMNS)] or [[]]
    ncols = max(len(chunks[0]), 1)
    nrows = max(len(variants), 1) * len(sides) * len(chunks)
    width = max(4.8 * ncols, _MIN_WIDTH)
    fig = Figure(figsize=(width, 3.9 * nrows + 1.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    series: list[Series] = []
    shared: dict[tuple, list[Axes]] = {}
    row = 0
    for variant in variants:
        for side, side_groups in groups:
            cells = side_groups.get(variant, [])
            for chunk in chunks:
                for col in range(ncols):
                    ax = axes[row][col]
                    if col >= len(chunk):
                        ax.set_visible(False)
                        continue
                    panel = chunk[col]
                    panel_title = f"{side}\n{panel.title}" if side else panel.title
                    if len(variants) > 1:
                        panel_title += "\n" + variant_title(variant, shown)
                    ax.set_title(wrap(panel_title, int(_TITLE_CHARS_PER_INCH * width / ncols)), fontsize=9)
                    ax.set_ylabel(panel.ylabel)
                    ax.set_xlabel(panel.xlabel)
                    ax.grid(axis="y", alpha=0.3)
                    shared.setdefault((variant, panel.title), []).append(ax)
                    if not cells:
                        ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
                        continue
                    drawn = [Series(name, panel_title, config, column, tuple(x), tuple(y))
                             for config, column, x, y in panel.draw(ax, cells, colors)]
                    if not any(isinstance(v, (int, float)) for d in drawn if d.column != _FAILED for v in d.y):
                        ax.set_ylim(0, 1)  # only failed cells: no scale to show
                        ax.set_yticks([])
                    series += drawn
                row += 1
    drawn_axes = [a for group in shared.values() for a in group]
    if any(a.get_yscale() == "log" for a in drawn_axes):  # one scale per figure
        for a in drawn_axes:
            if a.has_data():
                a.set_yscale("log")
    for group in shared.values():  # one y axis per metric across the sides, so heights compare
        if len(group) > 1:
            _share_y(group)
    if len(variants) == 1:
        title += "\n" + variant_title(variants[0])
    fig.suptitle(wrap(title, int(_TITLE_CHARS_PER_INCH * width * 0.9)), fontsize=12)
    _legend(fig, series, colors, style_key, columns=max(2, int(width / 2.2)))
    path = os.path.join(out_dir, f"{name}.{fmt}")
    fig.savefig(path, dpi=100)
    return Drawn(name, path, tuple(series))


def _share_y(group: list[Axes]) -> None:
    if any(a.get_yscale() == "log" for a in group):
        for a in group:
            a.set_yscale("log")
    low = min(a.get_ylim()[0] for a in group)
    high = max(a.get_ylim()[1] for a in group)
    for a in group:
        a.set_ylim(low, high)


def _legend(fig: Figure, series: list[Series], colors: dict[str, str], style_key: Sequence, columns: int) -> None:
    handles = [Patch(color=colors[c], label=c) for c in sorted({s.config for s in series}, key=config_rank)]
    handles += list(style_key)
    if any(s.column == _FAILED for s in series):
        handles.append(Line2D([], [], color="grey", marker="x", linestyle="none",
                              label="failed (OOM, error or incomplete)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), columns), frameon=False)


def _failed(cell: dict) -> bool:
    """A cell none of whose jobs ended ok (rows of a comparison carry no job counts)."""
    return cell.get("ok") == 0


def _by_config(cells: list[dict]) -> dict[str, dict]:
    """config -> {input_len: cell}"""
    out: dict[str, dict] = {}
    for cell in sorted(cells, key=lambda c: config_rank(c["config"])):
        out.setdefault(cell["config"], {})[cell["input_len"]] = cell
    return out


def _mark_failed(ax: Axes, x: float, cell: dict, color: str) -> None:
    """A failed cell: a large cross on the axis and its status in bold red, where its value would be."""
    ax.plot([x], [0.03], marker="X", color=color, markeredgecolor="#D55E00", markersize=11,
            transform=ax.get_xaxis_transform(), linestyle="none", clip_on=False, zorder=6)
    ax.text(x, 0.08, cell["status"].upper(), rotation=90, ha="center", va="bottom", fontsize=8,
            fontweight="bold", color="#D55E00", transform=ax.get_xaxis_transform(), zorder=6)


def _scale(ax: Axes, values: list[float]) -> None:
    positive = [v for v in values if v is not None and v > 0]
    if positive and max(positive) / min(positive) >= _LOG_SPAN:
        ax.set_yscale("log")


def _bars(ax: Axes, cells: list[dict], colors: dict[str, str], columns: tuple[str, ...]) -> list[tuple]:
    """Grouped bars: one group per input length, one bar per config; later columns stack, hatched."""
    lengths = sorted({c["input_len"] for c in cells})
    by_config = _by_config(cells)
    width = 0.8 / len(by_config)
    drawn, totals = [], []
    for i, (config, by_len) in enumerate(by_config.items()):
        xs = [j - 0.4 + width * (i + 0.5) for j in range(len(lengths))]
        bottoms = [0.0] * len(lengths)
        for k, column in enumerate(columns):
            values = [by_len[n].get(column) if n in by_len else None for n in lengths]
            heights = [v or 0.0 for v in values]
            if any(v is not None for v in values):
                ax.bar(xs, heights, width, bottom=bottoms, color=colors[config], edgecolor="white",
                       hatch="///" if k else None, alpha=0.55 if k else 1.0)
                if len(columns) == 1:
                    _errorbars(ax, xs, [by_len.get(n) for n in lengths], column, colors[config])
            drawn.append((config, column, lengths, values))
            bottoms = [b + h for b, h in zip(bottoms, heights)]
        totals += bottoms
        failed = [(x, by_len[n]) for x, n in zip(xs, lengths) if n in by_len and _failed(by_len[n])]
        for x, cell in failed:
            _mark_failed(ax, x, cell, colors[config])
        if failed:
            drawn.append((config, _FAILED, [c["input_len"] for _, c in failed], [c["status"] for _, c in failed]))
    ax.set_xticks(range(len(lengths)), [str(n) for n in lengths], rotation=45 if len(lengths) > 6 else 0)
    ax.set_xlim(-0.5, len(lengths) - 0.5)
    if not any(v is not None for *_, values in drawn for v in values):  # e.g. GPU memory on a CPU run
        ax.text(0.5, 0.5, "not measured on this device", ha="center", va="center", transform=ax.transAxes,
                color="0.4")
    _scale(ax, totals)
    return drawn


def _percentile_bars(ax: Axes, cells: list[dict], colors: dict[str, str], input_len: int) -> list[tuple]:
    """Mean, P50, P90, P99 of one input length, one bar per config in each."""
    at_len = [c for c in cells if c["input_len"] == input_len]
    if not at_len:
        ax.text(0.5, 0.5, "not run at this length", ha="center", va="center", transform=ax.transAxes)
        return []
    by_config = _by_config(at_len)
    width = 0.8 / len(by_config)
    names = [name for name, _ in _PERCENTILES]
    drawn, values_all = [], []
    for i, (config, by_len) in enumerate(by_config.items()):
        cell = by_len[input_len]
        xs = [j - 0.4 + width * (i + 0.5) for j in range(len(_PERCENTILES))]
        values = [cell.get(column) for _, column in _PERCENTILES]
        if _failed(cell):
            _mark_failed(ax, xs[0], cell, colors[config])
            drawn.append((config, _FAILED, [input_len], [cell["status"]]))
        else:
            ax.bar(xs, [v or 0.0 for v in values], width, color=colors[config], edgecolor="white")
            for x, (_, column) in zip(xs, _PERCENTILES):
                _errorbars(ax, [x], [cell], column, colors[config])
        drawn.append((config, "latency_ms", names, values))
        values_all += values
    ax.set_xticks(range(len(names)), names)
    ax.set_xlim(-0.5, len(names) - 0.5)
    counts = [f"{config}: {cell[input_len].get('requests') or 0} req, {cell[input_len].get('e2e_distinct') or 0} distinct"
              for config, cell in by_config.items() if not _failed(cell[input_len])]
    ax.text(0.02, 0.98, "\n".join(counts), transform=ax.transAxes, ha="left", va="top", fontsize=7, color="0.3")
    _scale(ax, values_all)
    return drawn


def _lines(ax: Axes, cells: list[dict], colors: dict[str, str], columns: tuple[str, ...],
           reference: float | None = None) -> list[tuple]:
    """One line per config and column against input length (log2 axis), styles by column."""
    drawn, values_all = [], []
    for config, by_len in _by_config(cells).items():
        lengths = sorted(by_len)
        for style, column in zip(_LINE_STYLES, columns):
            values = [by_len[n].get(column) for n in lengths]
            points = [(n, v) for n, v in zip(lengths, values) if v is not None]
            if points:  # later columns (P99) on top, so a P99 equal to P50 still shows
                ax.plot(*zip(*points), color=colors[config], linestyle=style, marker="o" if style == "-" else "^",
                        markersize=4 if style == "-" else 6, zorder=3 + columns.index(column))
                _errorbars(ax, lengths, [by_len[n] for n in lengths], column, colors[config])
            drawn.append((config, column, lengths, values))
            values_all += values
        failed = [by_len[n] for n in lengths if _failed(by_len[n])]
        for cell in failed:
            _mark_failed(ax, cell["input_len"], cell, colors[config])
        if failed:
            drawn.append((config, _FAILED, [c["input_len"] for c in failed], [c["status"] for c in failed]))
    lengths = sorted({c["input_len"] for c in cells})
    if len(lengths) > 1 and lengths[0] > 0 and lengths[-1] / lengths[0] >= 4:
        ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(n) for n in lengths], rotation=45 if len(lengths) > 6 else 0)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
    if reference is not None:
        ax.axhline(reference, color="grey", linewidth=1, linestyle=":")
    else:
        _scale(ax, values_all)
    return drawn
