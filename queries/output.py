"""Writes a query's result as an aligned table, CSV, JSON lines or Parquet.

Rows are streamed batch by batch from DuckDB, so a result as large as the store never sits in Python
whole; the terminal table shows at most TABLE_MAX_ROWS rows. In a comparison every row gains a first
column, `side` (A or B). The terminal table leaves out workload columns that hold their defaults in
every row shown.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
import uuid
from collections.abc import Iterable, Iterator
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq

from hybench.queries.cells import WORKLOAD, is_default
from hybench.queries.errors import QueryError
from hybench.queries.formatting import text_table
from hybench.queries.store_views import duckdb_errors

TABLE_MAX_ROWS = 200

# One result stream per side: (side name, or "" when there is one side; its batches).
Part = tuple[str, pa.RecordBatchReader]


def check_output(output: str, store_uris: Iterable[str]) -> None:
    """Refuse an --output that cannot be written whole, before any query runs: a folder, a missing
    folder, or a file inside a results store (the next query would read it as results)."""
    if os.path.isdir(output):
        raise QueryError(f"--output {output}: is a folder; give a file name")
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise QueryError(f"--output {output}: the folder {folder} does not exist")
    target = os.path.realpath(output)
    for uri in store_uris:
        if "://" in uri:
            continue
        root = os.path.realpath(uri)
        if os.path.commonpath([root, target]) == root:
            raise QueryError(f"--output {output}: inside the results store {uri}; write it elsewhere")


def write_result(parts: list[Part], fmt: str, output: str | None) -> None:
    """Write to `output`, or to stdout when it is None (every format but parquet). A file is written to
    a hidden temporary name beside it and renamed when whole, so a full disk or Ctrl-C leaves nothing."""
    first_side, first_reader = parts[0]
    schema = first_reader.schema
    if first_side:
        schema = schema.insert(0, pa.field("side", pa.string()))
    batches = _batches(parts)
    if output is None:
        {"table": _write_table, "csv": _write_csv, "json": _write_json}[fmt](schema.names, batches, sys.stdout)
        return
    tmp = os.path.join(os.path.dirname(os.path.abspath(output)), f".{os.path.basename(output)}.{uuid.uuid4().hex}.tmp")
    try:
        if fmt == "parquet":
            _write_parquet(schema, batches, tmp)
        else:
            with open(tmp, "w", newline="", encoding="utf-8") as out:
                {"table": _write_table, "csv": _write_csv, "json": _write_json}[fmt](schema.names, batches, out)
        os.replace(tmp, output)
    except OSError as exc:
        raise QueryError(f"cannot write --output {output}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _batches(parts: list[Part]) -> Iterator[pa.RecordBatch]:
    for side, reader in parts:
        with duckdb_errors():
            for batch in reader:
                if side:
                    batch = pa.RecordBatch.from_arrays([pa.array([side] * batch.num_rows), *batch.columns],
                                                       names=["side", *batch.schema.names])
                yield batch


def _rows(batches: Iterable[pa.RecordBatch]) -> Iterator[dict]:
    for batch in batches:
        yield from batch.to_pylist()


def _write_table(columns: list[str], batches: Iterator[pa.RecordBatch], out: IO[str]) -> None:
    rows = []
    for row in _rows(batches):
        if len(rows) == TABLE_MAX_ROWS:
            print(f"(first {TABLE_MAX_ROWS} rows shown; --format csv, json or parquet writes every row)",
                  file=sys.stderr)
            break
        rows.append(row)
    # The workload columns only where they vary or leave their defaults (a store of one workload reads as before).
    columns = [c for c in columns if c not in WORKLOAD or not all(is_default(c, r.get(c)) for r in rows)]
    print(text_table(columns, rows), file=out)


def _write_csv(columns: list[str], batches: Iterator[pa.RecordBatch], out: IO[str]) -> None:
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in _rows(batches):
        writer.writerow([row.get(c) for c in columns])


def _write_json(columns: list[str], batches: Iterator[pa.RecordBatch], out: IO[str]) -> None:
    for row in _rows(batches):
        out.write(json.dumps({c: row.get(c) for c in columns}, default=str) + "\n")


def _write_parquet(schema: pa.Schema, batches: Iterator[pa.RecordBatch], output: str) -> None:
    with pq.ParquetWriter(output, schema) as writer:
        for batch in batches:
            try:
                writer.write_batch(batch.cast(schema))
            except (pa.ArrowInvalid, ValueError) as exc:
                raise QueryError(f"the two sides return different columns, one Parquet file cannot hold both: "
                                 f"{exc}") from None
