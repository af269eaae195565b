"""A hostile store and hostile SQL: queries write nothing, links steer nothing, a stranger's bad file is
named and skipped while every other cell still reports, attempts are paired, and an ok result stays."""
from __future__ import annotations

import glob
import hashlib
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hybench.orchestrator.cli import main
from hybench.workers import records
from hybench.workers.store import ATTEMPT_KEY, ResultStore, StoreError
from queries_fixtures import build_store


def _digests(root: str) -> dict[str, str]:
    return {path: hashlib.sha256(open(path, "rb").read()).hexdigest()
            for path in glob.glob(os.path.join(root, "**"), recursive=True) if os.path.isfile(path)}


@pytest.fixture
def store(tmp_path) -> str:
    root = str(tmp_path / "store")
    build_store(root)
    return root


def _a_jobs_file(root: str) -> str:
    return sorted(glob.glob(os.path.join(root, "jobs", "**", "*.parquet"), recursive=True))[0]


def _copy_over(path: str, fmt: str = "csv") -> str:
    return f"COPY (SELECT 'pwned' AS a) TO '{path}' (FORMAT {fmt}, USE_TMP_FILE false)"


@pytest.mark.parametrize("how", ["sql", "query --where", "report --where"])
def test_sql_cannot_overwrite_a_file_of_the_store(store, tmp_path, capsys, how):
    target = _a_jobs_file(store)
    before = _digests(store)
    copy = _copy_over(target)
    if how == "sql":
        argv = ["query", "--results-dir", store, copy]
    else:
        command = how.split()[0]
        where = f"TRUE); {copy}; SELECT (1"
        argv = [command, "--results-dir", store, "--where", where]
        argv += ["SELECT count(*) FROM jobs"] if command == "query" else ["--output-dir", str(tmp_path / "plots")]
    code = main(argv)
    capsys.readouterr()
    assert code == 2
    assert _digests(store) == before


# -- query --output ----------------------------------------------------------------------------------
def _query_to(store: str, output: str, *extra: str) -> list[str]:
    return ["query", "--results-dir", store, "--format", "csv", "--output", output, *extra, "SELECT * FROM requests"]


@pytest.mark.parametrize("case", ["a folder", "a missing folder", "inside the store"])
def test_output_that_cannot_be_written_whole_is_one_line(store, tmp_path, capsys, case):
    output = {"a folder": str(tmp_path), "a missing folder": str(tmp_path / "missing" / "out.csv"),
              "inside the store": os.path.join(store, "jobs", "out.csv")}[case]
    before = _digests(store)
    assert main(_query_to(store, output)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--output" in err and "Traceback" not in err, err
    assert _digests(store) == before and not os.path.exists(os.path.join(store, "jobs", "out.csv"))


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_full_disk_or_ctrl_c_during_output_leaves_no_partial_file(store, tmp_path, capsys, monkeypatch, failure):
    from hybench.queries import output as output_module

    real = output_module._write_csv

    def fail_midway(columns, batches, out):
        out.write("config\nhalf a row")
        raise failure

    monkeypatch.setattr(output_module, "_write_csv", fail_midway)
    target = tmp_path / "out.csv"
    code = main(_query_to(store, str(target)))
    err = capsys.readouterr().err
    assert code == (2 if isinstance(failure, OSError) else 130)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "No space left" in err if isinstance(failure, OSError) else "interrupted; nothing written" in err
    assert os.listdir(tmp_path) == ["store"]  # neither the file nor a temporary one
    monkeypatch.setattr(output_module, "_write_csv", real)
    assert main(_query_to(store, str(target))) == 0 and target.read_text().startswith("job_id,")


# -- symbolic links in the store ---------------------------------------------------------------------
def _count(store: str, capsys, sql: str) -> tuple[int, str]:
    assert main(["query", "--results-dir", store, "--format", "csv", sql]) == 0
    captured = capsys.readouterr()
    return int(captured.out.splitlines()[1]), captured.err


def test_links_in_the_store_are_named_and_not_followed(store, tmp_path, capsys):
    requests, _ = _count(store, capsys, "SELECT count(*) FROM requests")
    folder = os.path.dirname(_a_jobs_file(store))
    os.symlink("..", os.path.join(folder, "loop_a"))  # two links to .. : a walk that follows them never ends
    os.symlink("..", os.path.join(folder, "loop_b"))
    other = str(tmp_path / "other")
    build_store(other, seed=5)  # another store's partition, linked in as one more partition of this one
    linked = os.path.join(store, "requests", os.path.relpath(os.path.dirname(folder), os.path.join(store, "jobs")),
                          "input_len=999")
    os.symlink(os.path.join(other, "requests", os.path.relpath(folder, os.path.join(store, "jobs"))), linked)
    counted, err = _count(store, capsys, "SELECT count(*) FROM requests")
    assert counted == requests
    assert "loop_a: a symbolic link" in err and "input_len=999: a symbolic link" in err


def test_a_writer_never_writes_through_a_link_in_the_store(tmp_path):
    store = ResultStore(str(tmp_path / "store"))
    outside = tmp_path / "outside"
    outside.mkdir()
    partition = {"model": "m", "config": "full", "input_len": 8}
    folder = os.path.dirname(store.job_path("requests", partition, "j"))
    os.makedirs(os.path.dirname(folder))
    os.symlink(outside, folder)
    rows = [{"job_id": "j", "iteration": 0, "request_id": 0}]
    with pytest.raises(StoreError, match="symbolic link"):
        store.write_result(partition, "j", records.result_tables(rows, rows, [{"job_id": "j", "status": "ok"}]))
    assert os.listdir(outside) == []


# -- a stranger's file does not take the report down ---------------------------------------------------
def _write(path: str, table: pa.Table) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path)
    return path


def test_files_that_do_not_fit_are_named_skipped_and_noted(store, tmp_path, capsys):
    jobs_folder = os.path.dirname(_a_jobs_file(store))
    row = pq.read_table(_a_jobs_file(store)).to_pylist()[0]
    wrong_type = records.to_table("jobs", [row | {"job_id": "wrong-type"}]).drop_columns(["throughput_tok_s"])
    wrong_type = wrong_type.append_column("throughput_tok_s", pa.array(["fast"]))
    bad = {
        _write(os.path.join(jobs_folder, "wrong-type.parquet"), wrong_type): "column throughput_tok_s is string",
        _write(os.path.join(store, "jobs", "stray.parquet"),
               records.to_table("jobs", [row | {"job_id": "stray"}])): "not at a partition path",
        _write(os.path.join(store, "jobs", "model=m", "config=full", "input_len=abc", "x.parquet"),
               records.to_table("jobs", [row | {"job_id": "x"}])): "input_len='abc' is not a number",
    }
    assert main(["query", "--results-dir", store, "--name", "latency", "--format", "csv"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1 + 9  # every cell of the store still reports
    for path, why in bad.items():
        assert f"{path}: " in captured.err and why in captured.err
    assert main(["report", "--results-dir", store, "--output-dir", str(tmp_path / "plots")]) == 0
    summary = (tmp_path / "plots" / "summary.md").read_text()
    assert "3 results files were skipped" in summary and all(f"`{path}` (" in summary for path in bad)


def test_a_sweep_whose_jobs_finished_exits_by_its_jobs_not_by_a_strangers_file(tmp_path):
    from ray_helpers import TINY_ARGS, run_cli

    results = str(tmp_path / "results")
    _write(os.path.join(results, "jobs", "stray.parquet"), pa.table({"job_id": [1]}))
    with_report = [arg for arg in TINY_ARGS if arg != "--no-report"]
    done = run_cli("sweep", *with_report, "--results", results, "--format", "svg")
    assert done.returncode == 0, done.stderr
    assert "stray.parquet: not at a partition path" in done.stderr
    assert "report: " in done.stdout


# -- readers pair attempts; duplicated rows and NaN metrics are flagged, not counted ---------------------
def test_requests_of_another_attempt_are_not_counted(store, capsys):
    path = sorted(glob.glob(os.path.join(store, "requests", "**", "*.parquet"), recursive=True))[0]
    job_id = os.path.basename(path)[: -len(".parquet")]
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({ATTEMPT_KEY: b"another-attempt"}), path)
    counted, err = _count(store, capsys, f"SELECT count(*) FROM requests WHERE job_id = '{job_id}'")
    assert counted == 0 and "written by another attempt" in err


def test_duplicated_jobs_rows_and_nan_metrics_are_flagged_not_counted(store, tmp_path, capsys):
    first, second = sorted(glob.glob(os.path.join(store, "jobs", "**", "*.parquet"), recursive=True))[:2]
    duplicated = pq.read_table(first)
    pq.write_table(duplicated, os.path.join(os.path.dirname(first), "copy.parquet"))
    nan_row = pq.read_table(second)
    pq.write_table(nan_row.set_column(nan_row.schema.get_field_index("throughput_tok_s"), "throughput_tok_s",
                                      pa.array([float("nan")])), second)
    job_id = duplicated["job_id"][0].as_py()
    counted, _ = _count(store, capsys, f"SELECT count(*) FROM jobs WHERE job_id = '{job_id}'")
    assert counted == 0
    assert main(["query", "--results-dir", store, "--format", "csv",
                 "SELECT count(*) FILTER (WHERE isnan(throughput_tok_s)) AS n FROM jobs"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "0"
    assert main(["report", "--results-dir", store, "--output-dir", str(tmp_path / "plots")]) == 0
    summary = (tmp_path / "plots" / "summary.md").read_text()
    assert f"1 jobs were left out because their jobs row appears more than once" in summary and job_id in summary
    assert "1 metric values were NaN and are not counted" in summary


# -- an ok result stands --------------------------------------------------------------------------------
def test_an_ok_result_is_never_replaced_by_a_later_error_of_the_same_job(tmp_path):
    store = ResultStore(str(tmp_path / "store"))
    partition = {"model": "m", "config": "full", "input_len": 8}
    rows = [{"job_id": "j", "iteration": 0, "request_id": 0}]
    ok = store.write_result(partition, "j", records.result_tables(rows, rows, [{"job_id": "j", "status": "ok"}]))
    error = [{"job_id": "j", "status": "error", "error": "worker lost"}]
    assert store.write_result(partition, "j", records.result_tables([], [], error)) == ok
    assert pq.read_table(store.job_path("jobs", partition, "j"))["status"].to_pylist() == ["ok"]
    assert store.completed_job_ids() == {"j"}
    again = store.write_result(partition, "j", records.result_tables(rows, rows, [{"job_id": "j", "status": "ok"}]))
    assert again != ok  # a new ok result still replaces the old one
