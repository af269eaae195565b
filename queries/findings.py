"""The report's findings in plain words, computed from the data the way the original suite's
"Interpreting Results" reasons: what sliding and hybrid save against full, what they cost, and where
hybrid costs more than sliding; and what prefix caching buys each config where a store ran a cell both
with and without it. Numbers come from SQL (config_ratios, cells, prefix_caching); this only words them.

A measured ratio is a finding only beyond noise: it carries the 95% interval from each side's samples
(workers/intervals.py; a cell's samples are its jobs where `--repeats` ran it more than once, else its
job's iterations), an interval that holds 1 reads "no difference beyond noise", and a cell with a single
sample has no spread, so nothing categorical is said of it. Memory figures
are analytic (exact), so they carry no interval."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from hybench.queries.cells import by_variant, config_rank, variant_key, variant_title, varying
from hybench.queries.formatting import cell_text
from hybench.workers.intervals import log_ratio_bounds

SAME = "no difference beyond noise"
NO_SPREAD_HINT = ("cells with one sample (one job of one measured iteration) have no spread, so no difference is "
                  "judged there: run with --repeats 3 or --num-benchmark-iters 3 (or more) for intervals")
ONE_JOB_HINT = ("their intervals come from the iterations of one job, which share its process and moment and "
                "miss what varies between jobs (machine load, process state): `hybench sweep --repeats 3` runs "
                "each job three times, spread over the sweep")


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
        _no_spread(cells),
        _one_job(cells),
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
    pooled = [c for c in cells if c["sweeps"] and "," in c["sweeps"]]
    if pooled:
        sweeps = sorted({s for c in pooled for s in c["sweeps"].split(",")})
        notes.append(f"{len(pooled)} cells pool the jobs of several sweeps ({', '.join(sweeps)}): use --sweep, or "
                     "--compare-sweep to set them side by side.")
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


def interval_text(ratio: float, low: float | None, high: float | None) -> str:
    """'0.96x [0.90, 1.02] no difference beyond noise', '0.60x [0.55, 0.65]', or '0.60x (no spread)'."""
    if low is None or high is None:
        return f"{_times(ratio)} (no spread)"
    return f"{_times(ratio)} [{low:.2f}, {high:.2f}]" + (f" {SAME}" if low <= 1 <= high else "")


def _ratio_text(row: dict, field: str) -> str:
    if row[field] is not None:
        if f"{field}_ci_low" not in row:  # an exact figure (analytic memory, sequences that fit)
            return _times(row[field])
        return interval_text(row[field], row[f"{field}_ci_low"], row[f"{field}_ci_high"])
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
    if any(f"{field}_ci_low" in r for r in ratios):
        title += " (95% interval in brackets)"
    return f"{title}, by input length: " + "; ".join(f"{n}: {', '.join(t)}" for n, t in sorted(by_length.items())) + "."


def _kv_memory(ratios: list[dict]) -> str | None:
    line = _ratio_line("KV memory at peak against full (analytic, SSM state and dt ring included)", ratios, "kv_ratio",
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
    known = [c for c in cells if c["kv_capacity_seqs"] is not None]
    if len({c["config"] for c in known}) < 2:
        return None
    n = max(c["input_len"] for c in known)
    at_n = sorted((c for c in cells if c["input_len"] == n), key=lambda c: config_rank(c["config"]))
    return (f"Sequences the KV budget could hold at {n} tokens (before --max-num-seqs): "
            + ", ".join(f"{c['config']} {cell_text(c['kv_capacity_seqs']) if c['ok'] else c['status']}" for c in at_n)
            + ".")


def _hybrid_costs(ratios: list[dict]) -> str | None:
    """Where hybrid is slower than sliding beyond noise (its interval wholly on the worse side of 1)."""
    rows = [r for r in _pair(ratios, "hybrid", "sliding")
            if r["throughput_ratio"] is not None and r["p99_ratio"] is not None]
    judged = [r for r in rows if r["throughput_ratio_ci_low"] is not None and r["p99_ratio_ci_low"] is not None]
    if not judged:
        return None
    costs = []
    for r in judged:
        worse = []
        if r["throughput_ratio_ci_high"] < 1:
            worse.append(f"throughput {interval_text(r['throughput_ratio'], r['throughput_ratio_ci_low'], r['throughput_ratio_ci_high'])}")
        if r["p99_ratio_ci_low"] > 1:
            worse.append(f"P99 {interval_text(r['p99_ratio'], r['p99_ratio_ci_low'], r['p99_ratio_ci_high'])}")
        if worse:
            costs.append(f"{r['input_len']} ({', '.join(worse)})")
    lengths = ", ".join(str(r["input_len"]) for r in judged)
    if not costs:
        return (f"Hybrid is not slower than sliding beyond noise, in throughput or P99 latency, at input length "
                f"{lengths}.")
    return "Hybrid costs more than sliding beyond noise at input length " + "; ".join(costs) + "."


def _per_gib_lead(best: dict, other: dict) -> tuple[float, float] | None:
    """The interval of best / other in throughput per GiB: the throughput ratio's interval times the
    (exact, analytic) ratio of the memory each needed."""
    bounds = log_ratio_bounds(best["samples"], best["throughput_tok_s_log_mean"], best["throughput_tok_s_log_var"],
                              other["samples"], other["throughput_tok_s_log_mean"], other["throughput_tok_s_log_var"])
    if bounds is None:
        return None
    memory = other["needed_gib"] / best["needed_gib"]
    return bounds[0] * memory, bounds[1] * memory


def _best_per_gib(cells: list[dict]) -> str | None:
    """The config with the most throughput per GiB needed at each length, where it leads every other
    config beyond noise."""
    by_length: dict[int, list[dict]] = {}
    for c in cells:
        if c["tok_s_per_gib"] is not None:
            by_length.setdefault(c["input_len"], []).append(c)
    if len({c["config"] for c in cells}) < 2 or not by_length:
        return None
    lengths_by_config: dict[str, list[int]] = {}
    for n, at_n in sorted(by_length.items()):
        best = max(at_n, key=lambda c: c["tok_s_per_gib"])
        leads = [_per_gib_lead(best, other) for other in at_n if other is not best]
        if leads and all(lead is not None and lead[0] > 1 for lead in leads):
            lengths_by_config.setdefault(best["config"], []).append(n)
    if not lengths_by_config:
        return None
    return ("Most throughput per GiB needed, beyond noise: " + "; ".join(
        f"{config} at input length {', '.join(map(str, lengths))}"
        for config, lengths in sorted(lengths_by_config.items(), key=lambda item: config_rank(item[0]))) + ".")


def _no_spread(cells: list[dict]) -> str | None:
    single = [c for c in cells if c["ok"] and c["samples"] < 2]
    if not single:
        return None
    return f"{len(single)} of {len(cells)} cells have one sample: {NO_SPREAD_HINT}."


def _one_job(cells: list[dict]) -> str | None:
    one = [c for c in cells if c["ok"] == 1 and c["samples"] >= 2]
    if not one:
        return None
    return f"{len(one)} of {len(cells)} cells ran one job: {ONE_JOB_HINT}."


def _failures(cells: list[dict]) -> str | None:
    failed = sorted((c for c in cells if c["status"] != "ok"), key=lambda c: (c["input_len"], config_rank(c["config"])))
    if not failed:
        return None
    return ("Not every job ended ok: " + "; ".join(f"{c['config']} at {c['input_len']}: {c['status']}" for c in failed)
            + " (see Job status and Jobs that did not end ok).")


def comparison_findings(summary: dict, rows: list[dict], label_a: str, label_b: str) -> list[str]:
    """Bullets on B against A over the cells both sides ran: how many show no difference beyond noise,
    and each cell that differs, with its interval."""
    lines = [f"- Over the {summary['matched']} cells both sides ran, B ({label_b}) against A ({label_a}): "
             + "; ".join(_verdict_counts(summary, metric, name) for metric, name in
                         (("throughput_tok_s", "throughput"), ("latency_p99_ms", "P99 latency"))) + "."]
    for metric, name in (("throughput_tok_s", "throughput"), ("latency_p99_ms", "P99 latency")):
        differ = [r for r in rows if r.get(f"{metric}_ratio_ci_low") is not None
                  and (r[f"{metric}_ratio_ci_low"] > 1 or r[f"{metric}_ratio_ci_high"] < 1)]
        if differ:
            lines.append(f"- {name.capitalize()} differs beyond noise in: " + "; ".join(
                f"{r['config']} at {r['input_len']} (window {r['window']}): "
                + interval_text(r[f"{metric}_ratio"], r[f"{metric}_ratio_ci_low"], r[f"{metric}_ratio_ci_high"])
                for r in differ) + ".")
    if any(summary[f"{m}_no_spread"] for m in ("throughput_tok_s", "latency_p99_ms")):
        lines.append(f"- Some {NO_SPREAD_HINT}.")
    if summary["only_a"] or summary["only_b"]:
        lines.append(f"- Cells on one side only: {summary['only_a']} on A, {summary['only_b']} on B "
                     "(listed in the comparison table with the other side empty).")
    return lines


def _verdict_counts(summary: dict, metric: str, name: str) -> str:
    return (f"{name}: {summary[f'{metric}_same']} cells {SAME}, {summary[f'{metric}_differ']} differ, "
            f"{summary[f'{metric}_no_spread']} without spread")
