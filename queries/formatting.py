"""Values as text, in one style for the terminal table and the Markdown report."""
from __future__ import annotations

import math
from datetime import datetime
from typing import Any

_LIST_ITEMS_SHOWN = 4


def cell_text(value: Any) -> str:
    """Short, readable text of one value: a few significant digits, '-' for missing."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        magnitude = abs(value)
        if magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 100:
            return f"{value:.1f}"
        if magnitude >= 1 or value == 0:
            return f"{value:.2f}"
        return f"{value:.3g}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, list):
        shown = ", ".join(cell_text(v) for v in value[:_LIST_ITEMS_SHOWN])
        return f"[{shown}{', ...' if len(value) > _LIST_ITEMS_SHOWN else ''}]"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numeric_columns(columns: list[str], rows: list[dict]) -> set[str]:
    return {c for c in columns if any(_is_number(r.get(c)) for r in rows)}


def text_table(columns: list[str], rows: list[dict]) -> str:
    """An aligned plain-text table, numbers right-aligned."""
    numeric = _numeric_columns(columns, rows)
    texts = [[cell_text(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(t[i]) for t in texts]) for i, c in enumerate(columns)]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.rjust(w) if c in numeric else cell.ljust(w)
                         for c, cell, w in zip(columns, cells, widths)).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(t) for t in texts])


def markdown_table(columns: list[str], rows: list[dict]) -> str:
    numeric = _numeric_columns(columns, rows)

    def escape(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---:" if c in numeric else "---" for c in columns) + "|"
    body = ["| " + " | ".join(escape(cell_text(row.get(c))) for c in columns) + " |" for row in rows]
    return "\n".join([head, rule] + body)
