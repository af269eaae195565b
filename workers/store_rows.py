"""One stored file's rows in the contract's types, partition columns taken from its path; or why it
cannot be read so (a path outside the partition layout, a partition value that is not one, a column of
another type). Shared by the readers (queries/store_tables.py) and the index that caches their work."""
from __future__ import annotations

import posixpath
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from hybench.workers.records import SCHEMAS

# The partition keys of a file's path and their types (a model named "7" stays a string).
PARTITION_TYPES = {"model": pa.string(), "config": pa.string(), "input_len": pa.int64()}


def partition_of(table_root: str, path: str) -> dict[str, object] | str:
    """The partition values of a file's path, or why the path is not a partition path."""
    relative = posixpath.relpath(path, table_root).split("/")
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


def read_rows(fs: pafs.FileSystem, table_root: str, table: str, path: str) -> pa.Table | str:
    """The file's rows in the contract's types, partition columns from the path where the file has none;
    or why it cannot be read so."""
    partition = partition_of(table_root, path)
    if isinstance(partition, str):
        return partition
    try:
        with fs.open_input_file(path) as fh:
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
        bad = [f.name for f in fields if f.name in names and data.schema.field(f.name).type != f.type
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


def concat(table: str, pieces: list[pa.Table]) -> pa.Table:
    """Every piece under one schema: the contract's columns always (an empty store still queries), a
    newer column where some file has it."""
    empty = SCHEMAS[table].empty_table()
    return pa.concat_tables([empty, *(p.replace_schema_metadata(None) for p in pieces)],
                            promote_options="permissive")
