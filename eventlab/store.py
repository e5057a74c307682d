"""EventStore: an append-only event log in DuckDB, embedded in a file or in memory.

How a write travels (see :mod:`eventlab.journal` for why):

1. ``append`` validates, checks the expected version against an in-memory map of
   stream versions, and stages rows with their positions and versions.
2. The outermost transaction commits: a file store writes the rows to its
   journal and syncs it; then the rows join the *pending* buffer. The append is
   acknowledged.
3. Pending rows are absorbed into the DuckDB ``events`` table in one bulk Arrow
   insert before any read, when the buffer grows large (then on a background
   thread, see :mod:`eventlab.absorber`), and on close. Every read waits for
   them, so it sees every acknowledged event.

The store is the only writer of its file (DuckDB's rule), so the in-memory
version map and head position are authoritative.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .absorber import Absorber
from .bus import EventBus
from .checkpoints import transaction
from .clock import SimulatedClock, SystemClock, reserve_micros, to_micros
from .connection import claim_file, connect, release_file
from .errors import (
    ConcurrencyError,
    DuplicateEventError,
    EventlabError,
    InvalidEventError,
    ReadOnlyError,
    StoreClosedError,
)
from .events import (
    ORJSON_FIRST_TRY,
    Event,
    EventIds,
    RecordedEvent,
    canonical_json,
    check_name,
    json_encoder,
    make_record,
    to_json,
)
from .journal import Journal, journal_paths
from .pending import PendingEvents
from .read_ahead import ReadAheads
from .reading import filters, iterate_records, read_query, upper_bounds
from .replay import paused_gc
from .schema import SELECT_RECORD, create_schema
from .sidetables import SideTable, apply_recovered
from .stream_positions import MIN_EVENTS, StreamPositions, should_map
from .upcasting import upcasters

# Pending rows are absorbed into DuckDB, on a background thread, once this many
# accumulate. DuckDB inserts big batches faster per row (about 2.5 us at 100k rows,
# 3 us at 50k, here), while the rows wait in memory (roughly 0.5 KB each, twice
# over while the previous batch is being absorbed) and in the journal.
ABSORB_THRESHOLD = 100_000
READ_BATCH_SIZE = 65_536


class _Transaction:
    """Rows staged by the open transaction; nested blocks roll back to a count.

    The rows are plain tuples in the RecordedEvent layout, not RecordedEvents:
    CPython's garbage collector stops tracking a tuple of strings and ints at its
    first collection, while it keeps scanning every tuple subclass instance. A
    batch of thousands of staged records would otherwise be promoted to the
    oldest generation and trigger full collections of the caller's whole heap
    (measured: a third of the batched-append time).
    """

    def __init__(self, head: int):
        self.start_head = head
        # The thread that opened it: only its own reads see the staged rows (the store's
        # lock keeps other threads out until the commit anyway).
        self.thread = threading.get_ident()
        self.rows: list[tuple] = []
        self.versions: dict[str, int] = {}  # streams written in this transaction
        self.supplied: dict[str, RecordedEvent] = {}  # caller-supplied event ids
        # Side-table rows (see eventlab.sidetables) staged with the events, and the
        # latest staged row per (table, first column) for owners to read back.
        self.side: list[tuple[str, tuple]] = []
        self.side_latest: dict[tuple[str, Any], tuple] = {}

    @property
    def records(self) -> list[RecordedEvent]:
        """The staged rows as RecordedEvents (new objects on every call)."""
        return list(map(make_record, self.rows))

    def staged_stream(
        self,
        stream_id: str,
        after: int,
        version: int | None,
        occurred_us: int | None,
        recorded_us: int | None,
    ) -> list[tuple]:
        """The rows staged for ``stream_id`` with a version above ``after`` and within
        the bounds given (inclusive), in version order."""
        return [
            row
            for row in self.rows
            if row[2] == stream_id
            and row[3] > after
            and (version is None or row[3] <= version)
            and (occurred_us is None or row[10] <= occurred_us)
            and (recorded_us is None or row[9] <= recorded_us)
        ]

    def rollback_to(self, size: int, side_size: int) -> None:
        """Forget every row staged after the first ``size`` and every side row after the
        first ``side_size`` (a savepoint)."""
        if len(self.side) > side_size:
            del self.side[side_size:]
            self.side_latest = {(table, row[0]): row for table, row in self.side}
        removed = self.rows[size:]
        del self.rows[size:]
        # Walking backwards leaves each stream at the version before its first removed row.
        for row in reversed(removed):
            self.versions[row[2]] = row[3] - 1
            self.supplied.pop(row[1], None)


class _TransactionScope:
    """The context manager :meth:`EventStore.transaction` returns.

    A class rather than a ``@contextmanager`` generator: every command opens
    a few nested scopes, and a generator costs several times more per use.
    """

    __slots__ = ("store", "outer", "savepoint")

    def __init__(self, store: EventStore):
        self.store = store

    def __enter__(self) -> EventStore:
        store = self.store
        store._lock.acquire()
        tx = store._tx
        if tx is None:
            self.outer = True
            store._tx = _Transaction(store._head)
        else:
            self.outer = False
            self.savepoint = store._savepoint()
        return store

    def __exit__(self, exc_type, exc, traceback) -> bool:
        store = self.store
        try:
            tx = store._tx
            if not self.outer:
                if exc_type is not None:  # undo this block's appends only
                    store._rollback_to(self.savepoint)
                return False
            store._tx = None
            if exc_type is not None:
                store._head = tx.start_head
                return False
            try:
                store._commit(tx)
            except BaseException:
                store._head = tx.start_head
                raise
            store._publish(tx)
            return False
        finally:
            store._lock.release()


class EventStore:
    """An append-only event log on DuckDB.

    Parameters
    ----------
    path : str or Path, optional
        A DuckDB file, created on first use; ``None`` keeps the store in memory.
    clock : SystemClock or SimulatedClock, optional
        Gives ``recorded_at`` (knowledge time). Defaults to the UTC wall clock;
        use :class:`~eventlab.SimulatedClock` for reproducible notebooks.
    read_only : bool
        Open an existing file for reading only. DuckDB lets one process write a
        file, and while it does no other process may open it, not even read-only.
    bus : EventBus, optional
        Publish every committed event to this bus (see :attr:`bus`).
    sync : bool
        Flush each commit to disk (``fdatasync``) before acknowledging it, the
        default. ``False`` leaves the flush to the operating system: a killed
        process still loses nothing, but a power cut may lose the last commits.
        For simulations and generated histories, where that costs nothing.

    Examples
    --------
    >>> import eventlab as el
    >>> with el.EventStore() as store:
    ...     recorded = store.append("order-1", [el.Event("OrderPlaced", {"total": 12.5})])
    ...     store.version("order-1")
    1
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        clock: SystemClock | SimulatedClock | None = None,
        read_only: bool = False,
        bus: EventBus | None = None,
        sync: bool = True,
    ):
        self.path = None if path is None else Path(path)
        self.clock = clock if clock is not None else SystemClock()
        self.read_only = bool(read_only)
        self.sync = bool(sync)
        self._lock = threading.RLock()
        self._tx: _Transaction | None = None
        self._pending = PendingEvents(None)
        self._absorber = Absorber()  # see _absorb_later
        # Side rows taken from their owners by an absorb that did not commit (see _absorb).
        self._owed_side: list = []
        self._read_aheads = ReadAheads()  # see read_all
        self._versions: dict[str, int] | None = None  # loaded on the first append
        self._new_ids = EventIds()
        # The prefixes of every id this store generated since it opened: rows with such
        # ids may be pending (see _lookup_ids).
        self._id_prefixes = {self._new_ids.prefix}
        self._con: duckdb.DuckDBPyConnection | None = None
        self._overlay: tuple[str, pa.Table] | None = None  # see _overlay_journal
        # Side tables (e.g. commands) with rows a crashed writer left in the journal,
        # which a read-only store cannot show (see CommandLog).
        self._unrecovered_side: frozenset[str] = frozenset()
        self._bus: EventBus | None = None
        self._positions: StreamPositions | None = None  # see _stream_positions
        self._side_owners: dict[str, SideTable] = {}  # see eventlab.sidetables
        self._sole_side_owner: SideTable | None = None  # when one owner has every table
        self._stamp: tuple | None = None  # see _make_stamp
        self._simulated_step = 0  # the step of the last SimulatedClock reading, see _append_in
        if self.read_only and self.path is None:
            raise EventlabError(
                "an in-memory store cannot be read-only: it starts empty. Pass the path "
                "of an existing store file with read_only=True."
            )
        claim_file(self)
        try:
            self._con = connect(self.path, self.read_only)
        except BaseException:
            release_file(self)
            raise
        try:
            self._open()
        except BaseException:
            self._con.close()
            release_file(self)
            raise
        if bus is not None:
            if not isinstance(bus, EventBus):
                self.close()
                raise EventlabError(f"bus must be an el.EventBus, got {type(bus).__name__}")
            try:
                bus._attach(self)
            except BaseException:
                self.close()
                raise
            self._bus = bus

    def _open(self) -> None:
        con = self._con
        if self.read_only:
            tables = {
                row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
            }
            if "events" not in tables:
                raise EventlabError(
                    f"{self.path} is a DuckDB file without an eventlab 'events' table; "
                    f"open it once without read_only=True to create an empty store, or "
                    f"check the path"
                )
        else:
            create_schema(con)
        self._head = con.execute("SELECT coalesce(max(position), 0) FROM events").fetchall()[0][0]
        if self.path is None:
            return
        journal_path, absorbing_path = journal_paths(self.path)
        # A journal handed to a background absorb the crash interrupted holds the
        # older rows: it comes first.
        older, older_side = Journal.recover(absorbing_path, repair=not self.read_only)
        newer, newer_side = Journal.recover(journal_path, repair=not self.read_only)
        recovered = pa.concat_tables([older, newer])
        side = older_side + newer_side
        # Rows DuckDB already holds were absorbed just before a crash: skip them.
        recovered = recovered.filter(pc.greater(recovered["position"], self._head))
        if self.read_only:
            if recovered.num_rows:
                self._overlay_journal(recovered)
            self._unrecovered_side = frozenset(table for table, _ in side)
            return
        self._pending = PendingEvents(Journal(journal_path, sync=self.sync))
        if recovered.num_rows:
            # Acknowledged before a crash but not yet absorbed: absorb them now.
            self._pending.restore(recovered)
            self._head = recovered["position"][-1].as_py()
        with transaction(con):
            self._pending.insert_into(con)
            apply_recovered(con, side)
        self._pending.forget()
        absorbing_path.unlink(missing_ok=True)

    def _overlay_journal(self, recovered: pa.Table) -> None:
        """Show journal rows a crashed writer left behind, without writing the file.

        A read-only store cannot absorb them, so each cursor gets a temporary
        ``events`` view over the table and the rows (temporary objects and
        registered Arrow tables belong to one DuckDB connection, hence per cursor).
        """
        database = self._con.execute("SELECT current_database()").fetchall()[0][0]
        self._overlay = (database, recovered)
        self._head = recovered["position"][-1].as_py()

    def _add_overlay(self, cursor: duckdb.DuckDBPyConnection) -> None:
        database, table = self._overlay
        cursor.register("_journal_rows", table)
        cursor.execute(
            f'CREATE TEMP VIEW events AS SELECT * FROM "{database}".main.events '
            f"UNION ALL SELECT * FROM _journal_rows"
        )

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Absorb pending events and close the database. Safe to call twice.

        Inside a ``store.transaction()`` block it raises :class:`EventlabError`
        and leaves the store open and the transaction as it was: its appends
        commit (or roll back) when the block ends, and then the store can close.
        """
        with self._lock:
            if self._con is None:
                return
            if self._tx is not None:
                # Closing now would drop the staged appends the block's callers were
                # handed, or commit them into a closed journal: neither is what they meant.
                raise EventlabError(
                    "close() was called inside a store.transaction() block, whose appends "
                    "are not committed yet; nothing was closed. Close the store after the "
                    "block ends (e.g. put the `with store.transaction():` block inside "
                    "`with el.EventStore(...) as store:`)"
                )
            journal = self._pending.journal
            # DuckDB will not close a connection while a cursor is fetching.
            self._read_aheads.stop_all()
            try:
                self._absorb()
            finally:
                # A background absorb that failed twice keeps its journal file for the
                # next open; only its descriptor is closed.
                self._absorber.abandon()
                if journal is not None:
                    journal.close()
                    if not self._has_pending():  # a clean close leaves no empty journal
                        journal.path.unlink(missing_ok=True)
                self._con.close()
                self._con = None
                release_file(self)
                if self._bus is not None:
                    self._bus._detach(self)

    @property
    def bus(self) -> EventBus:
        """The :class:`~eventlab.EventBus` this store publishes committed events to.

        Created on first use when the store was not given one.
        """
        with self._lock:
            if self._bus is None:
                bus = EventBus()
                bus._attach(self)
                self._bus = bus
            return self._bus

    def _publish(self, tx: _Transaction) -> None:
        # After the commit, never before: a rolled-back transaction publishes nothing.
        # Records are built only for subscribers: the transaction holds plain rows.
        # Whatever the handlers append (or submit) while this delivery runs commits
        # once, when it ends: one journal sync for a whole batch of reactions. Each
        # handler runs in its own savepoint (see EventBus._deliver).
        if tx.rows and self._bus is not None and self._bus.has_subscribers:
            with self.transaction():
                self._bus.publish(tx.records)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._con is None

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "memory" if self.path is None else str(self.path)
        state = "closed" if self.closed else f"head={self._head}"
        mode = ", read_only" if self.read_only else ""
        return f"EventStore({where}{mode}, {state})"

    # ------------------------------------------------------------------ writing

    def transaction(self) -> _TransactionScope:
        """Group appends into one atomic commit: all of them, or none if the block raises.

        Blocks nest: an inner block that raises undoes only its own appends (a
        savepoint), so one failing command need not take a batch down with it.

        Inside the block, the thread that opened it reads its own writes on one
        stream: :meth:`version`, :meth:`read_stream`, :meth:`state_at` and
        ``Aggregate.load`` include the events appended so far. Whole-log reads
        (:meth:`read_all`, :meth:`events`, :meth:`sql`) show committed events
        only. Other threads wait for the commit.

        Examples
        --------
        >>> import eventlab as el
        >>> store = el.EventStore()
        >>> with store.transaction():
        ...     _ = store.append("a", [el.Event("Created", {})])
        ...     _ = store.append("b", [el.Event("Created", {})])
        >>> store.version("a"), store.version("b")
        (1, 1)
        """
        self._check_writable()
        return _TransactionScope(self)

    @staticmethod
    def _make_stamp(metadata: Mapping[str, Any]) -> tuple:
        """What ``_stamp`` holds: metadata added to every event appended while it is set
        (e.g. a command's causation and correlation ids), encoded once."""
        return (
            dict(metadata),
            json_encoder(metadata),
            _optional_str(metadata.get("correlation_id")),
            _optional_str(metadata.get("causation_id")),
        )

    def _savepoint(self) -> tuple[int, int]:
        """Where the open transaction stands: its staged rows and side rows so far."""
        tx = self._tx
        return len(tx.rows), len(tx.side)

    def _rollback_to(self, savepoint: tuple[int, int]) -> None:
        """Forget what the open transaction staged after ``savepoint`` (see _savepoint)."""
        tx = self._tx
        tx.rollback_to(*savepoint)
        self._head = tx.start_head + savepoint[0]

    def _commit(self, tx: _Transaction) -> None:
        if not tx.rows and not tx.side:
            return
        self._pending.commit(tx.rows, tx.supplied, tx.side)
        if tx.rows:
            self._versions.update(tx.versions)
            self._head = tx.rows[-1][0]
        if tx.side:
            self._side_committed(tx.side)
        if self._pending.count + self._pending.side_count >= ABSORB_THRESHOLD:
            self._absorb_later()

    # ------------------------------------------------------------------ side tables

    def _register_side(self, owner: SideTable) -> None:
        """Let ``owner`` receive its tables' committed rows and write them on absorb."""
        for table in owner.tables:
            self._side_owners[table] = owner
        owners = set(self._side_owners.values())
        self._sole_side_owner = owners.pop() if len(owners) == 1 else None

    def _stage_side(self, table: str, row: tuple) -> None:
        """Stage a side-table row in the open transaction (see eventlab.sidetables)."""
        tx = self._tx
        tx.side.append((table, row))
        tx.side_latest[table, row[0]] = row

    def _staged_side(self, table: str, key: Any) -> tuple | None:
        """The latest row staged in the open transaction for ``key`` of ``table``."""
        tx = self._tx
        return None if tx is None else tx.side_latest.get((table, key))

    def _side_committed(self, rows: list[tuple[str, tuple]]) -> None:
        if self._sole_side_owner is not None:  # the usual case: no grouping needed
            self._sole_side_owner.committed(rows)
            return
        by_owner: dict[int, tuple[SideTable, list[tuple[str, tuple]]]] = {}
        for entry in rows:
            owner = self._side_owners[entry[0]]
            by_owner.setdefault(id(owner), (owner, []))[1].append(entry)
        for owner, owned in by_owner.values():
            owner.committed(owned)

    def append(
        self,
        stream_id: str,
        events: Event | Mapping[str, Any] | Iterable[Event | Mapping[str, Any]],
        *,
        expected_version: int | None = None,
    ) -> list[RecordedEvent]:
        """Append events to a stream, atomically, with consecutive versions.

        Parameters
        ----------
        stream_id : str
            The stream, e.g. ``"order-42"``; the part before the first ``-`` is
            its category by convention.
        events : Event, dict, or a list of them
            What to append; a dict needs ``type`` and may have ``data``,
            ``metadata``, ``event_id`` and ``occurred_at``.
        expected_version : int, optional
            ``None`` appends whatever the version; ``0`` requires a new stream;
            ``n`` requires the stream to be exactly at version ``n``.

        Returns
        -------
        list of RecordedEvent
            The stored events. Re-appending events whose ``event_id`` is already
            stored with identical content writes nothing and returns the stored
            records (an idempotent retry).

        Raises
        ------
        ConcurrencyError
            The stream is not at ``expected_version``; nothing is written.
        DuplicateEventError
            An ``event_id`` is already stored with different content.
        InvalidEventError
            A malformed stream id, event or payload.
        """
        # The checks call out only when something looks wrong: this runs for every append.
        if self._con is None or self.read_only:
            self._check_writable()
        _check_stream_id(stream_id)
        if expected_version is not None and (
            type(expected_version) is not int or expected_version < 0
        ):
            _check_expected_version(expected_version)
        batch = _coerce_events(events)
        with self._lock:
            if self._tx is not None:
                return self._append_in(self._tx, stream_id, batch, expected_version)
            with self.transaction():
                return self._append_in(self._tx, stream_id, batch, expected_version)

    def append_many(
        self,
        streams: Mapping[str, Event | Mapping[str, Any] | Iterable[Event | Mapping[str, Any]]],
        *,
        expected_versions: int | Mapping[str, int] | None = None,
    ) -> dict[str, list[RecordedEvent]]:
        """Append events to many streams at once, atomically: all of them or none.

        The same as one :meth:`append` per stream inside one :meth:`transaction`,
        and several times faster for many small streams (a thousand orders, say),
        as saving many aggregates at once is: the checks, clock readings and ids
        are taken once for all of them. (So every stream's version is checked
        before any payload is encoded: of a wrong version and a bad payload, the
        ``ConcurrencyError`` is raised.)

        Parameters
        ----------
        streams : dict
            Stream id to what to append to it (as :meth:`append` takes it), in
            the order to store them.
        expected_versions : int or dict, optional
            ``None`` appends whatever the versions; an int is every stream's
            expected version (``0``: all new streams); a dict gives some streams
            theirs, as :meth:`append`'s ``expected_version``.

        Returns
        -------
        dict
            Stream id to its stored events, as :meth:`append` returns them.

        Raises
        ------
        ConcurrencyError
            A stream is not at its expected version; nothing is written.
        DuplicateEventError
            An ``event_id`` is already stored with different content.
        InvalidEventError
            A malformed argument, stream id, event or payload.

        Examples
        --------
        >>> import eventlab as el
        >>> store = el.EventStore()
        >>> stored = store.append_many(
        ...     {"order-1": [el.Event("OrderPlaced", {"total": 5})],
        ...      "order-2": [el.Event("OrderPlaced", {"total": 7}), el.Event("OrderPaid", {})]},
        ...     expected_versions=0,
        ... )
        >>> {stream: [e.version for e in events] for stream, events in stored.items()}
        {'order-1': [1], 'order-2': [1, 2]}
        """
        if self._con is None or self.read_only:
            self._check_writable()
        if not isinstance(streams, Mapping):
            raise InvalidEventError(
                f"streams must be a dict of stream id to events, e.g. "
                f"{{'order-1': [el.Event('OrderPlaced', {{}})]}}; got {type(streams).__name__}"
            )
        expected = _expected_versions(expected_versions, streams)
        appends = []
        for stream_id, events in streams.items():
            _check_stream_id(stream_id)
            appends.append((stream_id, _coerce_events(events), expected(stream_id)))
        # Thousands of records are made at once and stay alive through the commit: a
        # collection meanwhile would walk them all, to free none (measured: a fifth of
        # the time). The caller's collector walks what it keeps of them, once.
        with self._lock, paused_gc():
            if self._tx is not None:
                return self._append_many_in(self._tx, appends)
            with self.transaction():
                return self._append_many_in(self._tx, appends)

    def seed_event_ids(self, seed: int | str) -> None:
        """Make the ids of the events appended from now on a function of ``seed``.

        By default every store draws a random prefix for the ids it generates, so
        two runs of the same program write the same events with different ids.
        After ``seed_event_ids(seed)`` the prefix derives from the seed and the
        store's head, so a program that appends the same events to a store with
        the same head gets the same ids (e.g. :func:`eventlab.shop.simulate`).
        Ids stay unique within the store: a later call at another head gives
        another prefix. Ids given by the caller (``Event(event_id=...)``) are
        unaffected.

        Examples
        --------
        >>> import eventlab as el
        >>> ids = []
        >>> for _ in range(2):
        ...     store = el.EventStore(clock=el.SimulatedClock("2024-05-01"))
        ...     store.seed_event_ids(7)
        ...     ids.append(store.append("s-1", el.Event("Created", {}))[0].event_id)
        >>> ids[0] == ids[1]
        True
        """
        if isinstance(seed, bool) or not isinstance(seed, int | str):
            raise EventlabError(f"seed must be an int or a str, got {type(seed).__name__}")
        self._check_writable()
        with self._lock:
            if self._tx is not None:
                raise EventlabError(
                    "seed_event_ids() inside a transaction would change the ids of events "
                    "already staged in it; call it before store.transaction()"
                )
            self._new_ids = EventIds(f"{seed}@{self._head}")
            self._id_prefixes.add(self._new_ids.prefix)

    def _append_in(
        self,
        tx: _Transaction,
        stream_id: str,
        batch: list[Event],
        expected_version: int | None,
        *,
        name_stream: bool = False,
    ) -> list[RecordedEvent]:
        """Check and stage one append. Raises before changing anything, so no savepoint.

        With ``name_stream``, an error about an event names its stream (one of
        several in an :meth:`append_many`)."""
        supplied = None
        for event in batch:  # a loop that stops early: most appends supply no ids
            if event.event_id is not None:
                supplied = [given.event_id for given in batch if given.event_id is not None]
                duplicates = self._find_stored(stream_id, batch, supplied, name_stream)
                if duplicates is not None:
                    return duplicates
                break
        current = self._current_version(stream_id)
        if expected_version is not None and expected_version != current:
            raise ConcurrencyError(stream_id, expected_version, current)
        records = self._stage(tx, [(stream_id, batch, current)], len(batch), name_stream)
        if supplied:
            for event, record in zip(batch, records, strict=True):
                if event.event_id is not None:
                    tx.supplied[event.event_id] = record
        return records

    def _append_many_in(
        self, tx: _Transaction, appends: list[tuple[str, list[Event], int | None]]
    ) -> dict[str, list[RecordedEvent]]:
        """Check and stage the appends of :meth:`append_many`, all or none."""
        if any(event.event_id is not None for _, batch, _ in appends for event in batch):
            # Caller-given ids make each append an idempotent retry or not on its own:
            # stream by stream, as appends in one transaction, undone together.
            savepoint = self._savepoint()
            try:
                named = len(appends) > 1
                return {
                    s: self._append_in(tx, s, batch, v, name_stream=named)
                    for s, batch, v in appends
                }
            except BaseException:
                self._rollback_to(savepoint)
                raise
        checked = []
        size = 0
        current_version = self._current_version
        for stream_id, batch, expected_version in appends:
            current = current_version(stream_id)
            if expected_version is not None and expected_version != current:
                raise ConcurrencyError(stream_id, expected_version, current)
            checked.append((stream_id, batch, current))
            size += len(batch)
        records = self._stage(tx, checked, size, len(checked) > 1)
        staged = {}
        end = 0
        for stream_id, batch, _ in checked:
            start, end = end, end + len(batch)
            staged[stream_id] = records[start:end]
        return staged

    def _stage(
        self,
        tx: _Transaction,
        appends: list[tuple[str, list[Event], int]],
        size: int,
        name_streams: bool = False,
    ) -> list[RecordedEvent]:
        """Stage checked appends in ``tx``: each stream's events (``size`` in all) after its
        current version. Returns their records, in order. With ``name_streams``, a bad
        payload's error names its stream.

        This is the hot path of every write, hence the plain loop and local names.
        A bad payload raises before anything changes.
        """
        clock = self.clock
        # A SimulatedClock moves only once the append is sure to succeed: its readings
        # are peeked now and taken after the loop (a rejected append must not shift
        # the timestamps of later ones). Reading other clocks changes nothing.
        simulated = clock.__class__ is SimulatedClock
        if simulated:
            first_us, step_us = clock.peek_micros(), self._simulated_step
        else:
            first_us, step_us = reserve_micros(clock, size)
        new_ids = self._new_ids.take(size)
        position = self._head + 1
        encode = json_encoder
        dumps, reject, options = ORJSON_FIRST_TRY
        stamp = self._stamp
        # Without upcasters every type is at schema version 1: no call per event.
        schema_version = upcasters.current_version if upcasters else None
        rows = []
        index = 0  # of the event among all those staged here
        try:
            for stream_id, batch, current in appends:
                version = current + 1 - index  # + index: the event's version
                for event in batch:
                    metadata = event.metadata
                    if metadata:
                        if stamp is not None:
                            metadata = {**metadata, **stamp[0]}
                        metadata_json = encode(metadata)
                        correlation_id = _optional_str(metadata.get("correlation_id"))
                        causation_id = _optional_str(metadata.get("causation_id"))
                    elif stamp is not None:
                        _, metadata_json, correlation_id, causation_id = stamp
                    else:
                        metadata_json, correlation_id, causation_id = "{}", None, None
                    recorded_us = first_us + index * step_us
                    occurred = event.occurred_at
                    data = event.data
                    try:  # json_encoder's first try, inline (see ORJSON_FIRST_TRY)
                        data_json = dumps(data, default=reject, option=options).decode()
                    except TypeError:
                        data_json = encode(data)
                    else:
                        if "null" in data_json:
                            data_json = encode(data)
                    rows.append(
                        (
                            position + index,
                            event.event_id or new_ids[index],
                            stream_id,
                            version + index,
                            event.type,
                            data_json,
                            metadata_json,
                            correlation_id,
                            causation_id,
                            recorded_us,
                            recorded_us if occurred is None else to_micros(occurred),
                            1 if schema_version is None else schema_version(event.type),
                        )
                    )
                    index += 1
        except BaseException as exc:
            # Seeded ids must not depend on how many appends failed either.
            self._new_ids.give_back(size)
            if isinstance(exc, TypeError | ValueError | RecursionError):
                for stream_id, batch, _ in appends:
                    _raise_unserialisable(batch, _events_label(stream_id, name_streams))
            raise
        if simulated:
            taken = clock.reserve_micros(size)
            if taken != (first_us, step_us):  # the step changed, or another thread read it
                self._simulated_step = taken[1]
                events = [event for _, batch, _ in appends for event in batch]
                rows = _restamp(rows, events, *taken)
        # Nothing above changes the store, so a bad payload leaves no trace.
        self._head += size
        tx.rows.extend(rows)  # plain tuples: see _Transaction
        versions = tx.versions
        for stream_id, batch, current in appends:
            if batch:
                versions[stream_id] = current + len(batch)
        return list(map(make_record, rows))

    def _find_stored(
        self, stream_id: str, batch: list[Event], supplied: list[str], name_stream: bool = False
    ) -> list[RecordedEvent] | None:
        """Stored records when every event of ``batch`` was stored before (a retry).

        Returns None when none was; raises when some were, or when content differs.
        """
        if len(set(supplied)) != len(supplied):
            raise DuplicateEventError(
                "the same event_id appears twice in one append; give every event its own id"
            )
        stored = self._lookup_ids(supplied)
        if not stored:
            return None
        if len(stored) != len(batch):
            raise DuplicateEventError(
                f"event ids {sorted(stored)} are already stored but the other events of this "
                f"append are not; an idempotent retry must repeat the original append exactly. "
                f"Give new events new ids."
            )
        records = [stored[event.event_id] for event in batch]
        stamp = self._stamp
        where = _events_label(stream_id, name_stream)
        for index, (event, record) in enumerate(zip(batch, records, strict=True)):
            # The stored JSON text against the new payload encoded as an append would
            # store it (metadata with the store's stamp): not the decoded values of the
            # record handed out before, which its holder may have changed, and which
            # compare True == 1 == 1.0.
            data_json = to_json(event.data, f"{where}[{index}].data")
            try:
                metadata_json = _metadata_columns(event.metadata, stamp, json_encoder)[0]
            except (TypeError, ValueError, RecursionError):
                to_json(event.metadata, f"{where}[{index}].metadata")
                raise
            same = (
                record[2] == stream_id
                and record[4] == event.type
                and _same_json(record[5], data_json)
                and _same_json(record[6], metadata_json)
                and (event.occurred_at is None or record[10] == to_micros(event.occurred_at))
            )
            if not same:
                raise DuplicateEventError(
                    f"event_id {event.event_id!r} is already stored as {record.type} in stream "
                    f"{record.stream_id!r} (version {record.version}) with different content; "
                    f"event ids must be unique: use a new id for a new event"
                )
        return records

    def _lookup_ids(self, event_ids: list[str]) -> dict[str, RecordedEvent]:
        """Stored, pending and staged records by event id."""
        tx = self._tx
        found: dict[str, RecordedEvent] = {}
        generated: set[str] = set()
        prefixes = self._id_prefixes
        for event_id in event_ids:
            record = tx.supplied.get(event_id) if tx is not None else None
            record = record or self._pending.find(event_id)
            if record is not None:
                found[event_id] = record
            elif len(event_id) == 36 and event_id[:24] in prefixes:
                generated.add(event_id)
        if generated:
            # An id this store generated (see EventIds), given back by a caller: such
            # rows are not in the maps of caller-supplied ids above, and DuckDB does not
            # hold them before they are absorbed. Rare, so a scan.
            rows = self._pending.find_rows(generated)
            if tx is not None:
                rows.update((row[1], row) for row in tx.rows if row[1] in generated)
            found.update((event_id, make_record(row)) for event_id, row in rows.items())
        missing = [i for i in event_ids if i not in found]
        if missing:
            # Pending rows were checked above, so DuckDB need not absorb them first; but
            # rows handed to a background absorb are only found once it has committed.
            self._absorber.finish(self._con)
            rows = (
                self._con.cursor()
                .execute(
                    SELECT_RECORD.format(src="events") + " WHERE event_id IN (SELECT unnest($1))",
                    [missing],
                )
                .fetchall()
            )
            found.update({row[1]: make_record(row) for row in rows})
        return found

    def _current_version(self, stream_id: str) -> int:
        if self._tx is not None and stream_id in self._tx.versions:
            return self._tx.versions[stream_id]
        if self._versions is None:
            self._load_versions()
        return self._versions.get(stream_id, 0)

    def _load_versions(self) -> None:
        # One grouped scan, once: after it, version checks cost a dict lookup.
        # Pending events are not in DuckDB yet; side rows need not be absorbed for this.
        absorbing = self._pending.count or self._absorber.busy
        cursor = self._cursor() if absorbing else self._con.cursor()
        rows = cursor.execute(
            "SELECT stream_id, max(version) FROM events GROUP BY stream_id"
        ).fetchall()
        self._versions = dict(rows)

    # ------------------------------------------------------------------ absorbing

    def _absorb(self) -> None:
        """Move pending rows (events and side rows) into DuckDB in one transaction, then
        empty the journal; a background absorb is waited for (and retried if it
        failed) first."""
        con = self._con
        self._absorber.finish(con)
        writers = self._take_side_rows()
        if not self._pending.count and not writers:
            return
        # Owed until DuckDB commits them: a failed absorb must not lose the side rows.
        self._owed_side = writers
        with transaction(con):
            self._pending.insert_into(con)
            for write in writers:
                write(con)
        self._owed_side = []
        self._pending.forget()

    def _absorb_later(self) -> None:
        """Hand everything pending to a background absorb; the next commits go to a new
        journal (see :mod:`eventlab.absorber`).

        A failed earlier absorb is not raised here (the append that got here is
        already acknowledged): the next read or close retries and raises it. Only
        where the journal cannot be renamed does this absorb in place, and raise
        as an absorb did before there was a background thread.
        """
        try:
            self._absorber.finish(self._con)
        except Exception:  # noqa: BLE001 - the next read or close retries and raises it
            return  # a failed absorb failed again: keep buffering meanwhile
        batch = self._pending
        fresh = None
        if batch.journal is not None:
            fresh = self._rotate_journal(batch.journal)
            if fresh is None:
                # The file system would not rename an open file (Windows, say): absorb
                # here, as a store did before it had a background thread.
                self._absorb()
                return
        writers = self._take_side_rows()
        self._owed_side = []
        self._pending = PendingEvents(fresh)
        self._absorber.start(self._con.cursor(), batch, writers)

    def _rotate_journal(self, journal: Journal) -> Journal | None:
        """Rename ``journal`` for its absorb and open a new one in its place (None if the
        file system refused; ``journal`` then stays as it was)."""
        current, absorbing = journal_paths(self.path)
        try:
            journal.move_to(absorbing)
        except OSError:
            return None
        try:
            return Journal(current, sync=self.sync)
        except OSError:
            journal.move_to(current)
            return None

    def _take_side_rows(self) -> list:
        """Writers of every side row waiting for DuckDB: those owed by a failed absorb,
        then those the side tables hold."""
        owners = [o for o in set(self._side_owners.values()) if o.has_pending()]
        return self._owed_side + [owner.take_pending() for owner in owners]

    def _has_pending(self) -> bool:
        return bool(
            self._pending.count
            or self._pending.side_count
            or self._owed_side
            or self._absorber.busy
        )

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A fresh cursor that sees every acknowledged event."""
        self._check_open()
        with self._lock:
            if self._has_pending():
                self._absorb()
            cursor = self._con.cursor()
            if self._overlay is not None:
                self._add_overlay(cursor)
            return cursor

    def _check_open(self) -> None:
        if self._con is None:
            raise StoreClosedError("this store is closed; open a new el.EventStore(path)")

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise ReadOnlyError(
                f"this store was opened with read_only=True, so it cannot append; open "
                f"el.EventStore({str(self.path)!r}) without read_only to write (one writing "
                f"process at a time)"
            )

    # ------------------------------------------------------------------ reading

    def version(self, stream_id: str) -> int:
        """The stream's current version: its number of events (0 if it does not exist)."""
        check_name("stream_id", stream_id)
        self._check_open()
        with self._lock:
            if self._tx is not None or self._versions is not None:
                return self._current_version(stream_id)
            row = (
                self._cursor()
                .execute(
                    "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1", [stream_id]
                )
                .fetchall()[0]
            )
            return row[0]

    @property
    def head(self) -> int:
        """The position of the last committed event (0 for an empty store)."""
        if self._tx is not None:
            return self._tx.start_head
        return self._head

    def read_stream(
        self, stream_id: str, *, from_version: int = 1, to_version: int | None = None
    ) -> list[RecordedEvent]:
        """The events of one stream in version order, optionally a version range (inclusive)."""
        check_name("stream_id", stream_id)
        if isinstance(from_version, bool) or not isinstance(from_version, int) or from_version < 0:
            raise EventlabError(
                f"from_version must be a version, an int from 1 up (1 reads from the start), "
                f"got {from_version!r}"
            )
        if to_version is not None and (
            isinstance(to_version, bool) or not isinstance(to_version, int) or to_version < 0
        ):
            raise EventlabError(
                f"to_version must be None (to the end) or a version, an int from 0 up, "
                f"got {to_version!r}"
            )
        return self._read_stream_as_of(
            stream_id, version=to_version, at=None, known_at=None, after=from_version - 1
        )

    def read_all(
        self,
        *,
        after: int = 0,
        types: Sequence[str] | str | None = None,
        until: int | datetime | str | None = None,
        batch_size: int = READ_BATCH_SIZE,
    ) -> Iterator[RecordedEvent]:
        """Iterate over every event in position order, streaming in Arrow batches.

        Memory stays bounded by ``batch_size`` whatever the size of the history:
        at most two batches are held, the one being iterated and the next, which
        a background thread fetches from DuckDB meanwhile (see
        :mod:`eventlab.read_ahead`).

        Parameters
        ----------
        after : int
            Start after this position (0 reads from the beginning).
        types : str or list of str, optional
            Only events of these types.
        until : int or datetime, optional
            Stop at this position (an int, inclusive), or at this knowledge time
            (a datetime or ISO string: events recorded at or before it).
        batch_size : int
            Rows fetched from DuckDB at a time.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise EventlabError(
                f"batch_size must be a positive int (rows fetched at a time), got "
                f"{batch_size!r}; the default is {READ_BATCH_SIZE}"
            )
        where, params = filters(after=after, types=types, until=until)
        sql = SELECT_RECORD.format(src="events") + where
        if self._overlay is not None:
            sql += " ORDER BY position"
        # Events are only ever inserted in position order, and DuckDB preserves
        # insertion order for a plain scan, so no sort is needed here.
        reader = self._cursor().sql(sql, params=params).to_arrow_reader(batch_size)
        return iterate_records(self._read_aheads.batches(reader, batch_size))

    def streams(self) -> list[str]:
        """Every stream id, sorted."""
        rows = (
            self._cursor()
            .execute("SELECT DISTINCT stream_id FROM events ORDER BY stream_id")
            .fetchall()
        )
        return [row[0] for row in rows]

    def events(
        self,
        stream_id: str | None = None,
        *,
        types: Sequence[str] | str | None = None,
        after: int = 0,
        until: int | datetime | str | None = None,
    ) -> pd.DataFrame:
        """The events as a pandas DataFrame, one row per event, in position order.

        ``data`` and ``metadata`` hold decoded dicts; timestamps are UTC.
        """
        where, params = filters(after=after, types=types, until=until)
        if stream_id is not None:
            check_name("stream_id", stream_id)
            params.append(stream_id)
            where += f" AND stream_id = ${len(params)}"
        frame = (
            self._cursor().execute(f"SELECT * FROM events{where} ORDER BY position", params).df()
        )
        frame["data"] = frame["data"].map(_loads)
        frame["metadata"] = frame["metadata"].map(_loads)
        return frame

    def sql(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """Run a read-only SQL query over the store's tables and return a DataFrame.

        Examples
        --------
        >>> import eventlab as el
        >>> store = el.EventStore()
        >>> _ = store.append("s-1", [el.Event("Created", {"n": 1})])
        >>> store.sql("SELECT type, count(*) AS n FROM events GROUP BY type")
              type  n
        0  Created  1
        """
        return read_query(self._cursor(), query, params)

    # ------------------------------------------------------------------ replay and undo

    def state_at(
        self,
        stream_id: str,
        reducer: Any,
        *,
        version: int | None = None,
        at: datetime | str | None = None,
        known_at: datetime | str | None = None,
        initial: Any = None,
    ) -> Any:
        """The state of one stream, replayed up to a point on any of three time axes.

        Parameters
        ----------
        stream_id : str
            The stream to replay.
        reducer : callable or Aggregate subclass
            ``reducer(state, event) -> state``, or an :class:`~eventlab.Aggregate`.
        version : int, optional
            The state after the stream's first ``version`` events; beyond the
            end raises :class:`~eventlab.VersionNotFoundError`.
        at : datetime or str, optional
            Business time: only events that occurred at or before it, as far as
            the store knows now.
        known_at : datetime or str, optional
            Knowledge time: only events recorded at or before it, i.e. what the
            system believed then. With ``at``: what we knew at ``known_at``
            about the state at ``at``.
        initial : object, optional
            The state before the first event, for function reducers.

        Examples
        --------
        >>> import eventlab as el
        >>> store = el.EventStore(clock=el.SimulatedClock("2024-05-01"))
        >>> _ = store.append("acct-1", [el.Event("Deposited", {"amount": 10}),
        ...                             el.Event("Deposited", {"amount": 5})])
        >>> add = lambda balance, e: balance + e.data["amount"]
        >>> store.state_at("acct-1", add, initial=0)
        15
        >>> store.state_at("acct-1", add, version=1, initial=0)
        10
        """
        from .replay import state_at

        return state_at(
            self, stream_id, reducer, version=version, at=at, known_at=known_at, initial=initial
        )

    def revert(
        self, stream_id: str, to_version: int, *, reason: str | None = None
    ) -> RecordedEvent:
        """Undo without deleting: append one ``Reverted`` event returning the state to a version.

        Every replay then treats the stream as if it were back at ``to_version``;
        the history keeps every event, time travel to a version before the revert
        still shows the original states, and a later revert can undo this one.
        """
        current = self.version(stream_id)
        if isinstance(to_version, bool) or not isinstance(to_version, int) or to_version < 0:
            raise InvalidEventError(
                f"to_version must be a version of the stream (0 to {current}), got {to_version!r}"
            )
        if to_version > current:
            from .errors import VersionNotFoundError

            raise VersionNotFoundError(stream_id, to_version, current)
        if current == 0:
            raise InvalidEventError(
                f"stream {stream_id!r} has no events, so there is nothing to revert; check "
                f"the stream id (store.streams() lists them)"
            )
        from .replay import REVERTED

        data = {"to_version": to_version, "reason": reason}
        [recorded] = self.append(stream_id, Event(REVERTED, data), expected_version=current)
        return recorded

    def _read_stream_as_of(
        self,
        stream_id: str,
        *,
        version: int | None,
        at: datetime | str | None,
        known_at: datetime | str | None,
        after: int = 0,
    ) -> list[RecordedEvent]:
        """A stream's events after a version and up to a version, an occurred_at and a
        recorded_at (inclusive)."""
        sql = SELECT_RECORD.format(src="events") + " WHERE stream_id = $1 AND version > $2"
        params: list[Any] = [stream_id, after]
        sql += upper_bounds(params, version=version, occurred_at=at, recorded_at=known_at)
        positions = self._stream_positions()
        if positions is not None:
            sql += positions.sql(stream_id, params)
        rows = self._cursor().execute(sql + " ORDER BY version", params).fetchall()
        # Read-your-writes: inside a transaction its own appends to the stream count too,
        # so an aggregate loaded there (say, by the second command of a group commit that
        # touches it) agrees with version() and saves without a false ConcurrencyError.
        tx = self._tx
        if tx is not None and stream_id in tx.versions and tx.thread == threading.get_ident():
            rows += tx.staged_stream(
                stream_id,
                after,
                version,
                None if at is None else to_micros(at),
                None if known_at is None else to_micros(known_at),
            )
        return [make_record(row) for row in rows]

    def _stream_positions(self) -> StreamPositions | None:
        """The map of where streams lie, for a big store; rebuilt when much was added.

        Without it, reading one stream scans every row group whose statistics
        cannot rule the stream out (see :mod:`eventlab.stream_positions`).
        """
        with self._lock:
            head = self._head
            if not should_map(head):
                return None
            known = self._positions
            if known is None or head - known.head > max(MIN_EVENTS, known.head // 10):
                self._positions = StreamPositions(self._cursor(), head)
            return self._positions

    def rebuild_snapshots(
        self,
        reducer: Any,
        *,
        initial: Any = None,
        category: str | None = None,
        progress: bool = False,
    ) -> int:
        """Take a reducer's snapshots for the existing history, replacing its old ones.

        For every stream (or those whose id starts with ``category``), a snapshot
        at each multiple of the reducer's snapshot interval. Returns how many
        were stored. ``progress=True`` shows a progress bar (tqdm) over the events.
        """
        from .snapshots import rebuild

        return rebuild(self, reducer, initial=initial, category=category, progress=progress)

    def _has_snapshots_table(self) -> bool:
        if not getattr(self, "_snapshots_table", False):
            tables = self._cursor().execute(
                "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'snapshots'"
            )
            self._snapshots_table = tables.fetchall()[0][0] > 0
        return self._snapshots_table

    # ------------------------------------------------------------------ bulk and Parquet

    def append_frame(self, frame: pd.DataFrame | pa.Table) -> int:
        """Append a whole DataFrame or Arrow table of events in one transaction.

        Required columns: ``stream_id``, ``type``, ``data`` (dicts or JSON text).
        Optional: ``event_id``, ``occurred_at``, ``metadata``, ``version``,
        ``correlation_id``, ``causation_id``. Rows keep their order; versions
        continue each stream. A given ``version`` column must continue every
        stream exactly, else :class:`ConcurrencyError` and nothing is written.

        Returns
        -------
        int
            The number of events appended.
        """
        from .ingest import append_table

        return append_table(self, frame)

    def import_parquet(self, path_or_glob: str | Path) -> int:
        """Append the events in Parquet files (a file, a directory or a glob).

        Into an empty store every column is kept exactly, positions included;
        into a non-empty one positions continue the log and versions must
        continue their streams. Returns the number of events imported.
        """
        from .parquet import import_parquet

        return import_parquet(self, path_or_glob)

    def import_xes(self, path: str | Path, *, progress: bool = False) -> int:
        """Append the events of an XES event log (``.xes`` or gzipped ``.xes.gz``).

        Each trace becomes a stream (its ``concept:name`` the stream id) and
        each event an event: ``concept:name`` the type, ``time:timestamp`` the
        business time ``occurred_at`` (UTC), every other attribute in ``data``
        with its type (``lifecycle:transition`` included; dates as UTC ISO text)
        and the trace's other attributes in ``metadata``. One transaction: a
        malformed file or a value that cannot be read raises
        :class:`~eventlab.XesError` naming the line, and nothing is written.
        ``progress=True`` shows a progress bar. Returns the number of events.
        """
        from .xes import import_xes

        return import_xes(self, path, progress=progress)

    def import_csv(
        self,
        path: str | Path,
        *,
        stream: str,
        type: str,  # noqa: A002 (the name every event has)
        occurred_at: str | None = None,
        data: Sequence[str] | None = None,
        metadata: Sequence[str] | None = None,
        delimiter: str | None = None,
        progress: bool = False,
    ) -> int:
        """Append the rows of an event CSV file (plain or gzipped), one event per row.

        ``stream``, ``type`` and ``occurred_at`` name the columns of the stream
        id, the event type and the business time (ISO 8601; no offset means
        UTC). ``data`` lists the columns for the payload, by default all the
        others except ``case:...`` columns, which go into ``metadata`` (without
        the prefix), as in a CSV written from an XES log. Stream ids and types
        are text as written; a payload column holds numbers or booleans only if
        every value reads back as written (``01234`` stays text), times as UTC
        ISO text; only empty cells are missing (left out). The file must be
        UTF-8. ``delimiter`` defaults to the most frequent of
        ``, ; tab |`` in the header. A malformed row, an empty stream or type or
        an unreadable time raises :class:`~eventlab.CsvError` naming the row, a
        missing column :class:`~eventlab.MissingColumnsError`; nothing is
        written then. Returns the number of events.

        Examples
        --------
        >>> import eventlab as el, tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "log.csv"
        >>> _ = path.write_text(
        ...     "case,activity,time,cost\\nc1,Order,2024-05-01T10:00:00+02:00,12.5\\n"
        ... )
        >>> store = el.EventStore()
        >>> store.import_csv(path, stream="case", type="activity", occurred_at="time")
        1
        >>> event = next(store.read_all())
        >>> event.stream_id, event.type, event.data, event.occurred_at.isoformat()
        ('c1', 'Order', {'cost': 12.5}, '2024-05-01T08:00:00+00:00')
        """
        from .csv_import import import_csv

        return import_csv(
            self,
            path,
            stream=stream,
            type=type,
            occurred_at=occurred_at,
            data=data,
            metadata=metadata,
            delimiter=delimiter,
            progress=progress,
        )

    def export_parquet(
        self,
        directory: str | Path,
        *,
        partition_by: str | Sequence[str] | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Write the whole log as Parquet into ``directory`` and return it.

        ``partition_by="day"`` writes Hive partitions by the UTC date of
        ``recorded_at``; any other value names columns to partition by.
        """
        from .parquet import export_parquet

        return export_parquet(self, directory, partition_by=partition_by, overwrite=overwrite)

    @classmethod
    def from_parquet(
        cls,
        path_or_glob: str | Path,
        path: str | Path | None = None,
        *,
        clock: SystemClock | SimulatedClock | None = None,
    ) -> EventStore:
        """Build a new store (in memory, or at ``path``) from exported Parquet files."""
        store = cls(path, clock=clock)
        try:
            if store.head:
                raise EventlabError(
                    f"{path} already holds {store.head} events; from_parquet builds a new "
                    f"store. Use store.import_parquet() to add to an existing one."
                )
            store.import_parquet(path_or_glob)
        except BaseException:
            store.close()
            raise
        return store

    # ------------------------------------------------------------------ hooks for later layers

    def _after_bulk_insert(self, last_position: int) -> None:
        """Bring in-memory state in line after an insert that bypassed staging."""
        self._head = last_position
        self._versions = None
        if self._bus is not None and self._bus.has_subscribers:
            self._bus._advance()


def _check_stream_id(stream_id: object) -> None:
    """Refuse a malformed stream id; the full check runs only when it looks wrong."""
    # (isascii: a non-ASCII id may hold a lone surrogate, which check_name refuses.)
    if (
        type(stream_id) is not str
        or not stream_id.isascii()
        or not stream_id
        or stream_id.isspace()
    ):
        check_name("stream_id", stream_id)


def _coerce_events(events: Any) -> list[Event]:
    if type(events) is list:
        # The common case (the ABC checks below cost more than a small append), and
        # usually a list of Events only: then it is used as given, without a copy.
        for event in events:
            if type(event) is not Event:
                break
        else:
            return events
    elif isinstance(events, (Event, Mapping)):
        events = [events]
    elif isinstance(events, (str, bytes)) or not isinstance(events, Iterable):
        raise InvalidEventError(
            f"events must be an el.Event, a dict, or a list of them; got {type(events).__name__}"
        )
    coerce = Event.coerce
    return [event if type(event) is Event else coerce(event) for event in events]


def _events_label(stream_id: str, named: bool) -> str:
    """How errors name an append's events: ``events``, or with ``named`` (one stream of
    several in EventStore.append_many) ``streams['<stream id>']``."""
    return f"streams[{stream_id!r}]" if named else "events"


def _raise_unserialisable(batch: list[Event], where: str = "events") -> None:
    """Re-encode payload by payload to name the one that failed (the slow path); ``where``
    names the events (see _events_label)."""
    for index, event in enumerate(batch):
        to_json(event.data, f"{where}[{index}].data")
        if event.metadata:
            to_json(event.metadata, f"{where}[{index}].metadata")


def _restamp(rows: list[tuple], batch: list[Event], first_us: int, step_us: int) -> list[tuple]:
    """``rows`` recorded from ``first_us`` on, ``step_us`` apart (and occurred then too,
    where their event gave no occurred_at)."""
    restamped = []
    for index, (row, event) in enumerate(zip(rows, batch, strict=True)):
        recorded_us = first_us + index * step_us
        occurred_us = recorded_us if event.occurred_at is None else row[10]
        restamped.append((*row[:9], recorded_us, occurred_us, row[11]))
    return restamped


def _metadata_columns(
    metadata: Mapping[str, Any] | None, stamp: tuple | None, encode: Any
) -> tuple[str, str | None, str | None]:
    """An event's metadata JSON, correlation id and causation id, with the store's stamp
    (see EventStore._make_stamp) added: what _append_in's loop makes of it inline."""
    if metadata:
        if stamp is not None:
            metadata = {**metadata, **stamp[0]}
        return (
            encode(metadata),
            _optional_str(metadata.get("correlation_id")),
            _optional_str(metadata.get("causation_id")),
        )
    if stamp is not None:
        return stamp[1:]
    return "{}", None, None


def _expected_versions(given: object, streams: Mapping[str, Any]) -> Callable[[str], int | None]:
    """Each stream's expected version from ``append_many``'s ``expected_versions``."""
    if given is None or isinstance(given, int):
        _check_expected_version(given)
        return lambda stream_id: given  # type: ignore[return-value]
    if not isinstance(given, Mapping):
        raise InvalidEventError(
            f"expected_versions must be None, an int for every stream, or a dict of stream "
            f"id to version; got {type(given).__name__}"
        )
    unknown = [stream_id for stream_id in given if stream_id not in streams]
    if unknown:
        raise InvalidEventError(
            f"expected_versions names streams that get no events: {sorted(map(str, unknown))}; "
            f"give versions only for the streams appended to"
        )
    for version in given.values():
        _check_expected_version(version)
    return given.get


def _check_expected_version(expected: object) -> None:
    if expected is None:
        return
    if isinstance(expected, bool) or not isinstance(expected, int) or expected < 0:
        raise InvalidEventError(
            f"expected_version must be None (any version), 0 (a new stream) or a positive "
            f"int (the stream's current version), got {expected!r}"
        )


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def _same_json(stored: str, new: str) -> bool:
    """Whether two JSON texts hold the same value: the same text, or the same value
    up to key order and spacing (a row a frame or Parquet file stored as given). Types
    count: true, 1 and 1.0 differ."""
    if stored == new:
        return True
    return canonical_json(stored) == canonical_json(new)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)
