"""The shipped SQL files (queries/sql/*.sql), one query each. A file's first line is a
`-- description` comment, so `hybench query --list` describes a query without a second registry."""
from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

from hybench.queries.errors import QueryError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


def _sql_files() -> dict[str, "Traversable"]:
    folder = files("hybench.queries") / "sql"
    return {f.name[: -len(".sql")]: f for f in folder.iterdir() if f.name.endswith(".sql")}


def names() -> list[str]:
    return sorted(_sql_files())


def load(name: str) -> str:
    sql_file = _sql_files().get(name)
    if sql_file is None:
        raise QueryError(f"unknown query {name!r}; known queries: {', '.join(names())} (see --list)")
    return sql_file.read_text(encoding="utf-8")


def description(name: str) -> str:
    return load(name).splitlines()[0].removeprefix("--").strip()


def describe() -> list[tuple[str, str]]:
    """(name, one-line description) of every shipped query."""
    return [(name, description(name)) for name in names()]
