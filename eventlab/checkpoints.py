"""The read side's bookkeeping: the checkpoints table and an in-memory registry.

Each projection has a row in ``checkpoints``: the last position it has
applied, its state (``active`` or ``failed``) and its last error. The registry
keeps, per store, a generation per read model (it grows whenever the table
changes; cached query answers remember the generations they were computed at)
and the runners feeding them.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import duckdb

if TYPE_CHECKING:
    from .runner import ProjectionRunner
    from .store import EventStore

CHECKPOINTS_DDL = """
CREATE TABLE IF NOT EXISTS checkpoints (
    name            VARCHAR PRIMARY KEY,
    kind            VARCHAR NOT NULL,
    position        BIGINT NOT NULL,
    fingerprint     VARCHAR NOT NULL,
    state           VARCHAR NOT NULL,
    failed_position BIGINT,
    failed_type     VARCHAR,
    error           VARCHAR,
    updated_at      TIMESTAMPTZ NOT NULL
)
"""

ACTIVE, FAILED = "active", "failed"


class ReadModels:
    """What a store's read side knows in memory: checkpoints and a generation per model.

    A generation grows every time a read model's table changes; cached query
    results remember the generations they were computed at.
    """

    def __init__(self) -> None:
        self.generations: dict[str, int] = {}
        self.runners: weakref.WeakSet[ProjectionRunner] = weakref.WeakSet()

    def bump(self, name: str) -> None:
        self.generations[name] = self.generations.get(name, 0) + 1

    def runner_for(self, name: str) -> ProjectionRunner | None:
        for runner in self.runners:
            if name in runner.projections:
                return runner
        return None


_READ_MODELS: weakref.WeakKeyDictionary[EventStore, ReadModels] = weakref.WeakKeyDictionary()


def read_models(store: EventStore) -> ReadModels:
    """The read-side registry of a store (made on first use).

    Read models built by an earlier session are known from the checkpoints
    table: nothing changes them until a runner of this process does.
    """
    found = _READ_MODELS.get(store)
    if found is None:
        found = _READ_MODELS[store] = ReadModels()
        cursor = store._cursor()
        if table_exists(cursor, "checkpoints"):
            for (name,) in cursor.execute("SELECT name FROM checkpoints").fetchall():
                found.generations.setdefault(name, 0)
    return found


@contextmanager
def transaction(cursor: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN ... COMMIT on a cursor, ROLLBACK if the block raises."""
    cursor.execute("BEGIN TRANSACTION")
    try:
        yield cursor
    except BaseException:
        cursor.execute("ROLLBACK")
        raise
    cursor.execute("COMMIT")


def table_exists(cursor: duckdb.DuckDBPyConnection, name: str) -> bool:
    found = cursor.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = $1",
        [name],
    )
    return found.fetchall()[0][0] > 0


def dicts(result: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """A small query result as one dict per row."""
    names = [column[0] for column in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]
