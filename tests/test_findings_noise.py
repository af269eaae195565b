"""Findings hold up against noise: a store whose configs differ only by +-10% noise says "no difference
beyond noise" everywhere, a real 2x difference is reported with its interval, and one-iteration jobs
yield no categorical finding."""
from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from hybench.queries import write_report
from hybench.queries.compare import compare_cells
from hybench.queries.report import collect
from hybench.queries.store_views import Selection, sides
from hybench.workers import records
from hybench.workers.store import ResultStore

CONFIGS = ("full", "sliding", "hybrid")
LENGTHS = (256, 1024, 4096)
PROMPTS, OUTPUT = 8, 4


def _write_store(root: str, rng: np.random.Generator, iterations: int, speed: dict[str, float] | None = None,
                 noise: float = 0.1, run_shift: float = 0.0, repeats: int = 1) -> None:
    """Every config at every length, `repeats` jobs each; each iteration's requests all take
    base * (1 +- noise) / speed, times a shift of the whole job (1 +- run_shift) that its iterations
    cannot see (as between two runs, or two jobs of one run)."""
    store = ResultStore(root)
    for config, n, repeat in itertools.product(CONFIGS, LENGTHS, range(repeats)):
        key = dict(job_id=f"{config}-{n}-r{repeat}", sweep_id="s", model="m", config=config, window=512,
                   engine="hybrid", input_len=n, output_len=OUTPUT)
        requests, samples = [], []
        shift = 1 + rng.uniform(-run_shift, run_shift)
        for it in range(iterations + 1):
            seconds = (0.1 + n / 10_000) * shift * (1 + rng.uniform(-noise, noise)) / (speed or {}).get(config, 1.0)
            e2e = [seconds * 1e3 * (1 - 0.01 * i) for i in range(PROMPTS)]
            requests += [dict(key, iteration=it, warmup=it == 0, request_id=i, prompt_tokens=n,
                              output_tokens=OUTPUT, arrival_ns=0, first_token_ns=int(v * 5e5),
                              finish_ns=int(v * 1e6), ttft_ms=v / 2, e2e_ms=v, tpot_ms=v / 2 / (OUTPUT - 1),
                              itl_ms=[v / 2 / (OUTPUT - 1)] * (OUTPUT - 1)) for i, v in enumerate(e2e)]
            tokens = PROMPTS * (n + OUTPUT)
            samples.append(dict(key, iteration=it, warmup=it == 0, requests=PROMPTS, elapsed_s=seconds,
                                throughput_tok_s=tokens / seconds, e2e_p50_ms=float(np.percentile(e2e, 50)),
                                e2e_p99_ms=float(np.percentile(e2e, 99))))
        elapsed = sum(s["elapsed_s"] for s in samples if not s["warmup"])
        job = dict(key, status="ok", num_prompts=PROMPTS, elapsed_s=elapsed, model_gib=1.0,
                   kv_used_gib=1e-3 * (n if config == "full" else 512), num_benchmark_iters=iterations)
        store.write_result({"model": "m", "config": config, "input_len": n}, key["job_id"],
                           records.result_tables(requests, samples, [job]))


def _findings(summary: str) -> str:
    return summary.split("## Findings", 1)[1].split("## Figures", 1)[0]


def _ratio_entries(text: str) -> list[str]:
    """Each config-against-config ratio the findings state, with its verdict."""
    lines = [line for line in text.splitlines()
             if line.startswith(("- Throughput against", "- P99 latency against", "- Hybrid against sliding"))]
    return [e for line in lines for e in re.findall(r"\d+\.\d\dx \[[^]]+\][^;,.]*", line)]


def test_noise_alone_is_no_difference(tmp_path):
    _write_store(str(tmp_path / "a"), np.random.default_rng(3), iterations=5)
    _write_store(str(tmp_path / "b"), np.random.default_rng(4), iterations=5)
    path = write_report(str(tmp_path / "a"), str(tmp_path / "out"), compare=str(tmp_path / "b"))
    text = _findings(open(path).read())
    for line in text.splitlines():
        if line.startswith(("- Throughput against", "- P99 latency against", "- Hybrid against sliding")):
            entries = re.findall(r"\d+\.\d\dx \[[^]]+\][^;,.]*", line)
            assert entries and all("no difference beyond noise" in e for e in entries), line
    assert "costs more" not in text
    assert "throughput: 9 cells no difference beyond noise, 0 differ" in text
    assert "P99 latency: 9 cells no difference beyond noise, 0 differ" in text


def test_shifts_between_runs_that_iterations_cannot_see_are_noise(tmp_path):
    """Each job of a run shifted by up to +-25% while its iterations agree within 2%: the comparison
    widens every interval by the spread between the cells, so no cell is called different."""
    _write_store(str(tmp_path / "a"), np.random.default_rng(3), iterations=3, noise=0.02, run_shift=0.25)
    _write_store(str(tmp_path / "b"), np.random.default_rng(4), iterations=3, noise=0.02, run_shift=0.25)
    results = [collect(side) for side in sides(Selection.of(str(tmp_path / "a")), str(tmp_path / "b"))]
    _, summary = compare_cells(results[0].tables["cells"], results[1].tables["cells"])
    assert summary["throughput_tok_s_differ"] == 0 and summary["throughput_tok_s_same"] == 9


def test_shifts_between_jobs_of_one_run_are_noise_with_repeats(tmp_path):
    """Jobs shifted by up to +-25% while each one's iterations agree within 2% (a loaded machine): from one
    job per cell, iteration spread calls some configs different (the hazard); with three repeats per cell
    the samples are the jobs, and no config-against-config ratio is called a difference."""
    _write_store(str(tmp_path / "one"), np.random.default_rng(5), iterations=3, noise=0.02, run_shift=0.25)
    single = _ratio_entries(_findings(open(write_report(str(tmp_path / "one"), str(tmp_path / "o1"))).read()))
    assert any("no difference" not in e for e in single), single
    _write_store(str(tmp_path / "rep"), np.random.default_rng(5), iterations=3, noise=0.02, run_shift=0.25, repeats=3)
    text = _findings(open(write_report(str(tmp_path / "rep"), str(tmp_path / "o2"))).read())
    entries = _ratio_entries(text)
    assert entries and all("no difference beyond noise" in e for e in entries), entries
    assert "costs more" not in text and "ran one job" not in text


def test_a_real_2x_difference_within_a_run_is_found_with_repeats(tmp_path):
    _write_store(str(tmp_path / "a"), np.random.default_rng(6), iterations=3, noise=0.02, run_shift=0.1,
                 repeats=3, speed={"hybrid": 0.5})
    text = _findings(open(write_report(str(tmp_path / "a"), str(tmp_path / "out"))).read())
    line = next(line for line in text.splitlines() if line.startswith("- Throughput against full"))
    hybrid = re.findall(r"hybrid (0\.\d\d)x \[(\d\.\d\d), (\d\.\d\d)\]([^;,.]*)", line)
    assert len(hybrid) == 3 and all(float(high) < 1 and "no difference" not in rest for _, _, high, rest in hybrid), line
    assert all(0.4 < float(ratio) < 0.6 for ratio, *_ in hybrid), line


def test_a_real_2x_difference_is_reported_with_its_interval(tmp_path):
    _write_store(str(tmp_path / "a"), np.random.default_rng(3), iterations=5)
    _write_store(str(tmp_path / "b"), np.random.default_rng(4), iterations=5, speed={"hybrid": 2.0})
    results = [collect(side) for side in sides(Selection.of(str(tmp_path / "a")), str(tmp_path / "b"))]
    rows, summary = compare_cells(results[0].tables["cells"], results[1].tables["cells"])
    assert summary["throughput_tok_s_differ"] == 3 and summary["throughput_tok_s_same"] == 6
    for r in rows.to_pylist():
        low, high = r["throughput_tok_s_ratio_ci_low"], r["throughput_tok_s_ratio_ci_high"]
        if r["config"] == "hybrid":
            assert 1 < low < 2 < high and r["throughput_tok_s_ratio"] == pytest.approx(2, rel=0.15)
        else:
            assert low < 1 < high
    text = _findings(open(write_report(str(tmp_path / "a"), str(tmp_path / "out"), compare=str(tmp_path / "b"))).read())
    assert re.search(r"Throughput differs beyond noise in: hybrid at 256 \(window 512\): 2\.\d\dx \[\d\.\d\d, \d\.\d\d\]", text)


def test_one_iteration_draws_no_categorical_finding(tmp_path):
    _write_store(str(tmp_path / "a"), np.random.default_rng(3), iterations=1, speed={"hybrid": 0.5})
    text = _findings(open(write_report(str(tmp_path / "a"), str(tmp_path / "out"))).read())
    assert "(no spread)" in text and "--repeats 3" in text
    assert "no difference beyond noise" not in text
    for categorical in ("costs more", "not slower", "Most throughput per GiB"):
        assert categorical not in text
