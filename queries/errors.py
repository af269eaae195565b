"""The error every queries module raises for a user's mistake, shown by the CLI as one line."""


class QueryError(Exception):
    """A results store, SQL query, filter or output the user asked for cannot be used; says why."""
