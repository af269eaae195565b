"""The report's quality findings in plain words: what each layout keeps inside and beyond the window
(recall, perplexity), each figure with its 95% interval over sequences, beside what it holds in memory.

A config is said to differ from another only where their intervals do not overlap; otherwise the line
says "no difference beyond noise" (SAME), as the cost findings do. Recall inside the window is read at
the longest distance under W, beyond it at 2W (else the shortest distance of W or more: from there on
the repeated block's source lies outside the window); perplexity in the first and the farthest bucket.
"""
from __future__ import annotations

import math
from itertools import groupby

from hybench.queries.findings import SAME
from hybench.queries.quality_plots import cost_quality_points, label_rank, quality_label


def quality_findings(perplexity: list[dict], recall: list[dict], cells: list[dict]) -> list[str]:
    """Markdown bullets, one per model, window and input length of each quality task."""
    memory = {(p["model"], p["window"], p["input_len"], quality_label(p)): p["state_gib"]
              for p in cost_quality_points(recall, cells)}
    lines = [_recall_line(key, list(rows), memory) for key, rows in _panels(recall)]
    lines += [_perplexity_line(key, list(rows)) for key, rows in _panels(perplexity)]
    return [f"- {line}" for line in lines if line]


def _panels(rows: list[dict]):
    key = lambda r: (r["model"], r["window"], r["input_len"])  # noqa: E731
    return groupby(sorted(rows, key=key), key=key)


def _by_label(rows: list[dict]) -> dict[str, dict]:
    labels = sorted({quality_label(r) for r in rows}, key=label_rank)
    return {label: next(r for r in rows if quality_label(r) == label) for label in labels}


def _overlap(a: dict, b: dict, low: str, high: str) -> bool:
    if None in (a.get(low), a.get(high), b.get(low), b.get(high)):
        return False
    return a[low] <= b[high] and b[low] <= a[high]


def _percent(row: dict) -> str:
    low, high = row.get("accuracy_ci_low"), row.get("accuracy_ci_high")
    text = f"{100 * row['accuracy']:.1f}%"
    return text + (f" [{100 * max(low, 0):.1f}, {100 * min(high, 1):.1f}]" if low is not None and high is not None else "")


def _versus(rows: dict[str, dict], label: str, low: str, high: str) -> str:
    """Which of full (and, for a hybrid, sliding) `label` does not differ from beyond noise."""
    same = [other for other in ("full", "sliding")
            if other != label and other in rows and (other == "full" or label.startswith("hybrid"))
            and _overlap(rows[label], rows[other], low, high)]
    return f" ({SAME} from {' or '.join(same)})" if same else ""


def _recall_line(key: tuple, rows: list[dict], memory: dict) -> str:
    model, window, input_len = key
    inside = [r for r in rows if r["distance_w"] < 1]
    beyond = [r for r in rows if r["distance_w"] >= 1]
    parts = []
    for where, chosen in (("inside the window", inside), ("beyond it", beyond)):
        if not chosen:
            continue
        distances = {r["distance_w"] for r in chosen}
        distance = max(distances) if where != "beyond it" else 2.0 if 2.0 in distances else min(distances)
        at = _by_label([r for r in chosen if r["distance_w"] == distance])
        texts = [f"{label} {_percent(r)}{_versus(at, label, 'accuracy_ci_low', 'accuracy_ci_high')}"
                 for label, r in at.items()]
        parts.append(f"{where} (distance {distance:g}W): " + ", ".join(texts))
    vocab = max((r.get("vocab_size") or 0 for r in rows), default=0)
    chance = f"; chance is {100 / vocab:.2g}%" if vocab else ""
    full = memory.get((model, window, input_len, "full"))
    held = [f"{label} {gib / full:.2f}x" for (m, w, n, label), gib in sorted(memory.items(), key=lambda i: label_rank(i[0][3]))
            if (m, w, n) == key and label != "full" and full]
    cost = f". KV + SSM state in use at peak against full: {', '.join(held)}" if held else ""
    return (f"Recall, {model}, W = {window}, input {input_len} (top-1 on the repeated block, 95% interval "
            f"over sequences{chance}): " + "; ".join(parts) + cost + ".")


def _perplexity_line(key: tuple, rows: list[dict]) -> str:
    model, window, input_len = key
    parts = []
    for where, pick in (("inside the window", min), ("farthest", max)):
        start = pick(r["bucket_start_w"] for r in rows)
        if where == "farthest" and start < 1:
            continue
        at = _by_label([r for r in rows if r["bucket_start_w"] == start])
        end = next(iter(at.values()))["bucket_end_w"]
        texts = [f"{label} {r['nll_mean']:.3f}" + (f" [{r['nll_ci_low']:.3f}, {r['nll_ci_high']:.3f}]"
                                                   if r.get("nll_ci_low") is not None else "")
                 + _versus(at, label, "nll_ci_low", "nll_ci_high") for label, r in at.items()]
        parts.append(f"{where} ({start:g}-{end:g}W): " + ", ".join(texts))
    vocab = max((r.get("vocab_size") or 0 for r in rows), default=0)
    uniform = f"; a uniform guess scores {math.log(vocab):.2f}" if vocab else ""
    return (f"Perplexity, {model}, W = {window}, input {input_len} (mean NLL per token in nats, 95% interval over "
            f"sequences{uniform}): " + "; ".join(parts) + ".")
