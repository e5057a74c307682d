"""Absorbing in the background: DuckDB writes a full buffer while Python keeps appending.

A file store acknowledges appends from its journal and absorbs them into
DuckDB in bulk (see :mod:`eventlab.store` and :mod:`eventlab.journal`). The
absorb is mostly DuckDB compressing and writing row groups, which releases the
GIL; done in the appending thread it stalls every writer for about a second per
hundred thousand events. So when the buffer fills, the store hands it over
whole to a background thread and starts a fresh one:

1. The journal file is renamed to ``<store>.journal.absorbing`` (its records
   stay durable there) and a new journal takes the next commits.
2. The thread inserts the handed-over events and side rows into DuckDB in one
   transaction, then deletes the renamed file.
3. Anything that reads DuckDB first waits for the thread (``store._cursor()``),
   so every read still sees every acknowledged event.

One absorb runs at a time, and absorbs commit in order. After a crash, recovery
reads the renamed file before the journal; rows DuckDB already holds are
skipped, as after any crash between an absorb and the journal being emptied.

The thread's DuckDB work runs on one thread (``SET threads = 1`` meanwhile, see
:func:`one_duckdb_thread`): with its default of one worker per core, an absorb
took both cores of a 2-core machine from the thread that was appending.

Where the file system will not rename an open file (Windows), the store
absorbs in the committing thread instead, as it did before it had this thread.

If the thread's transaction fails (a full disk, say), nothing is lost: the
rows stay in the renamed file and in memory, and the store's next read, absorb
or close retries them in its own thread, raising the error if it persists.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import duckdb

from .checkpoints import transaction
from .pending import PendingEvents

# Writes some side rows into DuckDB (see eventlab.sidetables).
SideWriter = Callable[[duckdb.DuckDBPyConnection], None]


def write_batch(
    con: duckdb.DuckDBPyConnection, batch: PendingEvents, writers: list[SideWriter]
) -> None:
    """Insert a handed-over buffer and side rows in one DuckDB transaction, then delete
    the journal file that held them."""
    with transaction(con):
        batch.insert_into(con)
        for write in writers:
            write(con)
    if batch.journal is not None:
        batch.journal.delete()


@contextlib.contextmanager
def one_duckdb_thread(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Run DuckDB on one thread meanwhile (a setting of the whole database), then
    restore the number it had.

    For DuckDB work in the background while Python keeps working in the
    foreground: DuckDB's default of one thread per core leaves Python's thread
    no core of its own. Measured on this 2-core machine (2026-11-28, eight
    alternating pairs in one process): 1,000-append transactions ran at
    median 284k events/s with the background absorbs on one thread, 249k on
    DuckDB's default, every pair in favour (3% to 34%). The absorb itself
    takes longer, in the background.
    """
    before = con.execute("SELECT current_setting('threads')").fetchall()[0][0]
    con.execute("SET threads = 1")
    try:
        yield
    finally:
        # A failure here must not hide the absorb's own error; the database then
        # only runs on fewer threads than it could.
        with contextlib.suppress(duckdb.Error):
            con.execute(f"SET threads = {int(before)}")


class Absorber:
    """The one background absorb of a store, and the one that failed, if any."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._work: tuple[PendingEvents, list[SideWriter]] | None = None
        self._error: BaseException | None = None

    @property
    def busy(self) -> bool:
        """Whether an absorb was handed over and has not been waited for."""
        return self._work is not None

    def start(
        self, con: duckdb.DuckDBPyConnection, batch: PendingEvents, writers: list[SideWriter]
    ) -> None:
        """Absorb ``batch`` and ``writers`` on a new thread, through the cursor ``con``."""
        if self._work is not None:  # pragma: no cover - the store waits first
            raise RuntimeError("an absorb is already running")
        self._work = (batch, writers)
        self._error = None
        # Not a daemon: a program that ends without closing its store waits for the
        # absorb to finish rather than killing it inside DuckDB.
        self._thread = threading.Thread(
            target=self._run, args=(con, batch, writers), name="eventlab-absorb", daemon=False
        )
        self._thread.start()

    def _run(
        self, con: duckdb.DuckDBPyConnection, batch: PendingEvents, writers: list[SideWriter]
    ) -> None:
        try:
            with one_duckdb_thread(con):
                write_batch(con, batch, writers)
        except BaseException as exc:  # noqa: BLE001 - kept for the store's thread to retry
            self._error = exc
        finally:
            con.close()

    def finish(self, con: duckdb.DuckDBPyConnection) -> None:
        """Wait for the running absorb; if it failed, retry it here through ``con``.

        Raises what the retry raised; the work is then kept for the next call.
        """
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._work is None:
            return
        if self._error is not None:
            write_batch(con, *self._work)  # raises: the work stays, for the next call
            self._error = None
        self._work = None

    def abandon(self) -> None:
        """Close the journal of an absorb that failed and was not retried (the store is
        closing): its file stays for recovery at the next open."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._work is not None and self._work[0].journal is not None:
            self._work[0].journal.close()
        self._work = None
        self._error = None
