"""The report's quality figures: what each layout keeps (perplexity against position, recall against
distance) and what it pays for it (KV memory against recall beyond the window).

Rows come from the shipped perplexity and recall queries and the cells query. Recall is drawn twice:
its accuracy, and its NLL beside a uniform guess, where a layout that cannot see the block is
confidently wrong (far above ln V) rather than unsure. A hybrid whose history
branch was calibrated (`ssm_init` calibrated:<sha>) is a line of its own, "hybrid (calibrated)". A panel
per model, window and input length; the window W is marked on every x axis, and the reference a model
without any context would reach (a uniform guess: ln V nats, chance 1/V) on every y axis. Each figure
returns the series it drew, as plots.py's do, so that tests check the data behind it.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from itertools import groupby

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from hybench.queries.cells import config_rank
from hybench.queries.plots import Drawn, Series, config_colors, wrap

_COLUMNS = 3
_REFERENCE = dict(color="0.35", linewidth=1, linestyle=":")
_WINDOW_MARK = dict(color="0.5", linewidth=1, linestyle="--")


def quality_label(row: dict) -> str:
    """The line a row belongs to: its config, a calibrated hybrid apart."""
    calibrated = (row.get("ssm_init") or "").startswith("calibrated")
    return f"{row['config']} (calibrated)" if calibrated else row["config"]


def label_rank(label: str) -> tuple:
    """full, sliding, hybrid, then a calibrated hybrid."""
    return config_rank(label.split(" ")[0]), label


def _panel_key(row: dict) -> tuple:
    return row["model"], row["window"], row["input_len"]


def _panel_title(key: tuple) -> str:
    model, window, input_len = key
    return f"{model}, W = {window}, input {input_len} tokens"


def draw_quality_figures(perplexity: list[dict], recall: list[dict], cells: list[dict], out_dir: str,
                         fmt: str, suffix: str = "") -> list[Drawn]:
    """The quality figures the rows support (none for a store without quality jobs); `suffix` ends each
    file's name (a comparison's side)."""
    labels = sorted({quality_label(r) for r in [*perplexity, *recall]}, key=label_rank)
    colors = config_colors(labels)
    figures = []
    if perplexity:
        figures.append(_figure(f"perplexity_vs_position{suffix}", "Perplexity against position: mean NLL per token of "
                               "each position bucket (95% interval over sequences)", perplexity, colors,
                               _perplexity_panel, "uniform guess (ln V)", out_dir, fmt))
    if recall:
        figures.append(_figure(f"recall_vs_distance{suffix}", "Recall against distance: top-1 accuracy on the repeated "
                               "block (95% interval over sequences)", recall, colors, _recall_panel,
                               "chance (1 / V)", out_dir, fmt))
        figures.append(_figure(f"recall_nll_vs_distance{suffix}", "Recall against distance: mean NLL per token on "
                               "the repeated block (95% interval over sequences); above the uniform guess a layout "
                               "is confidently wrong", recall, colors, _recall_nll_panel, "uniform guess (ln V)",
                               out_dir, fmt))
        points = _longest_input(cost_quality_points(recall, cells))
        if points:
            figures.append(_figure(f"cost_quality{suffix}", "What each layout keeps for what it holds: recall beyond "
                                   "W against KV + SSM state in use at peak (each model's longest input)", points,
                                   colors, _cost_panel, None, out_dir, fmt))
    return figures


def cost_quality_points(recall: list[dict], cells: list[dict]) -> list[dict]:
    """One point per recall cell (model, window, input length, config, history init) that a throughput cell
    of the same model, window, config and input length prices: its recall accuracy over every distance of
    W or more (the source of the repeat then lies outside the window; token-weighted), and that cell's
    KV + SSM state in use at peak."""
    cost = {}
    for cell in cells:
        if cell.get("kv_used_gib") is not None and cell.get("engine") in (None, "hybrid"):
            key = (cell["model"], cell["window"], cell["config"], cell["input_len"])
            cost.setdefault(key, cell["kv_used_gib"] + (cell.get("ssm_state_gib") or 0.0))
    points = []
    beyond = sorted((r for r in recall if r["distance_w"] >= 1), key=lambda r: (*_panel_key(r), quality_label(r)))
    for (*key, label), rows in groupby(beyond, key=lambda r: (*_panel_key(r), quality_label(r))):
        rows = list(rows)
        gib = cost.get((key[0], key[1], rows[0]["config"], key[2]))
        tokens = sum(r["tokens"] for r in rows)
        if gib is None or not tokens:
            continue
        points.append(dict(rows[0], state_gib=gib, accuracy=sum(r["accuracy"] * r["tokens"] for r in rows) / tokens))
    return points


def _longest_input(points: list[dict]) -> list[dict]:
    """Each model's points at its longest input length: where the layouts' memory differs most."""
    longest: dict[str, int] = {}
    for p in points:
        longest[p["model"]] = max(longest.get(p["model"], 0), p["input_len"])
    return [p for p in points if p["input_len"] == longest[p["model"]]]


def _figure(name: str, title: str, rows: list[dict], colors: dict[str, str],
            draw: Callable[[Axes, list[dict], dict[str, str]], list[tuple]], reference: str | None,
            out_dir: str, fmt: str) -> Drawn:
    cost_figure = draw is _cost_panel
    key = (lambda r: (r["model"], r["input_len"])) if cost_figure else _panel_key
    panels = {k: list(group) for k, group in groupby(sorted(rows, key=key), key=key)}
    ncols = min(len(panels), _COLUMNS)
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(max(5.2 * ncols, 9.0), 4.2 * nrows + 1.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    series: list[Series] = []
    for ax, (panel, panel_rows) in zip(axes, panels.items()):
        panel_title = f"{panel[0]}, input {panel[1]} tokens" if cost_figure else _panel_title(panel)
        ax.set_title(panel_title, fontsize=9)
        ax.grid(alpha=0.3)
        series += [Series(name, panel_title, label, column, tuple(x), tuple(y))
                   for label, column, x, y in draw(ax, panel_rows, colors)]
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(wrap(title, int(11 * fig.get_figwidth())), fontsize=12)  # ~11 characters an inch at 12 pt
    handles = [Patch(color=colors[label], label=label) for label in sorted({s.config for s in series}, key=label_rank)]
    if reference:
        handles.append(Line2D([], [], label=reference, **_REFERENCE))
    if not cost_figure:
        handles.append(Line2D([], [], label="the window W", **_WINDOW_MARK))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), frameon=False)
    path = os.path.join(out_dir, f"{name}.{fmt}")
    fig.savefig(path, dpi=100)
    return Drawn(name, path, tuple(series))


def _lines(ax: Axes, rows: list[dict], colors: dict[str, str], x_of: Callable[[dict], float], column: str,
           low: str, high: str, scale: float = 1.0) -> list[tuple]:
    drawn = []
    ordered = sorted(rows, key=lambda r: (label_rank(quality_label(r)), x_of(r)))
    for rank, (label, group) in enumerate(groupby(ordered, key=quality_label)):
        group = list(group)
        xs, ys = [x_of(r) for r in group], [r[column] for r in group]
        # Earlier lines wider, so that a line hidden under a later one with the same values still shows.
        ax.plot(xs, [y * scale for y in ys], color=colors[label], marker="o", markersize=4,
                linewidth=max(4.0 - 1.0 * rank, 1.2), linestyle="--" if "calibrated" in label else "-", zorder=3)
        for x, r in zip(xs, group):
            if r.get(low) is not None and r.get(high) is not None:
                ax.errorbar([x], [r[column] * scale], yerr=[[max(r[column] - r[low], 0) * scale],
                                                             [max(r[high] - r[column], 0) * scale]],
                            color=colors[label], capsize=3, linewidth=1, zorder=4)
        drawn.append((label, column, xs, ys))
    return drawn


def _vocab(rows: list[dict]) -> int | None:
    sizes = [r["vocab_size"] for r in rows if r.get("vocab_size")]
    return max(sizes) if sizes else None


def _perplexity_panel(ax: Axes, rows: list[dict], colors: dict[str, str]) -> list[tuple]:
    """NLL per position bucket (categorical x, in units of W), the window's end marked."""
    buckets = sorted({(r["bucket_start_w"], r["bucket_end_w"]) for r in rows})
    position = {bucket: i for i, bucket in enumerate(buckets)}
    drawn = _lines(ax, rows, colors, lambda r: position[(r["bucket_start_w"], r["bucket_end_w"])],
                   "nll_mean", "nll_ci_low", "nll_ci_high")
    ax.set_xticks(range(len(buckets)), [f"{s:g}-{e:g}" for s, e in buckets])
    ax.set_xlabel("position, in units of W (bucket)")
    ax.set_ylabel("NLL per token (nats)")
    beyond = [i for i, (start, _) in enumerate(buckets) if start >= 1]
    if beyond:
        ax.axvline(beyond[0] - 0.5, **_WINDOW_MARK)
    vocab = _vocab(rows)
    if vocab:
        ax.axhline(math.log(vocab), **_REFERENCE)
    return drawn


def _recall_panel(ax: Axes, rows: list[dict], colors: dict[str, str]) -> list[tuple]:
    """Top-1 accuracy (%) against distance in units of W (log2 axis), W marked."""
    drawn = _lines(ax, rows, colors, lambda r: r["distance_w"], "accuracy", "accuracy_ci_low", "accuracy_ci_high",
                   scale=100.0)
    _distance_axis(ax, rows)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(-3, 103)
    vocab = _vocab(rows)
    if vocab:
        ax.axhline(100.0 / vocab, **_REFERENCE)
    return drawn


def _recall_nll_panel(ax: Axes, rows: list[dict], colors: dict[str, str]) -> list[tuple]:
    """NLL (nats) against distance in units of W (log2 axis), W and a uniform guess marked."""
    drawn = _lines(ax, rows, colors, lambda r: r["distance_w"], "nll_mean", "nll_ci_low", "nll_ci_high")
    _distance_axis(ax, rows)
    ax.set_ylabel("NLL per token on the repeated block (nats)")
    vocab = _vocab(rows)
    if vocab:
        ax.axhline(math.log(vocab), **_REFERENCE)
    return drawn


def _distance_axis(ax: Axes, rows: list[dict]) -> None:
    distances = sorted({r["distance_w"] for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_xticks(distances, [f"{d:g}" for d in distances])
    ax.minorticks_off()
    ax.set_xlabel("distance between the block and its repeat, in units of W")
    ax.axvline(1, **_WINDOW_MARK)


def _cost_panel(ax: Axes, rows: list[dict], colors: dict[str, str]) -> list[tuple]:
    """A point per config and window: memory held (x, MiB under a GiB) against recall beyond W (y)."""
    unit, scale = ("GiB", 1.0) if max(r["state_gib"] for r in rows) >= 1 else ("MiB", 1024.0)
    drawn = []
    for rank, (label, group) in enumerate(groupby(sorted(rows, key=lambda r: (label_rank(quality_label(r)), r["window"])),
                                                  key=quality_label)):
        group = list(group)
        xs, ys = [r["state_gib"] for r in group], [r["accuracy"] for r in group]
        ax.scatter([scale * x for x in xs], [100 * y for y in ys], color=colors[label], s=40, zorder=3,
                   marker="D" if "calibrated" in label else "o")
        for r in group:
            if r["config"] != "full":  # full's window changes nothing it holds
                ax.annotate(f"{label}, W={r['window']}", (scale * r["state_gib"], 100 * r["accuracy"]),
                            textcoords="offset points", xytext=(6, 4 + 11 * rank), fontsize=7, color=colors[label])
        drawn.append((label, "accuracy", xs, ys))
    ax.set_xlabel(f"KV + SSM state in use at peak ({unit}, analytic)")
    ax.set_ylabel("top-1 recall at distances of W or more (%)")
    ax.set_ylim(-3, 103)
    ax.set_xlim(left=0)  # from zero: the distance to full's point is the memory a layout saves
    return drawn
