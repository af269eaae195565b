"""The results store: one Parquet file per job and table, hive-partitioned, written atomically.

Layout (DESIGN.md section 6): ``<root>/<table>/model=<m>/config=<c>/input_len=<n>/<job_id>.parquet``.
The store may be a local folder or a pyarrow filesystem URI (s3://, gs://, file://) so that every
node of a cluster writes to one place. A local write goes to a hidden temporary name (outside the
``*.parquet`` glob), is fsynced, then renamed; on an object store the final key is put whole (a PUT
is atomic) and then a ``<job_id>._SUCCESS`` marker, without which readers ignore the file.
The ``jobs`` file is written last, so a ``jobs`` row that reads back means the job is complete.
"""
from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass
from urllib.parse import quote

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

TABLES = ("requests", "jobs")
SUCCESS_SUFFIX = "._SUCCESS"


class StoreError(Exception):
    """The results store cannot be opened, read or written; the message says which path and why."""


@dataclass(frozen=True, slots=True)
class StoredFile:
    table: str
    job_id: str
    path: str


class ResultStore:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        try:
            if "://" in uri:
                self.fs, root = pafs.FileSystem.from_uri(uri)
            else:
                self.fs, root = pafs.LocalFileSystem(), os.path.abspath(uri)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise StoreError(f"cannot open results store {uri!r}: {exc}") from None
        self.root = root.rstrip("/")
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    # -- paths -----------------------------------------------------------------------------
    def table_root(self, table: str) -> str:
        return posixpath.join(self.root, table)

    def job_path(self, table: str, partition: dict, job_id: str) -> str:
        parts = [f"{key}={quote(str(value), safe='')}" for key, value in partition.items()]
        return posixpath.join(self.table_root(table), *parts, f"{job_id}.parquet")

    def display(self, path: str) -> str:
        return path if self.is_local else f"{self.uri.split('://')[0]}://{path}"

    # -- writing ---------------------------------------------------------------------------
    def write(self, table: str, partition: dict, job_id: str, data: pa.Table) -> str:
        """Write one job's table atomically; replaces an earlier attempt at the same job."""
        path = self.job_path(table, partition, job_id)
        try:
            if self.is_local:
                self._write_local(path, data)
            else:
                self._write_object(path, data)
        except OSError as exc:
            raise StoreError(f"cannot write {self.display(path)}: {exc}") from None
        return path

    def _write_local(self, path: str, data: pa.Table) -> None:
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
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

    # -- reading ---------------------------------------------------------------------------
    def files(self, table: str) -> list[StoredFile]:
        """Every complete-looking file of a table (not yet checked for corruption)."""
        selector = pafs.FileSelector(self.table_root(table), recursive=True, allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as exc:
            raise StoreError(f"cannot list {self.display(self.table_root(table))}: {exc}") from None
        names = {info.path for info in infos if info.type == pafs.FileType.File}
        out = []
        for path in sorted(names):
            base = posixpath.basename(path)
            if base.startswith(".") or not base.endswith(".parquet"):
                continue
            if not self.is_local and path[: -len(".parquet")] + SUCCESS_SUFFIX not in names:
                continue
            out.append(StoredFile(table, base[: -len(".parquet")], path))
        return out

    def is_readable(self, path: str) -> bool:
        """True when the file's Parquet footer reads back (a truncated file's does not)."""
        try:
            with self.fs.open_input_file(path) as fh:
                pq.read_metadata(fh)
            return True
        except (OSError, pa.ArrowInvalid):
            return False

    def valid_files(self, table: str) -> tuple[list[StoredFile], list[StoredFile]]:
        """(readable, unreadable) files of a table; readers use the first and report the second."""
        good, bad = [], []
        for stored in self.files(table):
            (good if self.is_readable(stored.path) else bad).append(stored)
        return good, bad

    def completed_job_ids(self, statuses: tuple[str, ...] = ("ok",)) -> set[str]:
        """Ids of jobs whose jobs row reads back with one of `statuses` and whose requests file
        reads back too: those a re-run skips."""
        requests_ok = {f.job_id for f in self.valid_files("requests")[0]}
        done = set()
        for stored in self.valid_files("jobs")[0]:
            if stored.job_id not in requests_ok:
                continue
            with self.fs.open_input_file(stored.path) as fh:
                status = pq.read_table(fh, columns=["status"]).column("status").to_pylist()
            if status and status[0] in statuses:
                done.add(stored.job_id)
        return done
