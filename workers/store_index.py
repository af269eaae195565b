"""The store's index: rows of result files already read, kept in a few large files beside the tables, so
that readers of a store of thousands of jobs open a handful of files instead of three a job.

A segment, ``<root>/_index/seg-<time>-<id>/``, holds for each table the rows of some result files as
the readers would read them (``rows-<table>.parquet``; its ``_file`` column names each row's file) and
a manifest (``files.parquet``, written last: a segment without one is ignored) with each file's stamp
(size, modification time in ns, inode) and the attempt and status read from it. A reader trusts an
entry only while the file on disk has the same path and stamp; every other file (new, rewritten,
never indexed) it reads itself. So an index that is stale, partial, deleted, unreadable or from another
version of hybench (its format tag differs) changes how fast the numbers come, never what they are.
The sweep adds a segment for the files it wrote when it ends and merges segments when there are many;
`hybench index` does the same on demand. Nothing of the index is inside a table's folder, so every
Parquet reader still opens ``<root>/<table>`` as plain hive-partitioned Parquet.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from hybench.workers.records import SCHEMAS

INDEX_DIR = "_index"
MANIFEST = "files.parquet"
FILE_COLUMN = "_file"  # in a segment's rows: the result file (relative to the root) a row came from
MAX_SEGMENTS = 8  # more than this and the next refresh merges them into one
FORMAT_KEY = b"hybench.index"
ABANDONED_NS = 3600 * 10**9  # a segment without a readable manifest this old was cut short, not in progress
_SEGMENT = re.compile(r"^seg-\d{20}-[0-9a-f]{8}$")

Stamp = tuple[int, int, int]  # size, mtime in ns, inode (0 where the filesystem has none)

MANIFEST_SCHEMA = pa.schema([("table", pa.string()), ("file", pa.string()), ("size", pa.int64()),
                             ("mtime_ns", pa.int64()), ("ino", pa.int64()), ("attempt", pa.string()),
                             ("status", pa.string())])


def format_tag() -> bytes:
    """Changes whenever a table's contract or the index's own layout does: an index of another version
    is then ignored (and rebuilt by the next refresh), never read into today's types."""
    described = repr([(name, str(schema)) for name, schema in sorted(SCHEMAS.items())]) + str(MANIFEST_SCHEMA)
    return b"1:" + hashlib.sha256(described.encode()).hexdigest()[:16].encode()


@dataclass(frozen=True, slots=True)
class Entry:
    segment: str
    stamp: Stamp
    attempt: str | None
    status: str | None  # jobs files: the status of their row


@dataclass
class StoreIndex:
    """The segments of one store's index as loaded: who holds which file's rows."""

    fs: pafs.FileSystem
    root: str
    segments: list[str] = field(default_factory=list)  # readable, of this format, oldest first
    foreign: list[str] = field(default_factory=list)  # ours by name but unreadable or of another format
    entries: dict[tuple[str, str], Entry] = field(default_factory=dict)  # (table, file) -> newest entry

    @property
    def folder(self) -> str:
        return posixpath.join(self.root, INDEX_DIR)

    @classmethod
    def load(cls, fs: pafs.FileSystem, root: str, is_local: bool) -> StoreIndex:
        index = cls(fs, root)
        for segment in index._segment_names(is_local):
            manifest = index._manifest(segment)
            if manifest is None:
                index.foreign.append(segment)
                continue
            index.segments.append(segment)
            columns = manifest.to_pydict()
            for table, name, size, mtime, ino, attempt, status in zip(
                    columns["table"], columns["file"], columns["size"], columns["mtime_ns"], columns["ino"],
                    columns["attempt"], columns["status"]):
                index.entries[(table, name)] = Entry(segment, (size, mtime, ino), attempt, status)
        return index

    def _segment_names(self, is_local: bool) -> list[str]:
        """Our segment folders, oldest first; none when the index folder is a link (never followed)."""
        try:
            if is_local:
                if os.path.islink(self.folder) or not os.path.isdir(self.folder):
                    return []
                with os.scandir(self.folder) as entries:
                    names = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
            else:
                selector = pafs.FileSelector(self.folder, allow_not_found=True)
                names = [posixpath.basename(i.path) for i in self.fs.get_file_info(selector)
                         if i.type == pafs.FileType.Directory]
        except OSError:
            return []
        return sorted(name for name in names if _SEGMENT.match(name))

    def _manifest(self, segment: str) -> pa.Table | None:
        try:
            with self.fs.open_input_file(posixpath.join(self.folder, segment, MANIFEST)) as fh:
                parquet = pq.ParquetFile(fh)
                if (parquet.schema_arrow.metadata or {}).get(FORMAT_KEY) != format_tag():
                    return None
                manifest = parquet.read()
        except (OSError, pa.ArrowException):
            return None
        return manifest if manifest.schema.remove_metadata() == MANIFEST_SCHEMA else None

    def lookup(self, table: str, name: str, stamp: Stamp | None) -> Entry | None:
        """The entry for a result file, if the file on disk is still the one indexed."""
        entry = self.entries.get((table, name))
        return entry if entry is not None and stamp is not None and entry.stamp == stamp else None

    def rows(self, table: str, segment: str, names: set[str], keep_file: bool = False) -> pa.Table | None:
        """The rows of `names` (files of `table` indexed in `segment`), with their file column when
        `keep_file`; None when the segment no longer reads back (merged away under us, say): the caller
        reads those files itself."""
        try:
            with self.fs.open_input_file(posixpath.join(self.folder, segment, f"rows-{table}.parquet")) as fh:
                data = pq.ParquetFile(fh).read()
        except (OSError, pa.ArrowException):
            return None
        if FILE_COLUMN not in data.column_names:
            return None
        files = data[FILE_COLUMN]
        if len(names) < len(pc.unique(files)):
            data = data.filter(pc.is_in(files, pa.array(sorted(names), pa.string())))
        return data if keep_file else data.drop_columns([FILE_COLUMN])

    def write_segment(self, put: Callable[[str, pa.Table], None], rows: dict[str, list[pa.Table]],
                      manifest: list[dict]) -> str:
        """A new segment of `rows` (per table, each piece with its file column) and `manifest`; the
        manifest is put last, so a segment cut short is never read."""
        segment = f"seg-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        for table, pieces in rows.items():
            empty = SCHEMAS[table].append(pa.field(FILE_COLUMN, pa.string())).empty_table()
            data = pa.concat_tables([empty, *(p.replace_schema_metadata(None) for p in pieces)],
                                    promote_options="permissive")
            put(posixpath.join(self.folder, segment, f"rows-{table}.parquet"), data)
        table = pa.Table.from_pylist(manifest, MANIFEST_SCHEMA)
        put(posixpath.join(self.folder, segment, MANIFEST),
            table.replace_schema_metadata({FORMAT_KEY: format_tag()}))
        return segment

    def abandoned(self) -> list[str]:
        """Segments of ours that are unreadable or of another format, and old enough that no refresh can
        still be writing them."""
        now = time.time_ns()
        return [segment for segment in self.foreign if now - int(segment.split("-")[1]) > ABANDONED_NS]

    def remove(self, segments: Iterable[str], is_local: bool) -> None:
        """Delete segments (merged into a newer one, or of another format); one that is gone already is
        no matter."""
        for segment in segments:
            path = posixpath.join(self.folder, segment)
            with contextlib.suppress(OSError):
                if is_local:
                    if not os.path.islink(path):
                        shutil.rmtree(path)
                else:
                    self.fs.delete_dir(path)
