"""`write_report`: figures drawn from the right numbers, summary.md findings, failures shown, and
the report of a damaged, failed-only or large store."""
from __future__ import annotations

import math

import os
import time

import numpy as np
import pyarrow as pa
import pytest

from hybench.queries.compare import compare_cells
from hybench.queries.findings import data_notes
from hybench.queries.plots import CONFIG_COLORS, draw_report_figures
from hybench.queries.report import collect, write_report
from hybench.queries.store_views import Selection, open_views, sides
from hybench.workers.records import REQUESTS_SCHEMA, result_tables, to_table
from hybench.workers.store import ResultStore
from queries_fixtures import (CONFIGS, LENGTHS, add_edge_cases, add_workload_variants, build_store, expected_cells,
                              expected_prefix_caching, synthetic)  # noqa: F401 - synthetic is a fixture

FIGURES = ("memory_comparison", "throughput_comparison", "latency_percentiles", "latency_vs_input_length",
           "memory_efficiency")


@pytest.fixture(scope="module")
def figures(synthetic, tmp_path_factory):
    results = collect(sides(Selection(synthetic.root))[0])
    out = str(tmp_path_factory.mktemp("figures"))
    return {f.name: f for f in draw_report_figures([("", results.rows("cells"))], out, "png")}


def _series(figure, config, column):
    matches = [s for s in figure.series if s.config == config and s.column == column]
    assert len(matches) == 1, (figure.name, config, column, matches)
    return matches[0]


def _assert_values(got, want):
    """Equal sequences of numbers, None where a value is missing."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (g is None and w is None) or g == pytest.approx(w, rel=1e-9), (got, want)


def _expected(synthetic, column, config, lengths):
    cells = expected_cells(synthetic)
    return [cells[(config, n)][column] if (config, n) in cells else None for n in lengths]


def test_every_figure_is_a_nonempty_png(figures):
    assert set(figures) == set(FIGURES)
    for figure in figures.values():
        with open(figure.path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(figure.path) > 10_000


@pytest.mark.parametrize("figure, column", [
    ("throughput_comparison", "throughput_tok_s"),
    ("throughput_comparison", "requests_per_s"),
    ("memory_comparison", "kv_used_gib"),
    ("memory_comparison", "ssm_state_gib"),
    ("memory_comparison", "peak_torch_gib"),
    ("memory_comparison", "kv_capacity_seqs"),
    ("memory_efficiency", "tok_s_per_gib"),
    ("latency_vs_input_length", "latency_p50_ms"),
    ("latency_vs_input_length", "latency_p99_ms"),
    ("latency_vs_input_length", "ttft_p99_ms"),
    ("latency_vs_input_length", "tpot_p50_ms"),
])
def test_figure_series_hold_the_numbers(figures, synthetic, figure, column):
    for config in CONFIGS:
        drawn = _series(figures[figure], config, column)
        _assert_values(drawn.y, _expected(synthetic, column, config, drawn.x))
        assert set(LENGTHS) <= set(drawn.x)


def test_latency_percentile_bars(figures, synthetic):
    figure = figures["latency_percentiles"]
    cells = expected_cells(synthetic)
    for n in (256, 1024, 4096):
        panel = [s for s in figure.series if s.column == "latency_ms" and s.panel.startswith(f"input length {n} ")]
        assert {s.config for s in panel} == set(CONFIGS)
        for s in panel:
            assert s.x == ("mean", "P50", "P90", "P99")
            want = [cells[(s.config, n)][c] for c in ("latency_mean_ms", "latency_p50_ms", "latency_p90_ms",
                                                      "latency_p99_ms")]
            _assert_values(s.y, want)


def test_failed_cells_are_marked_in_every_figure(figures):
    for figure in figures.values():
        failed = {(s.config, x, y) for s in figure.series if s.column == "failed" for x, y in zip(s.x, s.y)}
        assert {("full", 4096, "oom"), ("hybrid", 2048, "error"), ("hybrid", 8192, "incomplete")} <= failed, figure.name


def test_config_colours_are_fixed():
    assert len(set(CONFIG_COLORS.values())) == 3 and set(CONFIG_COLORS) == set(CONFIGS)


def test_report_of_a_damaged_store(synthetic, tmp_path, capsys):
    summary_path = write_report(synthetic.root, str(tmp_path / "out"), "png")
    assert summary_path == str(tmp_path / "out" / "summary.md")
    summary = open(summary_path, encoding="utf-8").read()
    for name in FIGURES:
        assert f"]({name}.png)" in summary
        assert os.path.getsize(tmp_path / "out" / f"{name}.png") > 0
    findings = summary.split("## Findings", 1)[1].split("## Figures", 1)[0]
    cells = expected_cells(synthetic)
    kv_ratio = cells[("sliding", 1024)]["kv_used_gib"] / cells[("full", 1024)]["kv_used_gib"]
    assert f"1024: sliding {kv_ratio:.2f}x" in findings
    assert "full at 4096: oom" in findings and "hybrid at 2048: error" in findings
    assert "hybrid at 8192: incomplete" in findings
    assert "1 results files were skipped" in findings and synthetic.skipped[0] in findings
    assert "CUDA out of memory" in summary  # the failed job's error is in its table
    assert "skipped results file" in capsys.readouterr().err


def test_report_paths_stay_inside_the_output_dir(tmp_path):
    synthetic = build_store(str(tmp_path / "store"))
    rng = np.random.default_rng(3)
    synthetic.write_job("full", 512, rng=rng, model="../../escape/model")
    out = tmp_path / "deep" / "out"
    write_report(synthetic.root, str(out), "svg")
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file() and "store" not in p.parts}
    assert written == {f"deep/out/{name}.svg" for name in FIGURES} | {"deep/out/summary.md"}


def test_report_when_every_job_failed(tmp_path):
    store = build_store(str(tmp_path / "store"), oom=tuple((c, n) for c in CONFIGS for n in LENGTHS))
    assert not store.requests
    summary = open(write_report(store.root, str(tmp_path / "out"), "pdf"), encoding="utf-8").read()
    assert "9 jobs: 0 ok, 9 out of memory" in summary
    assert "(memory_comparison.pdf)" in summary
    assert all(os.path.getsize(tmp_path / "out" / f"{name}.pdf") > 0 for name in FIGURES)


def test_compare_two_sweeps_of_one_store(tmp_path):
    root = str(tmp_path / "store")
    base = build_store(root, sweep_id="s1", seed=0)
    faster = build_store(root, sweep_id="s2", seed=7, speed=2.0)
    out = tmp_path / "out"
    summary = open(write_report(root, str(out), sweep="s1", compare_sweep="s2"), encoding="utf-8").read()
    assert "## Comparison: B against A" in summary and "A: sweep s1" in summary and "B: sweep s2" in summary
    assert (out / "compare_ratio.png").stat().st_size > 0
    a, b = expected_cells(base), expected_cells(faster)

    pooled = collect(sides(Selection(root))[0])
    notes = data_notes(pooled.rows("cells"), pooled.rows("totals")[0], pooled.skipped)
    assert any("cells pool the jobs of several sweeps (s1, s2)" in note for note in notes)

    results = [collect(side) for side in sides(Selection(root, sweeps=("s1",)), None, ("s2",))]
    joined, summary_row = compare_cells(results[0].tables["cells"], results[1].tables["cells"])
    assert summary_row["matched"] == len(a) and summary_row["only_a"] == summary_row["only_b"] == 0
    for row in joined.to_pylist():
        key = (row["config"], row["input_len"])
        if a[key]["throughput_tok_s"] is None:
            assert row["throughput_tok_s_ratio"] is None
            continue
        for metric, samples in (("throughput_tok_s", "throughput_tok_s"), ("latency_p99_ms", "e2e_p99_ms")):
            # The ratio of the sides' geometric means (the centre of its interval), else of the cells' figures.
            logs = (a[key][f"{samples}_log_mean"], b[key][f"{samples}_log_mean"])
            want = math.exp(logs[1] - logs[0]) if None not in logs else b[key][metric] / a[key][metric]
            assert row[f"{metric}_ratio"] == pytest.approx(want)
    drawn = draw_report_figures([(r.side.label, r.rows("cells")) for r in results], str(out), "png",
                                joined.to_pylist())
    ratio = next(f for f in drawn if f.name == "compare_ratio")
    hybrid = _series(ratio, "hybrid", "throughput_tok_s_ratio")
    _assert_values(hybrid.y, [math.exp(b[("hybrid", n)]["throughput_tok_s_log_mean"]
                                       - a[("hybrid", n)]["throughput_tok_s_log_mean"]) for n in hybrid.x])
    throughput = next(f for f in drawn if f.name == "throughput_comparison")
    assert {s.panel.split("\n")[0] for s in throughput.series} == {"A: sweep s1", "B: sweep s2"}


def test_full_run_under_one_window_is_the_baseline_of_every_window(tmp_path):
    synthetic = build_store(str(tmp_path / "store"), oom=())  # every config under window 512
    rng = np.random.default_rng(9)
    for config in ("sliding", "hybrid"):  # a second window: full is not run again (its window is moot)
        for n in LENGTHS:
            synthetic.write_job(config, n, rng=rng, window=256)
    full, narrow = expected_cells(synthetic, window=512), expected_cells(synthetic, window=256)
    results = collect(sides(Selection(synthetic.root))[0])
    ratios = {(r["config"], r["input_len"]): r for r in results.rows("config_ratios")
              if r["window"] == 256 and r["baseline"] == "full"}
    assert set(ratios) == {(c, n) for c in ("sliding", "hybrid") for n in LENGTHS}
    for (config, n), row in ratios.items():
        assert row["throughput_ratio"] == pytest.approx(math.exp(narrow[(config, n)]["throughput_tok_s_log_mean"]
                                                                 - full[("full", n)]["throughput_tok_s_log_mean"]))
    drawn = draw_report_figures([("", results.rows("cells"))], str(tmp_path), "png")
    throughput = next(f for f in drawn if f.name == "throughput_comparison")
    full_series = [s for s in throughput.series if s.config == "full" and s.column == "throughput_tok_s"]
    assert len(full_series) == 2 and {"window 256" in s.panel for s in full_series} == {True, False}
    for s in full_series:
        _assert_values(s.y, [full[("full", n)]["throughput_tok_s"] for n in s.x])


def test_report_splits_and_words_prefix_caching(tmp_path):
    synthetic = build_store(str(tmp_path / "store"))
    add_workload_variants(synthetic)
    out = tmp_path / "out"
    summary = open(write_report(synthetic.root, str(out)), encoding="utf-8").read()
    findings = summary.split("## Findings", 1)[1].split("## Figures", 1)[0]
    assert "**Prefix caching, with against without**" in findings
    offline = expected_prefix_caching(synthetic)[(512, (float("inf"), None, None), "sliding", 1024)]
    line = next(l for l in findings.splitlines() if l.startswith("- sliding") and "1024: TTFT P50" in l)
    assert (f"1024: TTFT P50 {offline['ttft_p50_ms_without']:.2f} ms -> {offline['ttft_p50_ms_with']:.2f} ms "
            f"({offline['ttft_p50_ratio']:.2f}x)") in line
    assert f"throughput {offline['throughput_ratio']:.2f}x; hit rate {offline['prefix_cache_hit_rate'] * 100:.0f}%" in line
    assert "4 req/s" in findings  # the second request rate is worded apart
    assert "## Prefix caching" in summary and "ttft_p50_ms_without" in summary
    # Tables and figures split on the workload: caching on and off are headed apart, not averaged.
    assert "### org/tiny-model · window 512 · output 6 tokens · engine hybrid · prefix caching on · offline" in summary
    assert "### org/tiny-model · window 512 · output 6 tokens · engine hybrid · prefix caching off · offline" in summary
    assert "max concurrency 4 · dataset abababababab" in summary
    results = collect(sides(Selection(synthetic.root))[0])
    drawn = draw_report_figures([("", results.rows("cells"))], str(out), "png")
    latency = next(f for f in drawn if f.name == "latency_vs_input_length")
    cached = [s for s in latency.series if s.config == "full" and s.column == "ttft_p50_ms"
              and "prefix caching on · offline" in s.panel]
    uncached = [s for s in latency.series if s.config == "full" and s.column == "ttft_p50_ms"
                and "prefix caching off · offline" in s.panel]
    assert len(cached) == len(uncached) == 1
    assert cached[0].x == (256, 1024) and set(LENGTHS) <= set(uncached[0].x)
    for s, workload in ((cached[0], (True, float("inf"), None, None)), (uncached[0], (False, float("inf"), None, None))):
        want = expected_cells(synthetic, workload=workload)
        _assert_values(s.y, [want[("full", n)]["ttft_p50_ms"] if ("full", n) in want else None for n in s.x])


def test_report_of_a_store_without_caching_has_no_caching_section(synthetic, tmp_path):
    summary = open(write_report(synthetic.root, str(tmp_path / "out")), encoding="utf-8").read()
    assert "Prefix caching" not in summary and "prefix caching" not in summary


def _large_store(root: str, total_requests: int) -> None:
    """Many requests, written as Arrow columns (row dicts would dominate the test's time)."""
    store = ResultStore(root)
    rng = np.random.default_rng(0)
    per_job = total_requests // (len(CONFIGS) * 4)
    itl_per_request = 31
    for config in CONFIGS:
        for n in (512, 1024, 2048, 4096):
            job_id = f"{config}-{n}"
            columns = {f.name: pa.nulls(per_job, f.type) for f in REQUESTS_SCHEMA}
            offsets = pa.array(np.arange(per_job + 1) * itl_per_request, pa.int32())
            columns.update(
                job_id=pa.array([job_id] * per_job), sweep_id=pa.array(["big"] * per_job),
                model=pa.array(["org/m"] * per_job), config=pa.array([config] * per_job),
                window=pa.array(np.full(per_job, 512)), engine=pa.array(["hybrid"] * per_job),
                input_len=pa.array(np.full(per_job, n)), output_len=pa.array(np.full(per_job, 32)),
                warmup=pa.array(np.arange(per_job) < per_job // 10),
                prompt_tokens=pa.array(np.full(per_job, n)), output_tokens=pa.array(np.full(per_job, 32)),
                e2e_ms=pa.array(rng.gamma(2.0, 50.0, per_job)), ttft_ms=pa.array(rng.gamma(2.0, 5.0, per_job)),
                tpot_ms=pa.array(rng.gamma(2.0, 1.0, per_job)),
                itl_ms=pa.ListArray.from_arrays(offsets, pa.array(rng.gamma(2.0, 1.0, per_job * itl_per_request))))
            partition = {"model": "org/m", "config": config, "input_len": n}
            store.write("requests", partition, job_id, pa.table(columns, schema=REQUESTS_SCHEMA))
            store.write("jobs", partition, job_id, to_table("jobs", [dict(
                job_id=job_id, sweep_id="big", model="org/m", config=config, window=512, engine="hybrid",
                input_len=n, output_len=32, status="ok", elapsed_s=30.0, model_gib=2.0, kv_used_gib=n / 1024)]))


def test_report_of_100k_requests_takes_seconds(tmp_path):
    _large_store(str(tmp_path / "store"), 100_000)
    start = time.perf_counter()
    summary = write_report(str(tmp_path / "store"), str(tmp_path / "out"))
    elapsed = time.perf_counter() - start
    assert "| 4096 | hybrid | ok |" in open(summary, encoding="utf-8").read()
    assert elapsed < 30, f"report of 100k requests took {elapsed:.1f} s"


def test_quality_jobs_leave_the_throughput_report_as_it_was(tmp_path):
    """Quality jobs (no requests, a quality table) in a throughput store: the same cells, and the same
    summary apart from the environment's job count and the quality findings, figures and tables."""
    synthetic = build_store(str(tmp_path / "store"))
    before = open(write_report(synthetic.root, str(tmp_path / "before"), "svg"), encoding="utf-8").read()
    with open_views(Selection(synthetic.root)) as views:
        cells_before = views.table("SELECT * FROM cells ORDER BY ALL").to_pylist()
    for config in ("full", "sliding", "hybrid"):
        key = {"job_id": f"recall-{config}", "sweep_id": "s1", "model": synthetic.jobs[0]["model"], "config": config,
               "window": synthetic.jobs[0]["window"], "engine": "hybrid", "input_len": LENGTHS[0], "output_len": 1}
        quality = [key | {"task": "recall", "request_id": i, "distance": 8, "distance_w": 0.5, "tokens": 15,
                          "nll_sum": 3.0, "correct": 10} for i in range(2)]
        environment = {k: synthetic.jobs[0].get(k) for k in ("device_name", "driver_version", "torch_version",
                                                             "ray_version", "project_version", "hostname", "started_at")}
        job = key | environment | {"task": "recall", "status": "ok", "elapsed_s": 0.5, "scored_tok_s": 100.0, "nll_mean": 0.2}
        ResultStore(synthetic.root).write_result(
            {"model": key["model"], "config": config, "input_len": LENGTHS[0]}, key["job_id"],
            result_tables([], [], [job], quality))
    after = open(write_report(synthetic.root, str(tmp_path / "after"), "svg"), encoding="utf-8").read()
    with open_views(Selection(synthetic.root)) as views:
        assert views.table("SELECT * FROM cells ORDER BY ALL").to_pylist() == cells_before
        assert views.table("SELECT count(*) AS n FROM quality").to_pylist() == [{"n": 6}]
    assert "- Recall, " in after and "(recall_vs_distance.svg)" in after and "## Recall" in after
    before, after = _lines(before), _without_quality(after)
    assert len(before) == len(after)
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(changed) == 1 and "| 9 |" in changed[0][0] and "| 12 |" in changed[0][1], changed  # environment


def _lines(summary: str) -> list[str]:
    return [line for line in summary.splitlines() if line]


def _without_quality(summary: str) -> list[str]:
    """The summary without what quality jobs add: their findings, figures and tables."""
    out, skipping = [], False
    for line in _lines(summary):
        if line.startswith("## "):
            skipping = line in ("## Recall", "## Perplexity")
        if not (skipping or line.startswith(("- Recall,", "- Perplexity,"))
                or any(f"({name}.svg)" in line for name in ("recall_vs_distance", "recall_nll_vs_distance",
                                                             "perplexity_vs_position", "cost_quality"))):
            out.append(line)
    return out
