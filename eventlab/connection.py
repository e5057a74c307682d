"""Opening the DuckDB file: one store per file and process, and errors that explain."""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from .errors import EventlabError, StoreLockedError

if TYPE_CHECKING:
    from .store import EventStore

# Stores with a file open in this process, by resolved path (see claim_file).
_OPEN_FILES: weakref.WeakValueDictionary[str, EventStore] = weakref.WeakValueDictionary()
_OPEN_LOCK = threading.Lock()


def claim_file(store: EventStore) -> None:
    """Refuse a second store on a file this process already has open.

    DuckDB shares one database between connections of a process, so two
    stores on one file would both write, each with its own idea of the
    stream versions: optimistic concurrency would silently break.
    """
    if store.path is None:
        return
    key = str(store.path.resolve())
    with _OPEN_LOCK:
        other = _OPEN_FILES.get(key)
        if other is not None and not other.closed:
            raise StoreLockedError(
                f"{store.path} is already open in this process ({other!r}). Use that "
                f"store, or close it first (store.close()); opening with "
                f"`with el.EventStore(path) as store:` closes it for you."
            )
        _OPEN_FILES[key] = store


def release_file(store: EventStore) -> None:
    """Forget ``store``'s claim on its file (after close, or a failed open)."""
    if store.path is not None:
        with _OPEN_LOCK:
            key = str(store.path.resolve())
            if _OPEN_FILES.get(key) is store:
                del _OPEN_FILES[key]


def connect(path: Path | None, read_only: bool) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection in UTC, with DuckDB's open errors turned into advice."""
    try:
        if path is None:
            con = duckdb.connect(":memory:")
        else:
            con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        message = str(exc)
        if "lock" in message.lower():
            raise StoreLockedError(
                f"cannot open {path}: another process has it open. DuckDB allows one "
                f"writing process per database file, and while it writes no other process "
                f"can open the file, not even with read_only=True (readers, in turn, keep "
                f"writers out). Close the store in the other process (store.close() or "
                f"restart its kernel) and then open it here, with read_only=True if you "
                f"only read; or work on a copy of the file made after it was closed; or "
                f"export it to Parquet (store.export_parquet) and read that. "
                f"DuckDB said: {message}"
            ) from None
        if "does not exist" in message:
            raise EventlabError(
                f"there is no store at {path} to open read-only; check the path, or open "
                f"it without read_only=True to create it"
            ) from None
        raise EventlabError(f"cannot open {path}: {message}") from None
    except duckdb.Error as exc:
        raise EventlabError(
            f"cannot open {path} as a DuckDB database: {exc}. Is it an eventlab store "
            f"file? Check the path, or restore it from a Parquet export."
        ) from None
    # GLOBAL, because every cursor is a new session that would otherwise start in
    # the machine's local zone.
    con.execute("SET GLOBAL TimeZone='UTC'")
    return con
