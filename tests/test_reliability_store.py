"""The results store under faults (issue 7), without Ray: a disk that fills up at any point of a write,
writers killed mid-write, two attempts at one job writing at once, hostile partition values.

Guarantees pinned here: a write either lands whole or leaves nothing (no partial or temporary file),
with a clear StoreError; a job counts as complete only when its requests and jobs files come from the
same attempt; temporary files of dead writers are cleaned up; nothing lands outside the store.
"""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time

import pyarrow.parquet as pq
import pytest

import hybench.workers.store as store_module
from hybench.workers.records import to_table
from hybench.workers.store import ResultStore, StoreError

PARTITION = {"model": "tiny-llama", "config": "hybrid", "input_len": 64}
JOB = "0123456789abcdef0123"


def _tables(tag: str):
    requests = to_table("requests", [{"job_id": JOB, "iteration": 0, "request_id": i, "sweep_id": tag} for i in range(3)])
    iterations = to_table("iterations", [{"job_id": JOB, "iteration": 0, "sweep_id": tag}])
    quality = to_table("quality", [{"job_id": JOB, "request_id": 0, "sweep_id": tag}])
    jobs = to_table("jobs", [{"job_id": JOB, "status": "ok", "sweep_id": tag}])
    return {"requests": requests, "iterations": iterations, "quality": quality, "jobs": jobs}


def _files(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def _tags(store: ResultStore) -> dict[str, str]:
    """Which attempt (by the tag written into its rows) each table's file holds."""
    out = {}
    for table in ("requests", "jobs"):
        [stored] = store.files(table)
        out[table] = set(pq.read_table(stored.path).column("sweep_id").to_pylist()).pop()
    return out


# -- a full disk ---------------------------------------------------------------------------------------
def _fail_nth(monkeypatch, target: str, n: int) -> list[int]:
    """Make the n-th call (0-based) to `target` in the store module raise ENOSPC."""
    calls = [0]
    module, name = (store_module.os, target) if target in ("fsync", "replace") else (store_module.pq, target)
    real = getattr(module, name)

    def failing(*args, **kwargs):
        calls[0] += 1
        if calls[0] - 1 == n:
            if name == "write_table":  # half of the bytes reach the file first
                real(args[0].slice(0, args[0].num_rows // 2), *args[1:], **kwargs)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)
    return calls


# Each point where a full disk can fail a write_result: writing the bytes, fsync of the file and of its
# folder, the rename; for the requests file, then for the jobs file.
FAULTS = [("write_table", 0), ("write_table", 1), ("fsync", 0), ("fsync", 1), ("fsync", 2), ("fsync", 3),
          ("replace", 0), ("replace", 1)]


@pytest.mark.parametrize("target,nth", FAULTS, ids=[f"{t}-{n}" for t, n in FAULTS])
def test_disk_full_at_any_point_of_a_write_leaves_no_partial_file(tmp_path, monkeypatch, target, nth):
    store = ResultStore(str(tmp_path / "store"))
    store.write_result(PARTITION, JOB, _tables("first"))
    before = {path: open(os.path.join(store.root, path), "rb").read() for path in _files(store.root)}
    with monkeypatch.context() as patch:
        _fail_nth(patch, target, nth)
        with pytest.raises(StoreError, match=r"^cannot write \S+\.parquet: \[Errno 28\] No space left on device$"):
            store.write_result(PARTITION, JOB, _tables("second"))
    after = _files(store.root)
    assert not [f for f in after if f.endswith(".tmp")] and after == sorted(before)  # nothing half written
    for path in after:
        assert pq.read_metadata(os.path.join(store.root, path)).num_rows > 0  # every file whole
    tags = _tags(store)
    if tags["requests"] == "first":  # failed before the new requests landed: the first attempt stands
        assert all(open(os.path.join(store.root, p), "rb").read() == data for p, data in before.items())
        assert tags["jobs"] == "first" and store.completed_job_ids() == {JOB}
    elif tags["jobs"] == "first":  # the new requests landed, its jobs row did not: a re-run redoes the job
        assert tags["requests"] == "second" and store.completed_job_ids() == set()
    else:  # both landed, only the last fsync of their folder failed: complete, and said so
        assert tags == {"requests": "second", "jobs": "second"} and store.completed_job_ids() == {JOB}
    store.write_result(PARTITION, JOB, _tables("third"))  # the re-run, with space again
    assert store.completed_job_ids() == {JOB} and _tags(store) == {"requests": "third", "jobs": "third"}


def test_a_store_that_cannot_be_written_is_one_clear_error(tmp_path):
    (tmp_path / "store").write_text("a file where the store should be")
    with pytest.raises(StoreError, match=r"^cannot write .*store/jobs/model=tiny-llama/config=hybrid/input_len=64: "):
        ResultStore(str(tmp_path / "store")).write_result(PARTITION, JOB, _tables("x"))
    assert (tmp_path / "store").read_text() == "a file where the store should be"


class _VanishingEntries:
    """A filesystem whose listing of a table fails `failures` times with ENOENT, as a walk does when a
    writer renames an entry under it, then lists normally."""

    def __init__(self, fs, failures: int) -> None:
        self.fs, self.failures = fs, failures

    def get_file_info(self, selector):
        if self.failures and selector.recursive:  # a table's walk (the index's listing is one level)
            self.failures -= 1
            raise FileNotFoundError(errno.ENOENT, "Cannot list directory", selector.base_dir)
        return self.fs.get_file_info(selector)

    def __getattr__(self, name):
        return getattr(self.fs, name)


@pytest.mark.parametrize("failures, lists", [(1, True), (store_module.LIST_ATTEMPTS - 1, True),
                                             (store_module.LIST_ATTEMPTS, False)])
def test_listing_during_writes_retries_a_vanished_entry(tmp_path, failures, lists):
    """Readers (a re-run's skip check, `hybench query`, a polling test) list while writers rename:
    a transient ENOENT is listed again; one that persists is one clear error. (An object store's listing:
    a local store is walked entry by entry, where a vanished entry is simply gone.)"""
    store = ResultStore(f"mock://{tmp_path.name}/store")
    store.write_result(PARTITION, JOB, _tables("x"))
    store.fs = _VanishingEntries(store.fs, failures)
    if lists:
        assert store.completed_job_ids() == {JOB}
    else:
        with pytest.raises(StoreError, match=r"^cannot list .*store/requests: "):
            store.completed_job_ids()


# -- writers killed mid-write ------------------------------------------------------------------------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporary_files_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    store = ResultStore(str(tmp_path / "store"))
    store.write_result(PARTITION, JOB, _tables("first"))
    folder = os.path.dirname(store.job_path("jobs", PARTITION, JOB))
    me = store_module._writer_tag()
    host = me.split("@", 1)[1]
    names = {
        "dead": f".{JOB}.parquet.{'a' * 32}.{_dead_pid()}@{host}.tmp",  # killed mid-write on this host
        "live": f".{JOB}.parquet.{'b' * 32}.{me}.tmp",  # a write in progress in this process
        "elsewhere": f".{JOB}.parquet.{'c' * 32}.1@another-host.tmp",  # another node's, recent
        "old": f".{JOB}.parquet.{'d' * 32}.tmp",  # an earlier version's, a day and more old
        "other file": f".other.parquet.{'e' * 32}.{_dead_pid()}@{host}.tmp",
    }
    for name in names.values():
        (tmp_path / folder / name).write_bytes(b"PAR1 half")
    os.utime(os.path.join(folder, names["old"]), (time.time() - 2 * 86400,) * 2)

    store.write_result(PARTITION, JOB, _tables("second"))  # rewriting the job removes its own dead temps
    left = set(os.listdir(folder))
    assert names["dead"] not in left and names["old"] not in left
    assert {names["live"], names["elsewhere"], names["other file"]} <= left
    assert store.remove_stale_temps() == 1  # the other job's, at the start of the next sweep
    assert {n for n in os.listdir(folder) if n.endswith(".tmp")} == {names["live"], names["elsewhere"]}
    assert store.completed_job_ids() == {JOB}  # temporary files are never results


def test_a_writer_killed_mid_write_leaves_only_a_hidden_temporary_file(tmp_path):
    root = str(tmp_path / "store")
    ResultStore(root).write_result(PARTITION, JOB, _tables("first"))
    script = (
        "import sys, os, signal\n"
        "import hybench.workers.store as s\n"
        "from test_reliability_store import PARTITION, JOB, _tables\n"
        "real = s.pq.write_table\n"
        "def write_then_die(table, where, *a, **k):\n"
        "    real(table.slice(0, 1), where, *a, **k)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "s.pq.write_table = write_then_die\n"
        "s.ResultStore(sys.argv[1]).write_result(PARTITION, JOB, _tables('killed'))\n")
    env = os.environ | {"PYTHONPATH": os.path.dirname(__file__)}
    assert subprocess.run([sys.executable, "-c", script, root], env=env).returncode == -9
    store = ResultStore(root)
    assert len([f for f in _files(root) if f.endswith(".tmp")]) == 1
    assert store.completed_job_ids() == {JOB} and _tags(store) == {"requests": "first", "jobs": "first"}
    assert store.remove_stale_temps() == 1 and not [f for f in _files(root) if f.endswith(".tmp")]


# -- two attempts at once ----------------------------------------------------------------------------
class _Steered(ResultStore):
    """Runs `after_requests` between an attempt's requests and jobs writes."""

    after_requests: dict[str, object] = {}

    def write(self, table, partition, job_id, data):
        path = super().write(table, partition, job_id, data)
        hook = self.after_requests.get(threading.current_thread().name)
        if table == "requests" and hook is not None:
            hook()
        return path


@pytest.mark.parametrize("locked", [True, False], ids=["store", "without-its-lock"])
def test_two_attempts_writing_at_once_never_leave_a_mix(tmp_path, monkeypatch, locked):
    """Attempt A writes its requests, then B runs whole, then A writes its jobs row: without the
    partition lock that leaves B's requests beside A's jobs row (the readers then refuse the pair);
    with it, B waits for A and the pair is B's."""
    if not locked:
        monkeypatch.setattr(store_module, "fcntl", None)
    store = _Steered(str(tmp_path / "store"))
    a_wrote_requests, b_done = threading.Event(), threading.Event()

    def a_waits_for_b():
        a_wrote_requests.set()
        b_done.wait(timeout=1.0)  # B blocks on the lock: A goes on after the timeout

    store.after_requests = {"A": a_waits_for_b}

    def run_b():
        a_wrote_requests.wait()
        store.write_result(PARTITION, JOB, _tables("B"))
        b_done.set()

    threads = [threading.Thread(target=lambda: store.write_result(PARTITION, JOB, _tables("A")), name="A"),
               threading.Thread(target=run_b, name="B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tags = _tags(store)
    if locked:
        assert tags == {"requests": "B", "jobs": "B"} and store.completed_job_ids() == {JOB}
    else:
        assert tags == {"requests": "B", "jobs": "A"}  # the mix the lock prevents ...
        assert store.completed_job_ids() == set()  # ... which readers still refuse: a re-run redoes it


# -- nothing outside the store -----------------------------------------------------------------------
@pytest.mark.parametrize("model", ["../../escape", "/etc/passwd", "..", "a/../../b", "model=x/config=y", "C:\\x"])
def test_hostile_partition_values_stay_inside_the_store(tmp_path, model):
    store = ResultStore(str(tmp_path / "store"))
    partition = PARTITION | {"model": model, "config": "../x"}
    store.write_result(partition, JOB, _tables("x"))
    files = _files(tmp_path)
    assert len(files) == 4 and all(f.startswith("store/") and f.count("/") == 5 for f in files), files
    assert store.completed_job_ids() == {JOB}
