"""A read-only DuckDB connection over one results store.

Views `requests` and `jobs` read the store's readable Parquet files in place (explicit file lists, so a
truncated file is skipped and named instead of failing every query), narrowed by a Selection; `cells`
holds every metric per cell (sql/cells.sql). The connection may read those files and nothing else, and
may write no file (DuckDB's spill folder, which it may always write, is a private temporary one), so a
query can neither change the store nor reach past it.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs

from hybench.queries import catalog, interval_sql
from hybench.queries.errors import QueryError
from hybench.workers.records import JOBS_SCHEMA, REQUESTS_SCHEMA, SCHEMAS
from hybench.workers.store import TABLES, ResultStore

# The job key both tables carry. Filters may use only these, so that they narrow both tables alike.
SHARED_COLUMNS = tuple(name for name in REQUESTS_SCHEMA.names if name in JOBS_SCHEMA.names)
# The store's partition keys, typed, so that a model named "7" stays a string.
_HIVE_TYPES = "{'model': VARCHAR, 'config': VARCHAR, 'input_len': BIGINT}"
# DuckDB reads a remote store through this protocol, served by the store's own pyarrow filesystem.
_REMOTE_PROTOCOL = "hybenchstore"


def quote(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


@contextmanager
def duckdb_errors() -> Iterator[None]:
    """DuckDB's errors as QueryError, first line only (the rest points at a column of the SQL)."""
    try:
        yield
    except duckdb.Error as exc:
        raise QueryError(str(exc).splitlines()[0]) from None


Names = str | Sequence[str] | None


def names(value: Names) -> tuple[str, ...]:
    """Filter values from 'a,b' (a flag) or a sequence (a Python caller)."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    return tuple(item.strip() for item in items if item.strip())


@dataclass(frozen=True)
class Selection:
    """One store, and the filters that narrow both of its tables."""

    uri: str
    sweeps: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    configs: tuple[str, ...] = ()
    where: str | None = None

    @classmethod
    def of(cls, uri: str, sweep: Names = None, model: Names = None, config: Names = None,
           where: str | None = None) -> Selection:
        """From flags ('a,b') or a Python caller's sequences."""
        return cls(uri, names(sweep), names(model), names(config), where or None)

    def _lists(self) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
        return (("sweep", "sweep_id", self.sweeps), ("model", "model", self.models),
                ("config", "config", self.configs))

    def predicate(self) -> str:
        terms = [f"{column} IN ({', '.join(map(quote, values))})" for _, column, values in self._lists() if values]
        if self.where:
            terms.append(f"({self.where})")
        return " AND ".join(terms) or "TRUE"

    def describe(self) -> str:
        """The filters in words, for the report's header."""
        terms = [f"{flag} {','.join(values)}" for flag, _, values in self._lists() if values]
        if self.where:
            terms.append(f"where {self.where}")
        return "; ".join(terms) or "no filters"


@dataclass(frozen=True)
class Side:
    """One of the result sets a report or query covers: `name` is "" alone, "A" or "B" in a comparison."""

    name: str
    description: str
    selection: Selection

    @property
    def label(self) -> str:
        """How reports name the side: "" when it is the only one."""
        return f"{self.name}: {self.description}" if self.name else ""


def sides(base: Selection, compare_uri: str | None = None, compare_sweep: Names = None) -> list[Side]:
    """The selection alone, or it and the one --compare names (another store, other sweeps, or both).
    Each side is described by what differs between the two."""
    compare_sweeps = names(compare_sweep)
    if compare_uri is None and not compare_sweeps:
        return [Side("", base.uri, base)]
    other = replace(base, uri=compare_uri or base.uri, sweeps=compare_sweeps or base.sweeps)
    if other == base:
        raise QueryError("--compare selects the same results as --results-dir; name another store or --compare-sweep")

    def describe(selection: Selection) -> str:
        parts = [selection.uri] if other.uri != base.uri else []
        if other.sweeps != base.sweeps:
            parts.append(f"sweep {','.join(selection.sweeps)}" if selection.sweeps else "every sweep")
        return ", ".join(parts)

    return [Side("A", describe(base), base), Side("B", describe(other), other)]


@dataclass
class StoreViews:
    """An open connection with the views of one selection."""

    con: duckdb.DuckDBPyConnection
    selection: Selection
    skipped: tuple[str, ...]  # unreadable files left out, spelled as the user spells the store
    spill_dir: str | None = None  # DuckDB's private temporary folder, removed on close

    def relation(self, sql: str) -> duckdb.DuckDBPyRelation:
        with duckdb_errors():
            rel = self.con.sql(sql)
        if rel is None:
            raise QueryError("the statement returns no rows; give a SELECT query")
        return rel

    def reader(self, sql: str) -> pa.RecordBatchReader:
        """The result as a stream of batches, for results too large to hold."""
        with duckdb_errors():
            return self.relation(sql).to_arrow_reader()

    def table(self, sql: str) -> pa.Table:
        with duckdb_errors():
            return self.relation(sql).to_arrow_table()

    def close(self) -> None:
        self.con.close()
        if self.spill_dir is not None:
            shutil.rmtree(self.spill_dir, ignore_errors=True)

    def __enter__(self) -> StoreViews:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_views(selection: Selection, materialize_cells: bool = False) -> StoreViews:
    """Open the views; `materialize_cells` computes `cells` once, for callers that read it many times."""
    store = ResultStore(selection.uri)
    found = {table: store.valid_files(table) for table in TABLES}
    skipped = tuple(store.display(f.path) for _, bad in found.values() for f in bad)
    paths = {table: [f.path for f in good] for table, (good, _) in found.items()}
    if not any(paths.values()):
        raise QueryError(_no_results(store, skipped))
    # DuckDB may always write to its temporary folder, by default ./.tmp: make that a private one.
    views = StoreViews(duckdb.connect(), selection, skipped, tempfile.mkdtemp(prefix="hybench-duckdb-"))
    con = views.con
    try:
        if not store.is_local:
            _serve_remote(con, store.fs)
            paths = {table: [f"{_REMOTE_PROTOCOL}://{p}" for p in table_paths] for table, table_paths in paths.items()}
        with duckdb_errors():
            interval_sql.register(con)
            con.execute(f"SET temp_directory = {quote(views.spill_dir)}")
            con.execute("SET allowed_paths = $paths",
                        {"paths": [p for table_paths in paths.values() for p in table_paths]})
            con.execute("SET enable_progress_bar = false")  # it would draw over the query's output
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
        for table in TABLES:
            _create_view(con, table, paths[table], selection)
        with duckdb_errors():
            con.execute(f"CREATE {'TEMP TABLE' if materialize_cells else 'VIEW'} cells AS {catalog.load('cells')}")
    except BaseException:
        views.close()
        raise
    return views


def _create_view(con: duckdb.DuckDBPyConnection, table: str, paths: list[str], selection: Selection) -> None:
    # An empty table of the contract's schema joins every view, so each contract column exists even
    # where no file (or only files of an older version) holds it, and an empty table still queries.
    con.register(f"_{table}_contract", SCHEMAS[table].empty_table())
    source = f"SELECT * FROM _{table}_contract"
    if paths:
        files = ", ".join(map(quote, paths))
        source = (f"SELECT * FROM read_parquet([{files}], hive_partitioning = true, union_by_name = true, "
                  f"hive_types = {_HIVE_TYPES}) UNION ALL BY NAME {source}")
    try:
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM ({source}) WHERE {selection.predicate()}")
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        if selection.where:
            raise QueryError(f"--where {selection.where!r}: {first} (filters may use the columns both "
                             f"tables share: {', '.join(SHARED_COLUMNS)})") from None
        raise QueryError(f"cannot read the {table} files of {selection.uri}: {first}") from None


def _no_results(store: ResultStore, skipped: tuple[str, ...]) -> str:
    if skipped:
        return f"no readable results in {store.uri}: all {len(skipped)} files are unreadable, e.g. {skipped[0]}"
    try:
        missing = store.fs.get_file_info(store.root).type == pafs.FileType.NotFound
    except OSError as exc:
        return f"cannot read results dir {store.uri}: {exc}"
    if missing:
        return f"results dir {store.uri} does not exist"
    return f"results dir {store.uri} holds no results (no {' or '.join(TABLES)} files)"


def _serve_remote(con: duckdb.DuckDBPyConnection, fs: pafs.FileSystem) -> None:
    """Let DuckDB read an object store through the store's pyarrow filesystem (its credentials)."""
    from fsspec import AbstractFileSystem
    from fsspec.implementations.arrow import ArrowFSWrapper

    class StoreFileSystem(ArrowFSWrapper):
        protocol = (_REMOTE_PROTOCOL,)
        root_marker = ""
        _strip_protocol = classmethod(AbstractFileSystem._strip_protocol.__func__)  # keep bucket/key paths

    con.register_filesystem(StoreFileSystem(fs))


def print_skipped(skipped: Iterable[str]) -> None:
    for path in skipped:
        print(f"hybench: skipped unreadable results file (truncated?): {path}", file=sys.stderr)
