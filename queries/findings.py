"""The report's findings in plain words, computed from the data the way the original suite's
"Interpreting Results" reasons: what sliding and hybrid save against full, what they cost, and where
hybrid costs more than sliding; and what prefix caching buys each config where a store ran a cell both
with and without it. Numbers come from SQL (config_ratios, cells, prefix_caching); this only words them."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from hybench.queries.cells import by_variant, config_rank, variant_key, variant_title, varying
from hybench.queries.formatting import cell_text


def _variant_findings(cells: list[dict], ratios: list[dict]) -> list[str]:
    """Bullets (Markdown, without the dash) for the cells and config_ratios rows of one variant."""
    bullets = [
        _kv_memory(ratios),
        _history_branch(cells),
        _concurrency(cells),
        _ratio_line("Throughput against full", ratios, "throughput_ratio", ("sliding", "full"), ("hybrid", "full")),
        _ratio_line("P99 latency against full", ratios, "p99_ratio", ("sliding", "full"), ("hybrid", "full")),
        _ratio_line("Hybrid against sliding: throughput", ratios, "throughput_ratio", ("hybrid", "sliding")),
        _ratio_line("Hybrid against sliding: P99 latency", ratios, "p99_ratio", ("hybrid", "sliding")),
        _hybrid_costs(ratios),
        _best_per_gib(cells),
        _failures(cells),
    ]
    return [b for b in bullets if b]


def findings(cells: list[dict], ratios: list[dict], caching: list[dict] = ()) -> list[str]:
    """Markdown lines: bullets per variant, under the variant's name when there are several; then what
    prefix caching buys, from the prefix_caching query's rows."""
    groups = by_variant(cells)
    named = varying(groups)
    lines: list[str] = []
    for variant, variant_cells in groups.items():
        if len(groups) > 1:
            lines += ([""] if lines else []) + [f"**{variant_title(variant, named)}**", ""]
        lines += [f"- {b}" for b in _variant_findings(variant_cells, [r for r in ratios if variant_key(r) == variant])]
    caching_lines = _prefix_caching(caching)
    if caching_lines:
        lines += ([""] if lines else []) + caching_lines
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{cell_text(value)} ms"


def _prefix_caching(rows: list[dict]) -> list[str]:
    """'Prefix caching, with against without' and a bullet per config (and variant): TTFT P50 and P99
    without -> with, the throughput ratio, hit rate and cache memory, by input length."""
    paired = [r for r in rows if r["status_without"] is not None]
    if not paired:
        return []
    groups = by_variant(paired)  # the rows carry no enable_prefix_caching: one group per other workload
    named = varying(groups)
    lines = ["**Prefix caching, with against without** (TTFT without -> with; throughput with / without; "
             "hit rate: share of prompt tokens served from the cache; cache: memory its entries held at most):", ""]
    for variant, variant_rows in groups.items():
        where = f" ({variant_title(variant, named)})" if len(groups) > 1 else ""
        for config in sorted({r["config"] for r in variant_rows}, key=config_rank):
            parts = []
            for r in sorted((r for r in variant_rows if r["config"] == config), key=lambda r: r["input_len"]):
                if r["status"] != "ok" or r["status_without"] != "ok":
                    parts.append(f"{r['input_len']}: with caching {r['status']}, without {r['status_without']}")
                    continue
                ratio = r["throughput_ratio"]
                hit = r["prefix_cache_hit_rate"]
                parts.append(
                    f"{r['input_len']}: TTFT P50 {_ms(r['ttft_p50_ms_without'])} -> {_ms(r['ttft_p50_ms_with'])}"
                    f" ({_times(r['ttft_p50_ratio']) if r['ttft_p50_ratio'] is not None else '-'}), "
                    f"P99 {_ms(r['ttft_p99_ms_without'])} -> {_ms(r['ttft_p99_ms_with'])}"
                    f" ({_times(r['ttft_p99_ratio']) if r['ttft_p99_ratio'] is not None else '-'}); "
                    f"throughput {_times(ratio) if ratio is not None else '-'}; "
                    f"hit rate {'-' if hit is None else f'{hit * 100:.0f}%'}; "
                    f"cache {cell_text(r['prefix_cache_gib'])} GiB")
            lines.append(f"- {config}{where}, by input length: " + "; ".join(parts) + ".")
    return lines


def data_notes(cells: list[dict], totals: dict, skipped: Mapping[str, str], duplicated_jobs: Sequence[str] = (),
               nan_values: int = 0) -> list[str]:
    """Bullets on what the numbers leave out or pool, so nothing is dropped silently."""
    notes = [f"{cell_text(totals['measured_requests'])} measured requests of jobs that ended ok; "
             f"{cell_text(totals['warmup_requests'])} warmup requests left out."]
    pooled = [c for c in cells if c["jobs"] > 1]
    if pooled:
        sweeps = sorted({s for c in pooled if c["sweeps"] for s in c["sweeps"].split(",")})
        notes.append(f"{len(pooled)} cells pool the requests of several jobs (several sweeps or code versions; "
                     f"sweeps {', '.join(sweeps)}): use --sweep, or --compare-sweep to set them side by side.")
    if skipped:
        notes.append(f"{len(skipped)} results files were skipped: "
                     + "; ".join(f"`{path}` ({why})" for path, why in skipped.items()))
    if duplicated_jobs:
        notes.append(f"{len(duplicated_jobs)} jobs were left out because their jobs row appears more than once "
                     "(a copied or misplaced file): " + ", ".join(f"`{job}`" for job in duplicated_jobs))
    if nan_values:
        notes.append(f"{nan_values} metric values were NaN and are not counted (read as missing).")
    return notes


def _times(value: float) -> str:
    return f"{value:.2f}x"


def _percent_less(ratio: float) -> str:
    return f"{(1 - ratio) * 100:.0f}% less" if ratio <= 1 else f"{(ratio - 1) * 100:.0f}% more"


def _pair(ratios: list[dict], config: str, baseline: str) -> list[dict]:
    return sorted((r for r in ratios if r["config"] == config and r["baseline"] == baseline),
                  key=lambda r: r["input_len"])


def _ratio_text(row: dict, field: str) -> str:
    if row[field] is not None:
        return _times(row[field])
    if row["status"] != "ok":
        return row["status"]
    if row["baseline_status"] != "ok":
        return f"{row['baseline']} {row['baseline_status']}"
    return "-"


def _ratio_line(title: str, ratios: list[dict], field: str, *pairs: tuple[str, str]) -> str | None:
    """'<title>, by input length: 512: sliding 0.98x, hybrid 0.97x; 1024: ...' (configs named when several)."""
    by_length: dict[int, list[str]] = {}
    for config, baseline in pairs:
        for r in _pair(ratios, config, baseline):
            text = _ratio_text(r, field)
            by_length.setdefault(r["input_len"], []).append(f"{config} {text}" if len(pairs) > 1 else text)
    if not by_length:
        return None
    return f"{title}, by input length: " + "; ".join(f"{n}: {', '.join(t)}" for n, t in sorted(by_length.items())) + "."


def _kv_memory(ratios: list[dict]) -> str | None:
    line = _ratio_line("KV memory at peak against full (analytic, SSM state included)", ratios, "kv_ratio",
                       ("sliding", "full"), ("hybrid", "full"))
    if line is None:
        return None
    measured = [r for r in _pair(ratios, "sliding", "full") + _pair(ratios, "hybrid", "full") if r["kv_ratio"] is not None]
    if measured:
        n = max(r["input_len"] for r in measured)
        longest = sorted((r for r in measured if r["input_len"] == n), key=lambda r: config_rank(r["config"]))
        line += (f" At {n} tokens, the longest input both ran, full holds "
                 f"{cell_text(longest[0]['baseline_kv_state_gib'])} GiB; "
                 + ", ".join(f"{r['config']} holds {_percent_less(r['kv_ratio'])}" for r in longest) + ".")
    return line


def _history_branch(cells: list[dict]) -> str | None:
    hybrid = sorted((c for c in cells if c["config"] == "hybrid" and c["ssm_param_gib"] is not None),
                    key=lambda c: c["input_len"])
    if not hybrid or not hybrid[-1]["model_gib"]:
        return None
    cell = hybrid[-1]
    text = (f"Hybrid's history branch adds {cell_text(cell['ssm_param_gib'])} GiB of parameters "
            f"({cell['ssm_param_gib'] / cell['model_gib'] * 100:.2f}% of the {cell_text(cell['model_gib'])} GiB "
            f"of weights)")
    if cell["ssm_state_gib"] is not None:
        text += f" and {cell_text(cell['ssm_state_gib'])} GiB of SSM state at peak at {cell['input_len']} tokens"
    return text + "."


def _concurrency(cells: list[dict]) -> str | None:
    known = [c for c in cells if c["max_concurrency"] is not None]
    if len({c["config"] for c in known}) < 2:
        return None
    n = max(c["input_len"] for c in known)
    at_n = sorted((c for c in cells if c["input_len"] == n), key=lambda c: config_rank(c["config"]))
    return (f"Sequences that fit in the KV pool at {n} tokens: "
            + ", ".join(f"{c['config']} {cell_text(c['max_concurrency']) if c['ok'] else c['status']}" for c in at_n)
            + ".")


def _hybrid_costs(ratios: list[dict]) -> str | None:
    rows = [r for r in _pair(ratios, "hybrid", "sliding")
            if r["throughput_ratio"] is not None or r["p99_ratio"] is not None]
    if not rows:
        return None
    costs = []
    for r in rows:
        worse = []
        if r["throughput_ratio"] is not None and r["throughput_ratio"] < 1:
            worse.append(f"throughput {(r['throughput_ratio'] - 1) * 100:+.1f}%")
        if r["p99_ratio"] is not None and r["p99_ratio"] > 1:
            worse.append(f"P99 {(r['p99_ratio'] - 1) * 100:+.1f}%")
        if worse:
            costs.append(f"{r['input_len']} ({', '.join(worse)})")
    if not costs:
        return "Hybrid is at least as fast as sliding, with no higher P99 latency, at every input length measured."
    return "Hybrid costs more than sliding at input length " + "; ".join(costs) + "."


def _best_per_gib(cells: list[dict]) -> str | None:
    best: dict[int, dict] = {}
    for c in cells:
        if c["tok_s_per_gib"] is not None and (c["input_len"] not in best
                                               or c["tok_s_per_gib"] > best[c["input_len"]]["tok_s_per_gib"]):
            best[c["input_len"]] = c
    if len({c["config"] for c in cells}) < 2 or not best:
        return None
    lengths_by_config: dict[str, list[int]] = {}
    for n in sorted(best):
        lengths_by_config.setdefault(best[n]["config"], []).append(n)
    return ("Most throughput per GiB needed: " + "; ".join(
        f"{config} at input length {', '.join(map(str, lengths))}"
        for config, lengths in sorted(lengths_by_config.items(), key=lambda item: config_rank(item[0]))) + ".")


def _failures(cells: list[dict]) -> str | None:
    failed = sorted((c for c in cells if c["status"] != "ok"), key=lambda c: (c["input_len"], config_rank(c["config"])))
    if not failed:
        return None
    return ("Not every job ended ok: " + "; ".join(f"{c['config']} at {c['input_len']}: {c['status']}" for c in failed)
            + " (see Job status and Jobs that did not end ok).")


def comparison_findings(summary: dict, label_a: str, label_b: str) -> list[str]:
    """Bullets on B against A over the cells both sides ran."""
    lines = [f"- Over the {summary['matched']} cells both sides ran, B ({label_b}) against A ({label_a}):"
             f" throughput {_spread(summary, 'throughput')}, P99 latency {_spread(summary, 'p99')}."]
    if summary["only_a"] or summary["only_b"]:
        lines.append(f"- Cells on one side only: {summary['only_a']} on A, {summary['only_b']} on B "
                     "(listed in the comparison table with the other side empty).")
    return lines


def _spread(summary: dict, prefix: str) -> str:
    if summary[f"{prefix}_median"] is None:
        return "not comparable (no cell has both values)"
    return (f"median {_times(summary[f'{prefix}_median'])} (from {_times(summary[f'{prefix}_min'])} "
            f"to {_times(summary[f'{prefix}_max'])})")
