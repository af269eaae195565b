"""The store's index (workers/store_index.py) changes how fast the numbers come, never what they are:
every shipped query over an indexed store equals the same query reading every file; a file rewritten,
deleted or added after indexing is read as it is now; a damaged, foreign, vanished or linked index is
worked around; the done-check reads no result file the index holds unchanged."""
from __future__ import annotations

import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hybench.orchestrator.cli import main
from hybench.queries import catalog, store_tables
from hybench.queries.store_tables import read_store
from hybench.queries.store_views import Selection, open_views
from hybench.workers import records, store_index
from hybench.workers.store import ResultStore, StoreError
from hybench.workers.store_index import INDEX_DIR, MAX_SEGMENTS, StoreIndex
from queries_fixtures import add_edge_cases, build_store


@pytest.fixture
def store(tmp_path) -> ResultStore:
    synthetic = build_store(str(tmp_path / "store"))
    add_edge_cases(synthetic)  # a truncated file, a newer column, an error job, a missing jobs row, repeats
    return synthetic.store


def _written(root: str, jobs: int = 12) -> ResultStore:
    """A store as workers write it (write_result: every table, one attempt), two of its jobs failed."""
    store = ResultStore(root)
    for index in range(jobs):
        key = dict(job_id=f"job{index:03d}", sweep_id="s", model="m", config="full", input_len=64)
        status = "error" if index % 6 == 5 else "ok"
        store.write_result({"model": "m", "config": "full", "input_len": 64}, key["job_id"], records.result_tables(
            [dict(key, iteration=0, request_id=r, e2e_ms=1.0 + r) for r in range(3)],
            [dict(key, iteration=0)], [dict(key, status=status)]))
    return store


def _answers(uri: str) -> dict[str, list]:
    """Every shipped query's rows, in a stable order, floats to 10 digits (rows summed in another order
    differ in the last bit), and the readers' notes."""
    def row(values: dict) -> str:
        return repr({k: f"{v:.10g}" if isinstance(v, float) else v for k, v in values.items()})

    with open_views(Selection(uri)) as views:
        out = {name: sorted(map(row, views.table(catalog.load(name)).to_pylist())) for name in catalog.names()}
        out["skipped"] = sorted(views.skipped.items())
    return out


def _segments(store: ResultStore) -> list[str]:
    return sorted(os.listdir(os.path.join(store.root, INDEX_DIR)))


def test_every_query_gives_the_same_rows_from_the_index(store):
    plain = _answers(store.uri)
    added = store.refresh_index()
    assert added == sum(len(good) for good, _ in store.scan().values())  # the truncated file is not among them
    assert len(_segments(store)) == 1 and store.refresh_index() == 0  # nothing new: no new segment
    assert _answers(store.uri) == plain


def test_the_done_check_from_the_index(tmp_path):
    store = _written(str(tmp_path / "store"))
    done = store.completed_job_ids()
    assert store.refresh_index() == 12 * 4 and store.completed_job_ids() == done and len(done) == 10


@pytest.mark.parametrize("kind", ["synthetic", "written"])
def test_the_done_check_and_the_readers_open_no_indexed_file(store, tmp_path, monkeypatch, kind):
    store = store if kind == "synthetic" else _written(str(tmp_path / "written"))
    store.refresh_index()
    done, plain = store.completed_job_ids(), _answers(store.uri)
    indexed = {stored.path for good, _ in store.scan().values() for stored in good}
    assert all(stored.segment is not None for good, _ in store.scan().values() for stored in good)
    opened = []

    def watch(real):
        def call(self_or_fs, *args, **kwargs):
            path = next(arg for arg in args if isinstance(arg, str) and arg.endswith(".parquet"))
            opened.append(path)
            return real(self_or_fs, *args, **kwargs)
        return call

    monkeypatch.setattr(ResultStore, "_head", watch(ResultStore._head))
    monkeypatch.setattr("hybench.queries.store_tables.read_rows", watch(store_tables.read_rows))
    assert store.completed_job_ids() == done and _answers(store.uri) == plain
    assert not set(opened) & indexed  # only the synthetic store's truncated file, which is never indexed
    assert bool(opened) == (kind == "synthetic")


def test_files_changed_after_indexing_are_read_as_they_are_now(store):
    store.refresh_index()
    [rewritten, deleted, *_] = [f for f in store.files("requests")]
    data = pq.read_table(rewritten.path)
    data = data.set_column(data.column_names.index("e2e_ms"), "e2e_ms",
                           pa.array([123456.0] * data.num_rows, pa.float64()))
    pq.write_table(data.replace_schema_metadata(pq.read_schema(rewritten.path).metadata), rewritten.path)
    os.unlink(deleted.path)
    read = read_store(store).tables["requests"]
    assert read.filter(pa.compute.equal(read["e2e_ms"], 123456.0)).num_rows == data.num_rows
    assert deleted.job_id not in set(read["job_id"].to_pylist())
    assert _answers(store.uri) == (store.refresh_index(), _answers(store.uri))[1]  # re-indexed: same answers
    assert deleted.job_id not in store.completed_job_ids()


def test_a_damaged_or_foreign_index_changes_no_number(store, monkeypatch):
    plain = _answers(store.uri)
    store.refresh_index()
    [segment] = _segments(store)
    folder = os.path.join(store.root, INDEX_DIR, segment)
    with open(os.path.join(folder, "rows-requests.parquet"), "wb") as fh:
        fh.write(b"PAR1 not parquet")
    assert _answers(store.uri) == plain  # the segment's requests rows are read from the files instead
    with open(os.path.join(folder, store_index.MANIFEST), "wb") as fh:
        fh.write(b"garbage")
    assert _answers(store.uri) == plain
    shutil.rmtree(os.path.join(store.root, INDEX_DIR))
    monkeypatch.setattr(store_index, "format_tag", lambda: b"an older hybench")
    store.refresh_index()
    monkeypatch.undo()
    assert StoreIndex.load(store.fs, store.root, True).segments == []  # another format: ignored
    assert _answers(store.uri) == plain


def test_a_segment_merged_away_under_a_reader_is_read_from_the_files(store, monkeypatch):
    plain = _answers(store.uri)
    store.refresh_index()
    monkeypatch.setattr(StoreIndex, "rows", lambda *args, **kwargs: None)
    assert _answers(store.uri) == plain


def test_segments_merge_when_there_are_many(store):
    plain = _answers(store.uri)
    files = store.scan()["requests"][0]
    store.refresh_index()
    for stored in files[:MAX_SEGMENTS + 1]:  # each refresh after a rewrite adds a segment
        data = pq.read_table(stored.path)
        pq.write_table(data.replace_schema_metadata(pq.read_schema(stored.path).metadata), stored.path)
        os.utime(stored.path, ns=(1, os.stat(stored.path).st_mtime_ns + 1))
        store.refresh_index()
        assert len(_segments(store)) <= MAX_SEGMENTS
    assert len(_segments(store)) < MAX_SEGMENTS and _answers(store.uri) == plain


def test_a_linked_index_is_not_followed(store, tmp_path, capsys):
    plain = _answers(store.uri)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, os.path.join(store.root, INDEX_DIR))
    with pytest.raises(StoreError, match="symbolic link"):
        store.refresh_index()
    assert list(elsewhere.iterdir()) == [] and _answers(store.uri) == plain
    assert main(["index", "--results-dir", store.uri]) == 2
    assert "symbolic link" in capsys.readouterr().err


def test_hybench_index_command(store, tmp_path, capsys):
    assert main(["index", "--results-dir", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "nowhere").exists()
    assert main(["index", "--results-dir", store.uri, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "result files added to the index" in out and len(_segments(store)) == 1
    # The tables' folders stay plain hive-partitioned Parquet: nothing of the index is inside them.
    assert all(INDEX_DIR not in folders for table in ("requests", "jobs")
               for _, folders, _ in os.walk(store.table_root(table)))
