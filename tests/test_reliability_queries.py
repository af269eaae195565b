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
