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

import posixpath
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hybench.workers.records import SCHEMAS
from hybench.workers.store import TABLES, ResultStore, StoredFile

# The partition keys of a file's path and their types (a model named "7" stays a string).
PARTITION_TYPES = {"model": pa.string(), "config": pa.string(), "input_len": pa.int64()}


@dataclass
class StoreTables:
    """Every table's rows, and what was left out: skipped files (display path -> why) and notes."""

    tables: dict[str, pa.Table]
    skipped: dict[str, str] = field(default_factory=dict)
    duplicated_jobs: tuple[str, ...] = ()
    nan_values: int = 0  # metric values that were NaN, read as null


def read_store(store: ResultStore) -> StoreTables:
    found = {table: store.valid_files(table) for table in TABLES}
    out = StoreTables({})
    for _, bad in found.values():
        for stored in bad:
            out.skipped[store.display(stored.path)] = stored.problem or "does not read back (truncated?)"
    jobs_attempts = {f.job_id: f.attempt for f in found["jobs"][0]}
    for table in TABLES:
        pieces = []
        for stored in found[table][0]:
            if table != "jobs" and stored.job_id in jobs_attempts and stored.attempt != jobs_attempts[stored.job_id]:
                out.skipped[store.display(stored.path)] = "written by another attempt than the job's jobs row"
                continue
            piece = _read_file(store, table, stored)
            if isinstance(piece, str):
                out.skipped[store.display(stored.path)] = piece
                continue
            pieces.append(piece)
        out.tables[table], nans = _nan_as_null(_concat(table, pieces))  # once a table: per file, it dominated
        out.nan_values += nans
    duplicated = _duplicated_jobs(out.tables["jobs"])
    if duplicated:
        out.duplicated_jobs = tuple(sorted(duplicated))
        left_out = pa.array(sorted(duplicated), pa.string())
        out.tables = {t: data.filter(pc.invert(pc.is_in(data["job_id"], left_out))) if "job_id" in data.column_names
                      else data for t, data in out.tables.items()}
    return out


def _partition(store: ResultStore, table: str, path: str) -> dict[str, object] | str:
    """The partition values of a file's path, or why the path is not a partition path."""
    relative = posixpath.relpath(path, store.table_root(table)).split("/")
    keys = tuple(PARTITION_TYPES)
    if len(relative) != len(keys) + 1 or any(not part.startswith(f"{key}=") for key, part in zip(keys, relative)):
        return f"not at a partition path ({'/'.join(f'{k}=...' for k in keys)}/<job_id>.parquet)"
    values: dict[str, object] = {}
    for key, part in zip(keys, relative):
        text = unquote(part[len(key) + 1:])
        if pa.types.is_integer(PARTITION_TYPES[key]):
            try:
                values[key] = int(text)
            except ValueError:
                return f"partition value {key}={text!r} is not a number"
        else:
            values[key] = text
    return values


def _read_file(store: ResultStore, table: str, stored: StoredFile) -> pa.Table | str:
    """The file's rows in the contract's types, partition columns from the path where the file has none;
    or why it cannot be read so."""
    partition = _partition(store, table, stored.path)
    if isinstance(partition, str):
        return partition
    try:
        with store.fs.open_input_file(stored.path) as fh:
            data = pq.ParquetFile(fh).read()  # not read_table: its dataset machinery costs ms a file
    except (OSError, pa.ArrowException) as exc:
        return f"does not read back: {str(exc).splitlines()[0]}"
    for key, value in partition.items():
        if key not in data.column_names:
            data = data.append_column(key, pa.array([value] * data.num_rows, PARTITION_TYPES[key]))
    contract = SCHEMAS[table]
    names = set(contract.names)  # the property builds a list on every call
    fields = [contract.field(name) if name in names else data.schema.field(name)
              for name in data.column_names]
    try:
        return data.cast(pa.schema(fields, data.schema.metadata))
    except (pa.ArrowException, ValueError) as exc:
        bad = [f.name for f in fields if f.name in contract.names and data.schema.field(f.name).type != f.type
               and not _casts(data[f.name], f.type)]
        what = f"column {bad[0]} is {data.schema.field(bad[0]).type}, not {contract.field(bad[0]).type}" if bad \
            else str(exc).splitlines()[0]
        return f"does not fit the {table} schema: {what}"


def _casts(column: pa.ChunkedArray, target: pa.DataType) -> bool:
    try:
        column.cast(target)
        return True
    except (pa.ArrowException, ValueError):
        return False


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


def _concat(table: str, pieces: list[pa.Table]) -> pa.Table:
    """Every piece under one schema: the contract's columns always (an empty store still queries), a
    newer column where some file has it."""
    empty = SCHEMAS[table].empty_table()
    return pa.concat_tables([empty, *(p.replace_schema_metadata(None) for p in pieces)],
                            promote_options="permissive")


def _duplicated_jobs(jobs: pa.Table) -> set[str]:
    counts = Counter(jobs["job_id"].to_pylist())
    return {job_id for job_id, count in counts.items() if count > 1 and job_id is not None}
