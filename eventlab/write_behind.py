"""A projection batch's write, run on a thread while the runner feeds the next batch.

A Python projection catching up spends about a seventh of its time waiting for
DuckDB: the batch's ``INSERT`` into the read model (its primary key makes that
about 2 µs a row) and the ``COMMIT``. DuckDB lets go of the GIL while it works,
so the runner hands each batch's statements to a thread and goes on decoding
the next batch and running its handlers; it waits for the write only before
it starts the next one, or when a handler asks for a row that only DuckDB
can tell (see :class:`~eventlab.projections.Changes`).

DuckDB's Python client takes the GIL back between the tasks of a statement to
look for Ctrl-C, so the thread's statements take several times longer than
they would alone (about 70 ms against 16 ms for an 8,000-row insert beside a
busy Python thread). That still ends well before the runner's next batch,
which takes 150 ms or more.
"""

from __future__ import annotations

import contextlib
import threading

import duckdb

from .projections import Step, unregister


class BackgroundWrite:
    """One transaction of statements running on its own thread through ``cursor``.

    Nothing else may use ``cursor`` until :meth:`wait` has returned.
    """

    def __init__(self, cursor: duckdb.DuckDBPyConnection, steps: list[Step]):
        self._cursor = cursor
        self._error: BaseException | None = None
        # The Arrow tables are registered here and the statements sent as one script:
        # each call into DuckDB's client from the thread needs the GIL, which it gets
        # only at the runner's next switch interval (5 ms). Measured beside a busy
        # Python thread, an 8,000-row insert with a checkpoint update took about
        # 100 ms as four calls from the thread and 65 ms as one.
        self._names: list[str] = []
        statements = ["BEGIN TRANSACTION"]
        try:
            for sql, params, name, table in steps:
                if params is not None:
                    raise ValueError(f"a background write takes no parameters: {sql!r}")
                if table is not None:
                    cursor.register(name, table)
                    self._names.append(name)
                statements.append(sql)
        except BaseException:
            self._unregister()
            raise
        statements.append("COMMIT")
        # Not a daemon: an interpreter that exits meanwhile waits for the COMMIT
        # rather than stopping the thread inside DuckDB.
        self._thread = threading.Thread(
            target=self._run, args=(";\n".join(statements),), name="eventlab-projection-write"
        )
        self._thread.start()

    def _run(self, script: str) -> None:
        try:
            self._cursor.execute(script)
        except BaseException as exc:  # noqa: BLE001 - handed to the runner by wait()
            self._error = exc
            # A failed statement may have ended the transaction already.
            with contextlib.suppress(duckdb.Error):
                self._cursor.execute("ROLLBACK")

    def wait(self) -> BaseException | None:
        """Wait for the transaction to end; returns what made it fail, None if it
        committed. Safe to call again."""
        self._thread.join()
        self._unregister()
        return self._error

    def _unregister(self) -> None:
        while self._names:
            unregister(self._cursor, self._names.pop())
