"""The store as users' own Parquet readers open it: a table's folder, hive-partitioned, with the model id
percent-encoded in the paths and given back plain; and hybench's views over stores of both layouts
(partition columns in the files, as older versions wrote them, or only in the paths)."""
from __future__ import annotations

import csv
import io
import os
import subprocess
import sys

import duckdb
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from hybench.queries.store_views import Selection, open_views
from hybench.workers.records import to_table
from hybench.workers.store import ResultStore

MODEL = "meta-llama/Llama-3.2-1B"
JOBS = [("full", 256), ("hybrid", 256), ("hybrid", 1024)]
ROWS_PER_JOB = 3
EXPECTED = sorted((MODEL, config, input_len) for config, input_len in JOBS for _ in range(ROWS_PER_JOB))


def _write_job(store: ResultStore, config: str, input_len: int, *, legacy: bool = False) -> None:
    job_id = f"{config}-{input_len}{'-old' if legacy else ''}"
    key = {"model": MODEL, "config": config, "input_len": input_len}
    requests = to_table("requests", [key | {"job_id": job_id, "iteration": 0, "request_id": i}
                                     for i in range(ROWS_PER_JOB)])
    jobs = to_table("jobs", [key | {"job_id": job_id, "status": "ok"}])
    if not legacy:
        iterations = to_table("iterations", [key | {"job_id": job_id, "iteration": 0}])
        store.write_result(key, job_id, {"requests": requests, "iterations": iterations,
                                         "quality": to_table("quality", []), "jobs": jobs})
        return
    for table, data in (("requests", requests), ("jobs", jobs)):  # as older versions wrote: columns kept
        path = store.job_path(table, key, job_id)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pq.write_table(data, path)


@pytest.fixture
def results(tmp_path) -> str:
    store = ResultStore(str(tmp_path / "results"))
    for config, input_len in JOBS:
        _write_job(store, config, input_len)
    return store.root


def _keys(rows) -> list[tuple]:
    return sorted((row["model"], row["config"], int(row["input_len"])) for row in rows)


def test_files_hold_no_partition_columns_and_paths_percent_encode_the_model(results):
    paths = [os.path.join(d, f) for d, _, names in os.walk(results) for f in names]
    assert len(paths) == 4 * len(JOBS)  # requests, iterations, quality, jobs
    for path in paths:
        assert "model=meta-llama%2FLlama-3.2-1B" in path
        assert not {"model", "config", "input_len"} & set(pq.read_schema(path).names)


def test_pyarrow_dataset_with_hive_partitioning(results):
    table = ds.dataset(os.path.join(results, "requests"), partitioning="hive").to_table()
    assert _keys(table.to_pylist()) == EXPECTED


def test_pyarrow_read_table_of_the_folder(results):
    assert _keys(pq.read_table(os.path.join(results, "requests")).to_pylist()) == EXPECTED
    [job] = [r for r in pq.read_table(os.path.join(results, "jobs")).to_pylist() if r["config"] == "full"]
    assert job["status"] == "ok" and job["model"] == MODEL


def test_pandas_read_parquet_of_the_folder(results):
    frame = pd.read_parquet(os.path.join(results, "requests"))
    assert _keys(frame.to_dict("records")) == EXPECTED


def test_duckdb_read_parquet_with_hive_partitioning(results):
    rows = duckdb.sql(f"SELECT model, config, input_len FROM read_parquet('{results}/requests/**/*.parquet', "
                      "hive_partitioning = true)").fetchall()
    assert sorted(rows) == EXPECTED


def test_duckdb_cli(results):
    cli = os.path.join(os.path.dirname(sys.executable), "duckdb")  # pip install duckdb-cli (the test extra)
    sql = (f"SELECT model, config, input_len FROM read_parquet('{results}/requests/**/*.parquet', "
           "hive_partitioning = true) ORDER BY ALL")
    out = subprocess.run([cli, "-csv", "-c", sql], capture_output=True, text=True, check=True).stdout
    assert _keys(csv.DictReader(io.StringIO(out))) == EXPECTED


def test_hybench_views_read_old_and_new_stores_alike(results):
    store = ResultStore(results)
    _write_job(store, "sliding", 512, legacy=True)
    with open_views(Selection.of(results)) as views:
        rows = views.table("SELECT model, config, input_len FROM requests").to_pylist()
        jobs = views.table("SELECT model, config, input_len, status FROM jobs").to_pylist()
    assert _keys(rows) == sorted(EXPECTED + [(MODEL, "sliding", 512)] * ROWS_PER_JOB)
    assert sorted((j["config"], j["input_len"], j["model"]) for j in jobs) == sorted(
        [(c, n, MODEL) for c, n in JOBS] + [("sliding", 512, MODEL)])


def test_the_cli_store_and_readers_load_without_torch():
    """`hybench query`, `report` and the sweep's skip check read Parquet only; torch's import alone cost
    each of them seconds, so the engine package loads its names on first use."""
    probe = ("import sys, hybench.orchestrator.cli, hybench.workers.store, hybench.queries.store_tables; "
             "print(sorted(name for name in ('torch', 'ray') if name in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
