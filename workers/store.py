"""The results store: one Parquet file per job and table, hive-partitioned, written atomically.

Layout (DESIGN.md section 6): ``<root>/<table>/model=<m>/config=<c>/input_len=<n>/<job_id>.parquet``,
the partition values percent-encoded in the path and not repeated in the file, so that every Parquet
reader (DuckDB, pyarrow, pandas) opens a table's folder with hive partitioning.
The store may be a local folder or a pyarrow filesystem URI (s3://, gs://, file://) so that every
node of a cluster writes to one place. A local write goes to a hidden temporary name (outside the
``*.parquet`` glob), is fsynced, then renamed; on an object store the final key is put whole (a PUT
is atomic) and then a ``<job_id>._SUCCESS`` marker, without which readers ignore the file.
The ``jobs`` file is written last, so a ``jobs`` row that reads back means the job is complete.

One attempt at a job writes its four files (one per table, empty ones too) with `write_result`, which tags them with one attempt id (Parquet
key-value metadata) and, on a local store, holds a lock on the job's partition folder while it writes,
so two attempts that run at once (two drivers on one store, a retry beside a worker given up for lost)
never leave the requests of one beside the jobs row of the other. A reader counts a job complete only
when all four files carry the same attempt. A writer that dies mid-write leaves a hidden temporary file
that names its host and pid; the next write of that file, and `remove_stale_temps`, delete it.
"""
from __future__ import annotations

import contextlib
import functools
import os
import posixpath
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from hybench.workers.job_spec import partition_folders
from hybench.workers.store_index import FILE_COLUMN, MAX_SEGMENTS, Stamp, StoreIndex
from hybench.workers.store_rows import read_rows

try:
    import fcntl
except ImportError:  # Windows: no partition locks; attempt ids still expose interleaved writes
    fcntl = None

TABLES = ("requests", "iterations", "quality", "jobs")  # in the order an attempt writes them: jobs last
REMOTE_ANSWER_S = 30.0  # how long a remote store may take to answer its first question
SUCCESS_SUFFIX = "._SUCCESS"
ATTEMPT_KEY = b"hybench.attempt"  # Parquet key-value metadata: the attempt that wrote the file
STALE_TEMP_S = 24 * 3600  # a temporary file this old, or of a dead writer on this host, is garbage
COMBINE_PIECES = 1000  # indexing many files: their rows are combined into one table this often
LIST_ATTEMPTS = 3  # object store listings retried when a concurrent writer renames an entry under the walk
_LINK = "a symbolic link (links inside the store are not followed)"
_UNREADABLE = "does not read back (truncated, or being written)"


@functools.cache
def _host_tag() -> str:
    """This host, with its pid namespace where there is one, so that two containers of one host name
    never judge each other's pids."""
    try:
        namespace = f"-{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}{namespace}"


def _writer_tag() -> str:
    """Who writes a temporary file: its pid and host."""
    return f"{os.getpid()}@{_host_tag()}"


_TEMP_NAME = re.compile(r"^\.(?P<final>[^/]+\.parquet)\.[0-9a-f]{32}(?:\.(?P<pid>\d+)@(?P<host>.+))?\.tmp$")


class StoreError(Exception):
    """The results store cannot be opened, read or written; the message says which path and why."""


@dataclass(frozen=True, slots=True)
class StoredFile:
    table: str
    job_id: str
    path: str
    attempt: str | None = None  # set by valid_files: the attempt that wrote it (None: an older file)
    problem: str | None = None  # why readers skip it (a symbolic link, unreadable), None when it is fine
    stamp: Stamp | None = None  # size, mtime, inode as listed: the index trusts an entry only while they match
    segment: str | None = None  # set by valid_files: the index segment that holds its rows, if any
    status: str | None = None  # set by valid_files for jobs files: the status of their row


class ResultStore:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        if "\x00" in uri:
            raise StoreError(f"cannot open results store {uri!r}: a path cannot hold a NUL character")
        try:
            if "://" in uri:
                self.fs, root = pafs.FileSystem.from_uri(uri)
            else:
                self.fs, root = pafs.LocalFileSystem(), os.path.abspath(uri)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise StoreError(f"cannot open results store {uri!r}: {exc}") from None
        self.root = root.rstrip("/")
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)
        if not self.is_local:
            self._check_answers()

    def _check_answers(self) -> None:
        """Ask a remote store about its root once, on a thread we can stop waiting for: some stores
        (gs:// without network or credentials) retry silently for minutes. Only silence is judged
        here; an error answer surfaces, with its own text, at the first real read or write."""
        probe = threading.Thread(target=self._probe_root, daemon=True, name="hybench-store-probe")
        probe.start()
        probe.join(REMOTE_ANSWER_S)
        if probe.is_alive():
            raise StoreError(f"results store {self.uri} does not answer within {REMOTE_ANSWER_S:g} s "
                             "(unreachable, or no credentials for it?)")

    def _probe_root(self) -> None:
        with contextlib.suppress(Exception):  # judged by _check_answers from silence alone
            self.fs.get_file_info(self.root)

    # -- paths -----------------------------------------------------------------------------
    def table_root(self, table: str) -> str:
        return posixpath.join(self.root, table)

    def job_path(self, table: str, partition: dict, job_id: str) -> str:
        return posixpath.join(self.table_root(table), *partition_folders(partition), f"{job_id}.parquet")

    def display(self, path: str) -> str:
        return path if self.is_local else f"{self.uri.split('://')[0]}://{path}"

    # -- writing ---------------------------------------------------------------------------
    def write_result(self, partition: dict, job_id: str, tables: dict[str, pa.Table]) -> str:
        """Write one attempt at a job: its requests, iterations and quality rows, then its jobs row (the commit), all
        tagged with a new attempt id, while no other attempt at a job of the partition writes. Returns
        the attempt."""
        if set(tables) != set(TABLES):
            raise ValueError(f"a result holds the tables {', '.join(TABLES)}, got {', '.join(tables)}")
        attempt = uuid.uuid4().hex
        with self._partition_lock(partition):
            if tables["jobs"].column("status").to_pylist() != ["ok"]:
                kept = self._ok_attempt(partition, job_id)
                if kept is not None:  # a worker died after writing its ok result: that result stands
                    return kept
            for table in TABLES:
                data = tables[table]
                metadata = (data.schema.metadata or {}) | {ATTEMPT_KEY: attempt.encode()}
                self.write(table, partition, job_id, data.replace_schema_metadata(metadata))
        return attempt

    @contextlib.contextmanager
    def _partition_lock(self, partition: dict):
        """An exclusive lock on the job's folder of the jobs table, on a local store (flock: released
        when the holder dies; where the file system cannot lock, attempt ids still catch a mix)."""
        if not self.is_local or fcntl is None:
            yield
            return
        folder = self._make_folder(os.path.dirname(self.job_path("jobs", partition, "lock")))
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise StoreError(f"cannot write {folder}: {exc}") from None
        try:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def write(self, table: str, partition: dict, job_id: str, data: pa.Table) -> str:
        """Write one job's table atomically; replaces an earlier attempt at the same job. Prefer
        write_result, which writes every table of an attempt so that readers can pair them.

        The partition columns are left out of the file: readers take them from the path (hive
        partitioning), and a column in both places makes pyarrow and pandas refuse the folder, as the
        path's inferred type (int32, dictionary) differs from the file's."""
        path = self.job_path(table, partition, job_id)
        data = data.drop_columns([name for name in partition if name in data.column_names])
        try:
            if self.is_local:
                self._write_local(path, data)
            else:
                self._write_object(path, data)
        except OSError as exc:
            raise StoreError(f"cannot write {self.display(path)}: {exc}") from None
        return path

    def _make_folder(self, folder: str) -> str:
        """Create `folder` below the root one level at a time, refusing a symbolic link at any level, so
        that no write lands outside the store (a link inside it is never followed)."""
        below = os.path.relpath(folder, self.root).split(os.sep)
        if below[0] == os.pardir:
            raise StoreError(f"cannot write {folder}: outside the results store {self.root}")
        current = self.root
        try:
            os.makedirs(current, exist_ok=True)
            for name in below:
                current = os.path.join(current, name)
                with contextlib.suppress(FileExistsError):
                    os.mkdir(current)
                if os.path.islink(current):
                    raise StoreError(f"cannot write {current}: a symbolic link inside the results store "
                                     "(hybench does not write through links; remove it)")
        except OSError as exc:
            raise StoreError(f"cannot write {folder}: {exc}") from None
        return folder

    def _write_local(self, path: str, data: pa.Table) -> None:
        folder = self._make_folder(os.path.dirname(path))
        if os.path.islink(path):
            os.unlink(path)  # the link itself, never what it points to; the rename below puts the file there
        self._remove_stale_temps_in(folder, os.path.basename(path))
        # Hidden (outside the *.parquet glob and every listing here); names its writer, see _is_stale.
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.{_writer_tag()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                pq.write_table(data, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _write_object(self, path: str, data: pa.Table) -> None:
        marker = path[: -len(".parquet")] + SUCCESS_SUFFIX
        self.fs.create_dir(posixpath.dirname(path), recursive=True)
        with self.fs.open_output_stream(path) as out:
            pq.write_table(data, out)
        with self.fs.open_output_stream(marker) as out:
            out.write(b"")

    # -- temporary files of writers that died ----------------------------------------------
    def remove_stale_temps(self) -> int:
        """Delete the temporary files of writers that died mid-write (killed workers, a killed driver,
        a lost node); returns how many. Readers never see them; this keeps the store clean."""
        if not self.is_local:
            return 0  # object stores put whole objects: no temporary files
        removed = 0
        for table in TABLES:
            for folder, _, names in os.walk(self.table_root(table)):
                removed += self._remove_stale_temps_in(folder)
        return removed

    def _remove_stale_temps_in(self, folder: str, final: str | None = None) -> int:
        """Stale temporary files in one folder (only those of `final` when given)."""
        removed = 0
        try:
            names = os.listdir(folder)
        except OSError:
            return 0
        for name in names:
            match = _TEMP_NAME.match(name)
            if match is None or (final is not None and match["final"] != final):
                continue
            path = os.path.join(folder, name)
            if _is_stale(path, match):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    removed += 1
        return removed

    # -- reading ---------------------------------------------------------------------------
    def files(self, table: str) -> list[StoredFile]:
        """Every complete-looking file of a table (not yet checked for corruption). On a local store a
        symbolic link is not followed: it is listed with its problem, so that readers name and skip it."""
        if self.is_local:
            return self._local_files(table)
        selector = pafs.FileSelector(self.table_root(table), recursive=True, allow_not_found=True)
        for attempt in range(LIST_ATTEMPTS):
            try:
                infos = self.fs.get_file_info(selector)
                break
            except FileNotFoundError as exc:  # an entry went away mid-walk (a writer's rename): list again
                if attempt == LIST_ATTEMPTS - 1:
                    raise StoreError(f"cannot list {self.display(self.table_root(table))}: {exc}") from None
            except OSError as exc:
                raise StoreError(f"cannot list {self.display(self.table_root(table))}: {exc}") from None
        files = {info.path: info for info in infos if info.type == pafs.FileType.File}
        out = []
        for path in sorted(files):
            base = posixpath.basename(path)
            if base.startswith(".") or not base.endswith(".parquet"):
                continue
            if path[: -len(".parquet")] + SUCCESS_SUFFIX not in files:
                continue
            info = files[path]
            stamp = None if info.mtime_ns is None else (info.size, info.mtime_ns, 0)
            out.append(StoredFile(table, base[: -len(".parquet")], path, stamp=stamp))
        return out

    def _local_files(self, table: str) -> list[StoredFile]:
        """A walk that never follows a link (a link to `..` would loop; one to elsewhere would read or
        count files outside the store); an entry that vanishes under the walk (a writer's rename) is gone."""
        root = self.table_root(table)
        if os.path.islink(root):
            return [StoredFile(table, "", root, problem=_LINK)]
        out: list[StoredFile] = []
        pending = [root]
        while pending:
            folder = pending.pop()
            try:
                with os.scandir(folder) as entries:
                    listed = sorted(entries, key=lambda entry: entry.name)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StoreError(f"cannot list {folder}: {exc}") from None
            for entry in listed:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_symlink():
                        out.append(StoredFile(table, "", entry.path, problem=_LINK))
                    elif entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    elif entry.name.endswith(".parquet"):
                        stat = entry.stat(follow_symlinks=False)
                        out.append(StoredFile(table, entry.name[: -len(".parquet")], entry.path,
                                              stamp=(stat.st_size, stat.st_mtime_ns, stat.st_ino)))
                except FileNotFoundError:
                    continue
        return sorted(out, key=lambda stored: stored.path)

    def _footer(self, path: str) -> pq.FileMetaData | None:
        """The file's Parquet footer, or None when it does not read back (a truncated file's does not)."""
        try:
            with self.fs.open_input_file(path) as fh:
                return pq.read_metadata(fh)
        except (OSError, pa.ArrowInvalid):
            return None

    def is_readable(self, path: str) -> bool:
        return self._footer(path) is not None

    def relative(self, path: str) -> str:
        """A path below the root, as the index names it."""
        return path[len(self.root) + 1:]

    def load_index(self) -> StoreIndex:
        return StoreIndex.load(self.fs, self.root, self.is_local)

    def scan(self, tables: tuple[str, ...] = TABLES,
             index: StoreIndex | None = None) -> dict[str, tuple[list[StoredFile], list[StoredFile]]]:
        """(readable, unreadable) files of each table; readers use the first and report the second. A file
        the index holds, unchanged, is taken from it; any other has its footer read (and a jobs file its
        status), one open each."""
        index = self.load_index() if index is None else index
        out = {}
        for table in tables:
            good, bad = [], []
            for stored in self.files(table):
                if stored.problem is not None:
                    bad.append(stored)
                    continue
                entry = index.lookup(table, self.relative(stored.path), stored.stamp)
                if entry is not None:
                    good.append(StoredFile(table, stored.job_id, stored.path, entry.attempt, None, stored.stamp,
                                           entry.segment, entry.status))
                    continue
                readable, attempt, status = self._head(stored.path, with_status=table == "jobs")
                if not readable:
                    bad.append(StoredFile(table, stored.job_id, stored.path, problem=_UNREADABLE))
                    continue
                good.append(StoredFile(table, stored.job_id, stored.path, attempt, None, stored.stamp, None, status))
            out[table] = good, bad
        return out

    def valid_files(self, table: str) -> tuple[list[StoredFile], list[StoredFile]]:
        """(readable, unreadable) files of a table; readers use the first and report the second."""
        return self.scan((table,))[table]

    def _ok_attempt(self, partition: dict, job_id: str) -> str | None:
        """The attempt of the job's complete ok result on disk (jobs row ok, every other table of the same
        attempt), or None."""
        footers = {table: self._footer(self.job_path(table, partition, job_id)) for table in TABLES}
        if any(footer is None for footer in footers.values()):
            return None
        attempts = {(footer.metadata or {}).get(ATTEMPT_KEY) for footer in footers.values()}
        if len(attempts) != 1 or None in attempts:
            return None
        _, _, status = self._head(self.job_path("jobs", partition, job_id), with_status=True)
        return attempts.pop().decode() if status == "ok" else None

    def completed_job_ids(self, statuses: tuple[str, ...] = ("ok",)) -> set[str]:
        """Ids of jobs whose jobs row reads back with one of `statuses` and whose other tables' files
        read back too, written by the same attempt: those a re-run skips."""
        found = self.scan()
        attempts = {table: {f.job_id: f.attempt for f in found[table][0]} for table in TABLES[:-1]}
        done = set()
        for stored in found["jobs"][0]:
            if stored.attempt is None or any(by_job.get(stored.job_id, "") != stored.attempt
                                             for by_job in attempts.values()):
                continue  # a file missing, or of another attempt: that attempt's jobs row is yet to come, or lost
            if stored.status in statuses:
                done.add(stored.job_id)
        return done

    def _head(self, path: str, with_status: bool) -> tuple[bool, str | None, str | None]:
        """Whether the file reads back, its attempt and (with_status: a jobs file) its row's status, from
        one open (ParquetFile, not read_table: the dataset machinery of read_table costs a few ms a file,
        which a 10,000-job done-check feels)."""
        try:
            with self.fs.open_input_file(path) as fh:
                parquet = pq.ParquetFile(fh)
                attempt = (parquet.metadata.metadata or {}).get(ATTEMPT_KEY)
                status = None
                if with_status and "status" in parquet.schema_arrow.names:
                    statuses = parquet.read(columns=["status"]).column("status").to_pylist()
                    status = statuses[0] if statuses else None
                return True, attempt and attempt.decode(), status
        except (OSError, pa.ArrowInvalid):
            return False, None, None

    # -- the index ---------------------------------------------------------------------------
    def refresh_index(self, progress: Callable[[list[StoredFile]], Iterable[StoredFile]] = iter) -> int:
        """Index the result files the index does not hold yet (read as the readers read them; a file
        that does not fit is left for them to name), and merge the segments into one when there are more
        than MAX_SEGMENTS. Returns how many files were added. Safe beside writers, readers and another
        refresh: see store_index.py."""
        index = self.load_index()
        listed = [stored for good, _ in self.scan(index=index).values() for stored in good]
        rows, manifest = self._read_for_index([s for s in listed if s.segment is None and s.stamp], progress)
        added = len(manifest)
        merged = (self._indexed_rows(index, [s for s in listed if s.segment is not None])
                  if len(index.segments) + bool(added) > MAX_SEGMENTS else None)
        if merged is not None:
            for table, pieces in merged[0].items():
                rows[table] += pieces
            manifest += merged[1]
        if manifest:
            index.write_segment(self._put, rows, manifest)
        index.remove([*index.abandoned(), *(index.segments if merged is not None else ())], self.is_local)
        return added

    def _read_for_index(self, files: list[StoredFile], progress) -> tuple[dict[str, list[pa.Table]], list[dict]]:
        rows: dict[str, list[pa.Table]] = {table: [] for table in TABLES}
        manifest = []
        for stored in progress(files):
            data = read_rows(self.fs, self.table_root(stored.table), stored.table, stored.path)
            if isinstance(data, str):
                continue
            name = self.relative(stored.path)
            pieces = rows[stored.table]
            pieces.append(data.append_column(FILE_COLUMN, pa.array([name] * data.num_rows, pa.string())))
            if len(pieces) >= COMBINE_PIECES:  # thousands of small tables cost far more memory than one
                rows[stored.table] = [pa.concat_tables(pieces, promote_options="permissive").combine_chunks()]
            manifest.append(_manifest_row(stored, name))
        return rows, manifest

    def _indexed_rows(self, index: StoreIndex,
                      files: list[StoredFile]) -> tuple[dict[str, list[pa.Table]], list[dict]] | None:
        """The index's rows of `files` (unchanged on disk), to merge into one segment; None when a segment
        went away under us (another refresh merged it): then this one does not merge."""
        rows: dict[str, list[pa.Table]] = {table: [] for table in TABLES}
        wanted: dict[tuple[str, str], set[str]] = {}
        for stored in files:
            wanted.setdefault((stored.segment, stored.table), set()).add(self.relative(stored.path))
        for (segment, table), names in wanted.items():
            data = index.rows(table, segment, names, keep_file=True)
            if data is None:
                return None
            rows[table].append(data)
        return rows, [_manifest_row(stored, self.relative(stored.path)) for stored in files]

    def _put(self, path: str, data: pa.Table) -> None:
        """Write a file of the store's own (its index) atomically, as result files are written."""
        try:
            if self.is_local:
                self._write_local(path, data)
            else:
                self._write_object(path, data)
        except OSError as exc:
            raise StoreError(f"cannot write {self.display(path)}: {exc}") from None


def _manifest_row(stored: StoredFile, name: str) -> dict:
    size, mtime_ns, ino = stored.stamp
    return dict(table=stored.table, file=name, size=size, mtime_ns=mtime_ns, ino=ino, attempt=stored.attempt,
                status=stored.status)


def _is_stale(path: str, match: re.Match) -> bool:
    """A temporary file whose writer, on this host, is gone; elsewhere (or unnamed), one too old to be
    any writer's."""
    if match["pid"] is not None and match["host"] == _host_tag():
        try:
            os.kill(int(match["pid"]), 0)
        except ProcessLookupError:
            return True
        except OSError:  # alive, owned by someone else
            return False
        return False
    try:
        return time.time() - os.path.getmtime(path) > STALE_TEMP_S
    except OSError:
        return False
