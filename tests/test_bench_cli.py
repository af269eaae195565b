"""`hybench bench` end to end on the tiny preset, and bad input that fails in one line."""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import stats

from hybench.orchestrator.cli import main
from hybench.workers.records import JOBS_SCHEMA, REQUESTS_SCHEMA

ARGS = ["bench", "--model", "tiny-llama", "--config", "hybrid", "--sliding-window-override", "48",
        "--input-lengths", "64,96", "--num-prompts", "3", "--output-len", "5", "--num-warmup-iters", "1",
        "--num-benchmark-iters", "2", "--no-progress"]


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_bench_writes_every_table(tmp_path, capsys):
    out = tmp_path / "results"
    assert main(ARGS + ["--output-dir", str(out), "--output-json", str(tmp_path / "hybrid.json")]) == 0
    printed = capsys.readouterr().out
    assert "Hybrid (SSM+SW)" in printed and "tok/s" in printed
    files = _files(out)
    assert all(f.endswith(".parquet") for f in files)  # no temporary files left behind
    assert len(files) == 8 and all("model=tiny-llama/config=hybrid/input_len=" in f for f in files)  # 2 jobs x 4 tables

    jobs = pq.read_table(out / "jobs").to_pylist()
    requests = pq.read_table(out / "requests").to_pylist()
    assert set(JOBS_SCHEMA.names) <= set(jobs[0]) and set(REQUESTS_SCHEMA.names) <= set(requests[0])
    assert len(jobs) == 2 and all(j["status"] == "ok" for j in jobs)
    assert len(requests) == 2 * 3 * 3  # lengths x prompts x (warmup + measured) iterations
    assert sum(r["warmup"] for r in requests) == 2 * 3
    for r in requests:
        assert r["output_tokens"] == 5 and len(r["itl_ms"]) == 4
        assert r["arrival_ns"] <= r["first_token_ns"] <= r["finish_ns"]
        assert r["tpot_ms"] == pytest.approx((r["e2e_ms"] - r["ttft_ms"]) / 4)
    for j in jobs:
        assert j["ssm_backend"] == "torch-ref" and j["attn_backend"] == "sdpa-ref" and j["ssm_init"] == "seeded"
        assert j["kv_capacity_tokens"] == 48 and j["ssm_state_gib"] > 0 and j["kv_used_gib"] > 0
        measured = [r for r in requests if r["job_id"] == j["job_id"] and not r["warmup"]]
        tokens = sum(r["prompt_tokens"] + r["output_tokens"] for r in measured)
        assert j["throughput_tok_s"] == pytest.approx(tokens / j["elapsed_s"])
    # Each iteration is a sample: its figures over its own requests, summarised in the jobs row.
    iterations = pq.read_table(out / "iterations", partitioning=None).to_pylist()
    assert len(iterations) == 2 * 3 and sum(i["warmup"] for i in iterations) == 2
    for i in iterations:
        mine = [r for r in requests if r["job_id"] == i["job_id"] and r["iteration"] == i["iteration"]]
        assert i["requests"] == len(mine) == 3
        tokens = sum(r["prompt_tokens"] + r["output_tokens"] for r in mine)
        assert i["throughput_tok_s"] == pytest.approx(tokens / i["elapsed_s"])
        assert i["e2e_p99_ms"] == pytest.approx(np.percentile([r["e2e_ms"] for r in mine], 99))
    for j in jobs:
        samples = [i["throughput_tok_s"] for i in iterations if i["job_id"] == j["job_id"] and not i["warmup"]]
        mean, sd = np.mean(samples), np.std(samples, ddof=1)
        low, high = stats.t.interval(0.95, len(samples) - 1, loc=mean, scale=sd / np.sqrt(len(samples)))
        assert j["iterations_n"] == 2 and j["throughput_tok_s_mean"] == pytest.approx(mean)
        assert j["throughput_tok_s_sd"] == pytest.approx(sd)
        assert (j["throughput_tok_s_ci_low"], j["throughput_tok_s_ci_high"]) == pytest.approx((low, high))
    summary = json.loads((tmp_path / "hybrid.json").read_text())
    assert [r["input_len"] for r in summary["results"]] == [64, 96]

    # the same job gets the same id: a re-run replaces its files instead of adding to them
    first_ids = sorted(j["job_id"] for j in jobs)
    assert main(ARGS + ["--output-dir", str(out)]) == 0
    assert _files(out) == files
    assert sorted(j["job_id"] for j in pq.read_table(out / "jobs").to_pylist()) == first_ids


@pytest.mark.parametrize("bad,message", [
    (["--config", "banded"], "invalid choice: 'banded'"),
    (["--sliding-window-override", "0"], "--sliding-window-override must be at least 1"),
    (["--input-lengths", "40000"], "exceeds the 32768 positions tiny-llama supports"),
    (["--input-lengths", ""], "--input-lengths needs a comma-separated list"),
    (["--input-lengths", "64,,96"], "--input-lengths needs a comma-separated list"),
    (["--num-prompts", "-2"], "--num-prompts must be at least 1"),
    (["--model", "no-such/model-here"], "unknown model 'no-such/model-here'"),
    (["--model", "/nonexistent/folder"], "unknown model '/nonexistent/folder'"),
    (["--max-model-len", "80"], "exceeds --max-model-len 80"),
    (["--dtype", "int4"], "invalid choice: 'int4'"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, bad, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "results"
    assert _exit_code(ARGS + ["--output-dir", str(out)] + bad) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def _exit_code(argv: list[str]) -> int:
    """main's return value, or the code of the SystemExit argparse raises for usage errors."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code
