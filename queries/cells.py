"""What a row of sql/cells.sql is keyed by, and how such rows group into variants: the model, engine,
window and output length one figure row or one summary table holds, beside config and input length."""
from __future__ import annotations

VARIANT = ("model", "engine", "window", "output_len")
CONFIG_ORDER = ("full", "sliding", "hybrid")


def variant_key(row: dict) -> tuple:
    return tuple(row[c] for c in VARIANT)


def variant_title(key: tuple) -> str:
    model, engine, window, output_len = key
    return f"{model} · window {window} · output {output_len} tokens · engine {engine}"


def config_rank(config: str) -> tuple[int, str]:
    """Sort key that puts full, sliding, hybrid first, in that order."""
    return (CONFIG_ORDER.index(config) if config in CONFIG_ORDER else len(CONFIG_ORDER), str(config))


def by_variant(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Rows per variant, variants sorted. Full attention ignores the window, so a sweep runs it under
    one window only: those rows also join every other window of their model, engine and output
    length that has no full rows of its own (as config_ratios.sql pairs them)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(variant_key(row), []).append(row)
    full_windows: dict[tuple, int] = {}  # (model, engine, output_len) -> the window full ran under
    for model, engine, window, output_len in (k for k, g in groups.items() if any(r["config"] == "full" for r in g)):
        key = (model, engine, output_len)
        full_windows[key] = window if key not in full_windows else min(full_windows[key], window)
    for (model, engine, window, output_len), group in groups.items():
        shared = full_windows.get((model, engine, output_len))
        if shared is not None and not any(r["config"] == "full" for r in group):
            group += [r for r in groups[(model, engine, shared, output_len)] if r["config"] == "full"]
    return dict(sorted(groups.items(), key=lambda item: tuple(map(str, item[0]))))
