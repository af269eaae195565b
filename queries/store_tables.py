"""A store's readable files as Arrow tables, read by pyarrow through the store's filesystem, so that the
SQL engine that queries them needs no file access at all.

A file that does not fit is named and left out, never fatal: one that does not read back (truncated,
being written), a symbolic link, one outside the partition layout or with a partition value that is not
one, one whose contract columns hold another type, and the files of an attempt other than the one that
wrote the job's jobs row (the sweep pairs them the same way). Rows that would be counted twice (a jobs
row whose job appears in more than one row) are left out and their job named; NaN metrics read as
null, so no aggregate counts them, and are counted in the notes.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from hybench.workers.store import TABLES, ResultStore, StoredFile
from hybench.workers.store_index import StoreIndex
from hybench.workers.store_rows import concat, read_rows


@dataclass
class StoreTables:
    """Every table's rows, and what was left out: skipped files (display path -> why) and notes."""

    tables: dict[str, pa.Table]
    skipped: dict[str, str] = field(default_factory=dict)
    duplicated_jobs: tuple[str, ...] = ()
    nan_values: int = 0  # metric values that were NaN, read as null


def read_store(store: ResultStore) -> StoreTables:
    index = store.load_index()
    found = store.scan(index=index)
    out = StoreTables({})
    for _, bad in found.values():
        for stored in bad:
            out.skipped[store.display(stored.path)] = stored.problem or "does not read back (truncated?)"
    jobs_attempts = {f.job_id: f.attempt for f in found["jobs"][0]}
    for table in TABLES:
        kept = []
        for stored in found[table][0]:
            if table != "jobs" and stored.job_id in jobs_attempts and stored.attempt != jobs_attempts[stored.job_id]:
                out.skipped[store.display(stored.path)] = "written by another attempt than the job's jobs row"
            else:
                kept.append(stored)
        pieces = _indexed_rows(store, index, table, kept)
        for stored in kept:
            if stored.segment is not None:
                continue
            piece = read_rows(store.fs, store.table_root(table), table, stored.path)
            if isinstance(piece, str):
                out.skipped[store.display(stored.path)] = piece
                continue
            pieces.append(piece)
        out.tables[table], nans = _nan_as_null(concat(table, pieces))  # once a table: per file, it dominated
        out.nan_values += nans
    duplicated = _duplicated_jobs(out.tables["jobs"])
    if duplicated:
        out.duplicated_jobs = tuple(sorted(duplicated))
        left_out = pa.array(sorted(duplicated), pa.string())
        out.tables = {t: data.filter(pc.invert(pc.is_in(data["job_id"], left_out))) if "job_id" in data.column_names
                      else data for t, data in out.tables.items()}
    return out


def _indexed_rows(store: ResultStore, index: StoreIndex, table: str, files: list[StoredFile]) -> list[pa.Table]:
    """The rows the index holds for `files`, a piece per segment. A file whose segment no longer reads
    back (merged away under us) gets its segment cleared, so that the caller reads it itself."""
    by_segment: dict[str, set[str]] = {}
    for stored in files:
        if stored.segment is not None:
            by_segment.setdefault(stored.segment, set()).add(store.relative(stored.path))
    pieces = []
    for segment, names in by_segment.items():
        data = index.rows(table, segment, names)
        if data is not None:
            pieces.append(data)
            continue
        for position, stored in enumerate(files):
            if stored.segment == segment:
                files[position] = dataclasses.replace(stored, segment=None)
    return pieces


def _nan_as_null(data: pa.Table) -> tuple[pa.Table, int]:
    """NaN floats as nulls (aggregates skip nulls; a NaN would poison them), and how many there were."""
    nans = 0
    for index, column in enumerate(data.columns):
        if not pa.types.is_floating(column.type):
            continue
        is_nan = pc.fill_null(pc.is_nan(column), False)
        count = pc.sum(is_nan).as_py() or 0
        if count:
            nans += count
            data = data.set_column(index, data.field(index), pc.if_else(is_nan, pa.scalar(None, column.type), column))
    return data, nans


def _duplicated_jobs(jobs: pa.Table) -> set[str]:
    counts = Counter(jobs["job_id"].to_pylist())
    return {job_id for job_id, count in counts.items() if count > 1 and job_id is not None}
