"""A read-only DuckDB connection over one results store.

One view per table holds the rows pyarrow read from the store's files (store_tables.py: a file that does
not fit is skipped and named instead of failing every query), narrowed by a Selection; `cells` holds
every metric per cell (sql/cells.sql). DuckDB gets those rows as Arrow tables and no file access at all
(external access off and the configuration locked before any SQL of the user runs; its spill folder, which
it may always write, is a private temporary one), so a query can neither change the store nor reach past
it. The store's filesystem is pyarrow's, so object stores (s3://) read the same way.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs

from hybench.queries import catalog, interval_sql
from hybench.queries.errors import QueryError
from hybench.queries.store_tables import read_store
from hybench.workers.records import JOBS_SCHEMA, REQUESTS_SCHEMA
from hybench.workers.store import TABLES, ResultStore

# The job key both tables carry. Filters may use only these, so that they narrow both tables alike.
SHARED_COLUMNS = tuple(name for name in REQUESTS_SCHEMA.names if name in JOBS_SCHEMA.names)


def quote(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


@contextmanager
def duckdb_errors() -> Iterator[None]:
    """DuckDB's errors as QueryError, first line only (the rest points at a column of the SQL); Ctrl-C
    inside DuckDB as the KeyboardInterrupt it is."""
    try:
        yield
    except duckdb.InterruptException:
        raise KeyboardInterrupt from None
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
    skipped: dict[str, str]  # files left out (spelled as the user spells the store) -> why
    duplicated_jobs: tuple[str, ...] = ()  # jobs left out because their jobs row appears twice
    nan_values: int = 0  # NaN metric values, read as null
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
    read = read_store(store)
    if not any(data.num_rows for data in read.tables.values()):
        raise QueryError(_no_results(store, tuple(read.skipped)))
    # DuckDB may always write to its temporary folder, by default ./.tmp: make that a private one.
    views = StoreViews(duckdb.connect(), selection, read.skipped, read.duplicated_jobs, read.nan_values,
                       tempfile.mkdtemp(prefix="hybench-duckdb-"))
    con = views.con
    try:
        with duckdb_errors():
            interval_sql.register(con)
            con.execute(f"SET temp_directory = {quote(views.spill_dir)}")
            con.execute("SET enable_progress_bar = false")  # it would draw over the query's output
            con.execute("SET enable_external_access = false")  # no file, no extension, no URL: none at all
            con.execute("SET lock_configuration = true")
        for table in TABLES:
            _create_view(con, table, read.tables[table], selection)
        with duckdb_errors():
            con.execute(f"CREATE {'TEMP TABLE' if materialize_cells else 'VIEW'} cells AS {catalog.load('cells')}")
    except BaseException:
        views.close()
        raise
    return views


def _create_view(con: duckdb.DuckDBPyConnection, table: str, data: pa.Table, selection: Selection) -> None:
    con.register(f"_{table}_rows", data)
    statement = f"CREATE VIEW {table} AS SELECT * FROM _{table}_rows WHERE {selection.predicate()}"
    try:
        (parsed,) = con.extract_statements(statement)  # a filter that smuggles a second statement fails here
        con.execute(parsed)
    except (duckdb.Error, ValueError) as exc:
        first = str(exc).splitlines()[0] if isinstance(exc, duckdb.Error) else "not one SQL expression"
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


def print_skipped(skipped: Mapping[str, str]) -> None:
    for path, why in skipped.items():
        print(f"hybench: skipped results file {path}: {why}", file=sys.stderr)
