"""What a row of sql/cells.sql is keyed by, and how such rows group into variants: the model, engine,
window, output length and workload (prefix caching, request rate, concurrency limit, dataset) one
figure row or one summary table holds, beside config and input length."""
from __future__ import annotations

import math

# The workload columns of the jobs table that define a job beside its key (they are in its job id).
# cells.sql reads a store without them (older versions) as their defaults: caching off, offline
# (request rate inf), no concurrency limit, seeded random prompts (no dataset).
WORKLOAD = ("enable_prefix_caching", "request_rate", "concurrency_limit", "dataset_sha256")
WORKLOAD_DEFAULTS = {"enable_prefix_caching": False, "request_rate": math.inf, "concurrency_limit": None,
                     "dataset_sha256": None}
VARIANT = ("model", "engine", "window", "output_len", *WORKLOAD)
CONFIG_ORDER = ("full", "sliding", "hybrid")
_WINDOW = VARIANT.index("window")


def variant_key(row: dict) -> tuple:
    """The row's variant; a column the row lacks (prefix_caching rows have no enable_prefix_caching) is None."""
    return tuple(row.get(c) for c in VARIANT)


def is_default(column: str, value: object) -> bool:
    """Whether a workload value is the one every job of an older store had (so titles need not name it)."""
    return value is None or value == WORKLOAD_DEFAULTS[column]


def workload_text(column: str, value: object) -> str:
    if column == "enable_prefix_caching":
        return "prefix caching on" if value else "prefix caching off"
    if column == "request_rate":
        return "offline" if value is None or math.isinf(value) else f"{value:g} req/s"
    if column == "concurrency_limit":
        return "no concurrency limit" if value is None else f"max concurrency {value}"
    return "random prompts" if value is None else f"dataset {str(value)[:12]}"


def varying(keys) -> frozenset[str]:
    """The workload columns that hold more than one value over these variant keys."""
    keys = list(keys)
    return frozenset(c for i, c in enumerate(WORKLOAD, start=4) if len({k[i] for k in keys}) > 1)


def variant_title(key: tuple, shown: frozenset[str] = frozenset()) -> str:
    """Model, window, output length and engine, then each workload value that is not its default or is
    `shown` (those that vary between the variants titled side by side: caching on, and off)."""
    model, engine, window, output_len, *workload = key
    parts = [f"{model} · window {window} · output {output_len} tokens · engine {engine}"]
    parts += [workload_text(column, value) for column, value in zip(WORKLOAD, workload)
              if column in shown or not is_default(column, value)]
    return " · ".join(parts)


def config_rank(config: str) -> tuple[int, str]:
    """Sort key that puts full, sliding, hybrid first, in that order."""
    return (CONFIG_ORDER.index(config) if config in CONFIG_ORDER else len(CONFIG_ORDER), str(config))


def _without_window(key: tuple) -> tuple:
    return key[:_WINDOW] + key[_WINDOW + 1:]


def by_variant(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Rows per variant, variants sorted. Full attention ignores the window, so a sweep runs it under
    one window only: those rows also join every other window of their model, engine, output length
    and workload that has no full rows of its own (as config_ratios.sql pairs them)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(variant_key(row), []).append(row)
    full_windows: dict[tuple, tuple] = {}  # the variant less its window -> the variant full ran under
    for key in (k for k, g in groups.items() if any(r["config"] == "full" for r in g)):
        rest = _without_window(key)
        if rest not in full_windows or key[_WINDOW] < full_windows[rest][_WINDOW]:
            full_windows[rest] = key
    for key, group in groups.items():
        shared = full_windows.get(_without_window(key))
        if shared is not None and not any(r["config"] == "full" for r in group):
            group += [r for r in groups[shared] if r["config"] == "full"]
    return dict(sorted(groups.items(), key=lambda item: tuple(map(str, item[0]))))
