"""Side tables: rows that commit atomically with events, through the store's journal.

The command store keeps its ``commands`` and ``command_history`` rows next to
the events the commands cause. Writing them straight into DuckDB would cost a
DuckDB transaction (about a millisecond) per status change; instead a
transaction stages them beside its events (``store._stage_side``), the commit
writes both in one journal record (see :mod:`eventlab.journal`), and the rows
reach DuckDB with the next absorb, in bulk.

A side table is the in-memory owner of such rows. It receives them once they
are durable (:meth:`SideTable.committed`) and hands them over when the store
absorbs (:meth:`SideTable.take_pending`), which writes them to DuckDB. After a
crash the store replays the journal's side rows with the *applier* registered
for each table name, before any owner exists.

A side row is a tuple of strings, integers and None (JSON values travel in it
as text, timestamps as epoch microseconds): the journal encodes rows on that
assumption, since a float could be NaN, which JSON cannot hold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import duckdb

Applier = Callable[[duckdb.DuckDBPyConnection, list[tuple]], None]

# Table name -> how to write recovered rows into DuckDB (idempotently: the
# journal may hold rows DuckDB already has, if a crash hit between the two).
APPLIERS: dict[str, Applier] = {}


def register_applier(table: str, applier: Applier) -> None:
    """Make ``applier(con, rows)`` the way recovered rows of ``table`` reach DuckDB."""
    APPLIERS[table] = applier


class SideTable(Protocol):
    """The in-memory owner of one or more side tables of a store."""

    tables: tuple[str, ...]

    def committed(self, rows: list[tuple[str, tuple]]) -> None:
        """Take rows of its tables that just became durable, in commit order."""

    def has_pending(self) -> bool:
        """Whether rows wait to be written to DuckDB."""

    def take_pending(self) -> Callable[[duckdb.DuckDBPyConnection], None]:
        """Hand over the waiting rows: a function that writes them to DuckDB.

        The store calls it inside its absorb transaction, possibly on another
        thread; the owner no longer holds the rows, so until that transaction
        commits it must look them up through ``store._cursor()``, which waits
        for the absorb.
        """


def apply_recovered(con: duckdb.DuckDBPyConnection, rows: list[tuple[str, tuple]]) -> None:
    """Write side rows recovered from a journal into DuckDB, table by table, in order."""
    by_table: dict[str, list[tuple]] = {}
    for table, row in rows:
        by_table.setdefault(table, []).append(row)
    for table, table_rows in by_table.items():
        applier = APPLIERS.get(table)
        if applier is None:  # pragma: no cover - every table registers on import
            raise RuntimeError(f"no applier registered for journal side table {table!r}")
        applier(con, table_rows)
