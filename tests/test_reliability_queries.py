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
from hybench.workers.store import ResultStore
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
