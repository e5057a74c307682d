"""The command store's engine: command rows that commit with events, and the queue.

Every status change of every command is kept (``command_history``) and every
command's latest row too (``commands``). Writing each change straight into
DuckDB costs about a millisecond, which would cap a scheduler at a few hundred
commands a second. So the rows travel like events do (see
:mod:`eventlab.sidetables`): a change is staged in the store's open
transaction, written to the journal with that transaction's events (one
record, one sync: the command's status and the events it caused are durable
together or not at all), and reaches DuckDB in bulk with the next absorb.

The log also keeps what the scheduler needs in memory: every command not yet
finished, and a FIFO queue of the queued ones by due time, so taking the next
command costs a heap pop, not a query. There is one log per store, shared by
every :class:`~eventlab.CommandStore`, executor and scheduler on it.
"""

from __future__ import annotations

import heapq
import json
import operator
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from .clock import from_micros, peek_micros, to_micros
from .errors import CommandError, EventlabError, ReadOnlyError
from .events import canonical_json, from_json, storable_text, to_json
from .sidetables import register_applier

if TYPE_CHECKING:
    from .commands import Command
    from .store import EventStore

QUEUED, RUNNING, SUCCEEDED, REJECTED = "queued", "running", "succeeded", "rejected"
FAILED, TIMED_OUT, EXPIRED, DEAD = "failed", "timed_out", "expired", "dead"
STATUSES = (QUEUED, RUNNING, SUCCEEDED, REJECTED, FAILED, TIMED_OUT, EXPIRED, DEAD)
# A command in one of these is done: no scheduler will run it again (unless a
# dead one is requeued by hand).
TERMINAL = frozenset({SUCCEEDED, REJECTED, EXPIRED, DEAD})
_STATUS_SET = frozenset(STATUSES)

COMMANDS_DDL = """
CREATE TABLE IF NOT EXISTS commands (
    command_id     VARCHAR PRIMARY KEY,
    seq            BIGINT NOT NULL,
    type           VARCHAR NOT NULL,
    payload        JSON NOT NULL,
    status         VARCHAR NOT NULL,
    attempts       INTEGER NOT NULL,
    submitted_at   TIMESTAMPTZ NOT NULL,
    available_at   TIMESTAMPTZ NOT NULL,
    started_at     TIMESTAMPTZ,
    finished_at    TIMESTAMPTZ,
    deadline       TIMESTAMPTZ,
    error          VARCHAR,
    result         JSON,
    correlation_id VARCHAR,
    context        JSON NOT NULL
);
CREATE TABLE IF NOT EXISTS command_history (
    command_id VARCHAR NOT NULL,
    seq        BIGINT NOT NULL,
    status     VARCHAR NOT NULL,
    attempt    INTEGER NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL,
    error      VARCHAR
);
"""

_UTC = pa.timestamp("us", tz="UTC")
# A command row: the ``commands`` columns, JSON as text, timestamps as epoch microseconds.
COMMAND_SCHEMA = pa.schema(
    [
        ("command_id", pa.string()),
        ("seq", pa.int64()),
        ("type", pa.string()),
        ("payload", pa.string()),
        ("status", pa.string()),
        ("attempts", pa.int32()),
        ("submitted_at", _UTC),
        ("available_at", _UTC),
        ("started_at", _UTC),
        ("finished_at", _UTC),
        ("deadline", _UTC),
        ("error", pa.string()),
        ("result", pa.string()),
        ("correlation_id", pa.string()),
        ("context", pa.string()),
    ]
)
HISTORY_SCHEMA = pa.schema(
    [
        ("command_id", pa.string()),
        ("seq", pa.int64()),
        ("status", pa.string()),
        ("attempt", pa.int32()),
        ("changed_at", _UTC),
        ("error", pa.string()),
    ]
)
# Column indexes of a command row.
_ID, _SEQ, _TYPE, _PAYLOAD, _STATUS, _ATTEMPTS = 0, 1, 2, 3, 4, 5
_AVAILABLE, _STARTED, _FINISHED, _DEADLINE, _RESULT, _CORRELATION, _CONTEXT = (
    7,
    8,
    9,
    10,
    12,
    13,
    14,
)

_SELECT_ROW = (
    "SELECT command_id, seq, type, CAST(payload AS VARCHAR), status, attempts, "
    "epoch_us(submitted_at), epoch_us(available_at), epoch_us(started_at), "
    "epoch_us(finished_at), epoch_us(deadline), error, CAST(result AS VARCHAR), "
    "correlation_id, CAST(context AS VARCHAR) FROM commands"
)

# The ranges of the columns a status change writes: a value outside them would be
# accepted into the journal and then fail every absorb and every reopening.
MAX_ATTEMPTS = 2**31 - 1  # INTEGER
_MIN_US = to_micros(datetime.min.replace(tzinfo=UTC))  # TIMESTAMPTZ, as far as datetime goes
_MAX_US = to_micros(datetime.max.replace(tzinfo=UTC))

_logs: weakref.WeakKeyDictionary[EventStore, CommandLog] = weakref.WeakKeyDictionary()


def command_log(store: EventStore, who: str = "the command log") -> CommandLog:
    """The store's command log, made (and its tables created) on first use.

    ``who`` names the caller in the error for something that is not a store.
    """
    from .store import EventStore  # the store module is loaded by then; no import cycle

    if not isinstance(store, EventStore):
        raise CommandError(
            f"{who} needs an el.EventStore, got {type(store).__name__}: {store!r:.60}; "
            f"e.g. el.{who}(el.EventStore('shop.duckdb'))"
        )
    log = _logs.get(store)
    if log is None:
        log = _logs[store] = CommandLog(store)
    return log


def check_command_id(command_id: Any) -> None:
    """Refuse a command id that is not a string (a clear error instead of a failed lookup)."""
    if type(command_id) is not str and not isinstance(command_id, str):
        raise CommandError(
            f"command_id must be a str, got {type(command_id).__name__}: {command_id!r:.60}"
        )


def read_only_error() -> ReadOnlyError:
    """The error for a command written to a store opened with ``read_only=True``."""
    return ReadOnlyError(
        "this store was opened with read_only=True, so its command store cannot record "
        "commands (add, set_status, execute, submit); its queries (get, between, "
        "by_status, history, df) work. Open the file without read_only to run commands "
        "(one writing process at a time)."
    )


def _checked_attempts(value: Any, name: str, low: int = 0) -> int:
    """``value`` as an int that fits the INTEGER column, or a CommandError naming ``name``."""
    if not isinstance(value, bool):
        try:
            number = operator.index(value)  # int, or an integer type such as numpy.int64
        except TypeError:
            pass
        else:
            if low <= number <= MAX_ATTEMPTS:
                return number
    raise CommandError(
        f"{name} must be an int from {low} to {MAX_ATTEMPTS}, got {type(value).__name__}: "
        f"{value!r:.60}; pass the number of runs so far, e.g. {name}=1"
    )


def _checked_micros(value: Any, name: str) -> int:
    """A timestamp (datetime, ISO string, or epoch microseconds) as epoch microseconds
    within the years 1 to 9999, or a CommandError naming ``name``."""
    if isinstance(value, datetime | str):
        try:
            micros = to_micros(value)
        except EventlabError as exc:
            raise CommandError(f"{name}: {exc}") from None
        except (OverflowError, ValueError) as exc:  # past year 9999 once in UTC
            raise CommandError(f"{name}: {value!r:.60} is out of range ({exc})") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        micros = value
    else:
        micros = None
    if micros is None or not _MIN_US <= micros <= _MAX_US:
        raise CommandError(
            f"{name} must be a datetime, an ISO 8601 string or epoch microseconds (an int) "
            f"in the years 1 to 9999, got {type(value).__name__}: {value!r:.60}; e.g. "
            f"{name}=clock.current + timedelta(seconds=10)"
        )
    return micros


def _error_text(error: Any) -> str | None:
    """``error`` as it is stored: None or text, a lone surrogate escaped (else CommandError).

    An error is often an exception's message, which may hold a lone surrogate (a file
    name decoded with ``surrogateescape``); UTF-8 cannot store one, so it is kept as
    its escape, ``\\udce9``.
    """
    if error is not None and not isinstance(error, str):
        raise CommandError(
            f"error must be a str (why) or None, got {type(error).__name__}: {error!r:.60}; "
            f"pass e.g. error=str(exc)"
        )
    return None if error is None else storable_text(error)


# Result texts already checked: the scheduler's are nearly all '{"events":N}', and a
# set lookup costs a small fraction of parsing the JSON again for every command.
_GOOD_RESULTS: set[str] = set()


def _check_result_text(result: Any) -> None:
    """Refuse a result that is not the JSON text of an object (it would fail the absorb)."""
    if result is None or (type(result) is str and result in _GOOD_RESULTS):
        return
    try:
        ok = isinstance(result, str) and type(json.loads(result)) is dict
    except ValueError:
        ok = False
    if not ok:
        raise CommandError(
            f"result must be the JSON text of an object or None, got "
            f"{type(result).__name__}: {result!r:.60}; e.g. result='{{\"events\": 1}}'"
        )
    if len(_GOOD_RESULTS) < 4096:  # bounded: a few distinct texts are the usual case
        _GOOD_RESULTS.add(result)


class CommandLog:
    """Command rows staged with a store's transactions, and the queue of runnable ones.

    Use it through :class:`~eventlab.CommandStore`, :class:`~eventlab.CommandExecutor`
    and :class:`~eventlab.CommandScheduler`.
    """

    tables = ("commands", "command_history")

    def __init__(self, store: EventStore):
        from .commands import Command  # commands builds on this module

        store._check_open()
        self.store = store
        self._command_class = Command
        # A read-only store is for queries: no tables created, no rows staged.
        self.read_only = store.read_only
        cursor = store._cursor()
        if self.read_only:
            if store._unrecovered_side & {"commands", "command_history"}:
                # Its events show (the store overlays them), but not these rows: the
                # command store would contradict them.
                raise ReadOnlyError(
                    f"{store.path} holds command rows that a writer which stopped without "
                    f"closing left in its journal, and a read-only store cannot recover "
                    f"them; open it once without read_only=True (which recovers them), "
                    f"then read it read-only"
                )
            found = cursor.execute("SELECT table_name FROM duckdb_tables()").fetchall()
            names = {row[0] for row in found}
            # Without them (a store that never ran a command) the queries answer empty.
            self.has_tables = {"commands", "command_history"} <= names
        else:
            cursor.execute(COMMANDS_DDL)
            self.has_tables = True
        unfinished: list[tuple] = []
        self._seq = self._history_seq = 0
        if self.has_tables:
            # Sequence numbers: FIFO order of commands, and order of status changes.
            self._seq, self._history_seq = cursor.execute(
                "SELECT (SELECT coalesce(max(seq), 0) FROM commands), "
                "(SELECT coalesce(max(seq), 0) FROM command_history)"
            ).fetchall()[0]
            terminal = ", ".join(f"'{s}'" for s in sorted(TERMINAL))
            unfinished = cursor.execute(
                f"{_SELECT_ROW} WHERE status NOT IN ({terminal}) ORDER BY seq"
            ).fetchall()
        self._live: dict[str, tuple] = {}  # every unfinished command's row
        self._commands: dict[str, Command] = {}  # decoded commands, for the queue
        self._ids: set[str] | None = None  # every command id, loaded on first add
        # The queue: (due, seq, stamp, id) until due, then (seq, stamp, id), so
        # due commands run in submission order. A command's stamp changes with
        # each status change; heap entries with an old stamp are ignored.
        self._waiting: list[tuple[int, int, int, str]] = []
        self._ready: list[tuple[int, int, str]] = []
        self._stamps: dict[str, int] = {}
        self._next_stamp = 0
        self._pending_rows: dict[str, tuple] = {}  # committed, not yet in DuckDB
        self._pending_history: list[tuple] = []
        for row in unfinished:
            self._track(row)
        if not self.read_only:
            store._register_side(self)

    # ------------------------------------------------------------------ staging changes

    def add(self, command: Command) -> bool:
        """Stage ``command`` as queued; False (and no change) if its id is known.

        Raises :class:`~eventlab.CommandError` when the known id holds another
        type or payload (see :meth:`check_same`).
        """
        if self.read_only:
            raise read_only_error()
        if not isinstance(command, self._command_class):
            raise CommandError(
                f"expected an el.Command, got {type(command).__name__}; wrap it, e.g. "
                f"el.Command('PlaceOrder', {{'order_id': 'o-1'}})"
            )
        command_id = command.command_id
        if self._known(command_id):
            self.check_same(command)
            return False
        now = peek_micros(self.store.clock)
        self._seq += 1
        row = (
            command_id,
            self._seq,
            command.type,
            to_json(command.payload, "command payload"),
            QUEUED,
            0,
            now,
            now,
            None,
            None,
            None if command.deadline is None else to_micros(command.deadline),
            None,
            None,
            command.correlation_id,
            to_json(command.context, "command context") if command.context else "{}",
        )
        self._commands[command_id] = command
        self._stage(row, 0, now, None)
        return True

    def set_status(
        self,
        command_id: str,
        status: str,
        *,
        error: str | None = None,
        result: Mapping[str, Any] | None = None,
        attempts: int | None = None,
        available_at: datetime | str | int | None = None,
    ) -> None:
        """Stage a status change (``running`` stamps ``started_at``, a terminal status
        ``finished_at``).

        Every argument is checked against its column before anything is staged:
        a bad one raises :class:`~eventlab.CommandError` and records nothing.
        ``available_at`` may also be epoch microseconds (an int).
        """
        if self.read_only:
            raise read_only_error()
        check_command_id(command_id)
        if status not in STATUSES:
            raise CommandError(f"unknown command status {status!r}; one of {list(STATUSES)}")
        error = _error_text(error)
        if result is not None and not isinstance(result, Mapping):
            raise CommandError(
                f"result must be a dict (a JSON object) or None, got {type(result).__name__}: "
                f"{result!r:.60}; e.g. result={{'events': 1}}"
            )
        if attempts is not None:
            attempts = _checked_attempts(attempts, "attempts")
        available = None if available_at is None else _checked_micros(available_at, "available_at")
        encoded = None if result is None else to_json(result, "command result")
        row = self.row(command_id)
        if row is None:
            raise CommandError(f"no command with id {command_id!r} in the command store")
        now = peek_micros(self.store.clock)
        attempts = row[_ATTEMPTS] if attempts is None else attempts
        if available is None:
            available = row[_AVAILABLE]
        started = now if status == RUNNING else row[_STARTED]
        new = _changed(row, status, attempts, available, started, now, error, encoded)
        self._stage(new, attempts, now, error)

    def record_run(
        self,
        command: Command,
        attempt: int,
        started: int,
        status: str,
        error: str | None,
        result: str | None,
    ) -> None:
        """Stage one run of a taken command: ``running`` from ``started`` (epoch µs),
        then ``status``, in history, and the command's row once.

        The scheduler's fast path: within its batch nobody reads the row between
        the two changes, and the batch commits both or neither. ``result`` is
        the JSON text of an object. Bad arguments raise
        :class:`~eventlab.CommandError` before anything is staged.
        """
        # One cheap test for the usual, valid call (this runs for every command).
        if (
            type(attempt) is not int
            or not 0 < attempt <= MAX_ATTEMPTS
            or type(started) is not int
            or not _MIN_US <= started <= _MAX_US
            or status not in _STATUS_SET
            or (error is not None and type(error) is not str)
        ):
            self._check_run(attempt, started, status, error)
        if error is not None and not error.isascii():
            error = _error_text(error)
        _check_result_text(result)
        command_id = command.command_id
        row = self.store._staged_side("commands", command_id) or self._live.get(command_id)
        if row is None:
            raise CommandError(
                f"record_run() is for a command taken from the queue; {command_id!r} is not "
                f"one (finished, or unknown): use set_status() instead"
            )
        now = peek_micros(self.store.clock)
        new = _changed(row, status, attempt, row[_AVAILABLE], started, now, error, result)
        self._history_seq += 2
        seq = self._history_seq
        stage = self.store._stage_side
        stage("command_history", (command_id, seq - 1, RUNNING, attempt, started, None))
        stage("commands", new)
        stage("command_history", (command_id, seq, status, attempt, now, error))

    @staticmethod
    def _check_run(attempt: Any, started: Any, status: Any, error: Any) -> None:
        """The detailed checks behind :meth:`record_run`'s fast test: raise for the bad one."""
        _checked_attempts(attempt, "attempt", low=1)
        _checked_micros(started, "started")
        if status not in STATUSES:
            raise CommandError(f"unknown command status {status!r}; one of {list(STATUSES)}")
        _error_text(error)

    def check_same(self, command: Command) -> None:
        """Refuse ``command`` if its id is stored with another type or payload.

        The command id is the idempotency key: resubmitting the same command
        is a no-op, but reusing an id for a different command is a client bug
        that would otherwise be dropped silently (as the event store refuses an
        event id stored with other content).
        """
        row = self.row(command.command_id)
        if row is None:
            return
        payload = to_json(command.payload, "command payload")
        if row[_TYPE] == command.type and (
            row[_PAYLOAD] == payload or canonical_json(row[_PAYLOAD]) == canonical_json(payload)
        ):
            return
        raise CommandError(
            f"command id {command.command_id!r} is already stored as a {row[_TYPE]} with "
            f"payload {row[_PAYLOAD]:.200}; this {command.type} has payload {payload:.200}. "
            f"A command id is the idempotency key: resubmit the same command unchanged (a "
            f"no-op), or give a different command a new id (leave command_id out for a UUID)"
        )

    def _stage(self, row: tuple, attempt: int, now: int, error: str | None) -> None:
        self._history_seq += 1
        history = (row[_ID], self._history_seq, row[_STATUS], attempt, now, error)
        store = self.store
        if store._tx is not None:  # two list appends cannot half-fail: no savepoint
            store._stage_side("commands", row)
            store._stage_side("command_history", history)
            return
        with store.transaction():
            store._stage_side("commands", row)
            store._stage_side("command_history", history)

    # ------------------------------------------------------------------ reading back

    def row(self, command_id: str) -> tuple | None:
        """The command's latest row, staged or committed; None for an unknown id."""
        row = self.store._staged_side("commands", command_id)
        if row is None:
            row = self._live.get(command_id) or self._pending_rows.get(command_id)
        if row is None:
            found = self.store._cursor().execute(
                f"{_SELECT_ROW} WHERE command_id = $1", [command_id]
            )
            rows = found.fetchall()
            row = rows[0] if rows else None
        return row

    def status(self, command_id: str) -> str | None:
        """The command's current status, None for an unknown id."""
        row = self.row(command_id)
        return None if row is None else row[_STATUS]

    def _known(self, command_id: str) -> bool:
        if command_id in self._live or command_id in self._pending_rows:
            return True
        if self.store._staged_side("commands", command_id) is not None:
            return True
        if self._ids is None:
            cursor = self.store._cursor()
            rows = cursor.execute("SELECT command_id FROM commands").fetchall()
            self._ids = {row[0] for row in rows}
        return command_id in self._ids

    def command(self, command_id: str) -> Command:
        """The unfinished command ``command_id``, decoded once."""
        command = self._commands.get(command_id)
        if command is None:
            command = self._commands[command_id] = decode_command(self._live[command_id])
        return command

    # ------------------------------------------------------------------ the queue

    def take_due(self, now: int, limit: int) -> list[tuple[Command, int, tuple]]:
        """Up to ``limit`` queued commands due at ``now`` (epoch µs), oldest first.

        Returns ``(command, attempts, ticket)``; hand the tickets to :meth:`give_back`
        if the batch that took them does not commit.
        """
        waiting, ready, stamps = self._waiting, self._ready, self._stamps
        while waiting and waiting[0][0] <= now:
            _, seq, stamp, command_id = heapq.heappop(waiting)
            if stamps.get(command_id) == stamp:
                heapq.heappush(ready, (seq, stamp, command_id))
        taken = []
        while ready and len(taken) < limit:
            ticket = heapq.heappop(ready)
            command_id = ticket[2]
            if stamps.get(command_id) != ticket[1]:
                continue
            del stamps[command_id]  # taken: not again until it is queued anew
            taken.append((self.command(command_id), self._live[command_id][_ATTEMPTS], ticket))
        return taken

    def give_back(self, tickets: list[tuple]) -> None:
        """Return taken commands to the queue (their batch rolled back)."""
        for ticket in tickets:
            seq, stamp, command_id = ticket
            if self._live.get(command_id, (None,) * 5)[_STATUS] == QUEUED:
                self._stamps[command_id] = stamp
                heapq.heappush(self._ready, ticket)

    def next_due(self) -> int | None:
        """When the next queued command is due (epoch µs); None when none is queued."""
        stamps = self._stamps
        ready = self._ready
        while ready and stamps.get(ready[0][2]) != ready[0][1]:
            heapq.heappop(ready)
        if ready:
            return self._live[ready[0][2]][_AVAILABLE]
        waiting = self._waiting
        while waiting and stamps.get(waiting[0][3]) != waiting[0][2]:
            heapq.heappop(waiting)
        return waiting[0][0] if waiting else None

    def running(self) -> list[tuple[str, int]]:
        """``(command_id, attempts)`` of the commands in ``running``, oldest first."""
        rows = [row for row in self._live.values() if row[_STATUS] == RUNNING]
        return [(row[_ID], row[_ATTEMPTS]) for row in sorted(rows, key=lambda r: r[_SEQ])]

    def started(self, command_id: str) -> int:
        """When the unfinished command ``command_id`` last started (epoch µs)."""
        return self._live[command_id][_STARTED]

    def queued(self) -> int:
        """How many commands wait in the queue, due or not."""
        return sum(1 for row in self._live.values() if row[_STATUS] == QUEUED)

    # ------------------------------------------------------------------ side table protocol

    def committed(self, rows: list[tuple[str, tuple]]) -> None:
        """Take rows that just became durable: the queue and the pending buffers follow."""
        pending_rows, history = self._pending_rows, self._pending_history
        for table, row in rows:
            if table == "commands":
                pending_rows[row[_ID]] = row
                if self._ids is not None:
                    self._ids.add(row[_ID])
                self._track(row)
            else:
                history.append(row)

    def _track(self, row: tuple) -> None:
        command_id, status = row[_ID], row[_STATUS]
        if status in TERMINAL:
            self._live.pop(command_id, None)
            self._commands.pop(command_id, None)
            self._stamps.pop(command_id, None)
            return
        self._live[command_id] = row
        if status != QUEUED:
            self._stamps.pop(command_id, None)
            return
        self._next_stamp += 1
        self._stamps[command_id] = self._next_stamp
        heapq.heappush(self._waiting, (row[_AVAILABLE], row[_SEQ], self._next_stamp, command_id))

    def has_pending(self) -> bool:
        return bool(self._pending_rows or self._pending_history)

    def take_pending(self) -> Callable[[duckdb.DuckDBPyConnection], None]:
        """Hand the committed rows over to the store's absorb (see eventlab.sidetables).

        A row handed over is found again by :meth:`row` and :meth:`_known`
        through DuckDB, whose cursor waits for the absorb to commit.
        """
        rows, history = list(self._pending_rows.values()), self._pending_history
        self._pending_rows = {}
        self._pending_history = []

        def write(con: duckdb.DuckDBPyConnection) -> None:
            if rows:
                upsert_commands(con, rows)
            if history:
                insert_history(con, history)

        return write


def _changed(
    row: tuple,
    status: str,
    attempts: int,
    available: int,
    started: int | None,
    now: int,
    error: str | None,
    result: str | None,
) -> tuple:
    """A command row moved to ``status`` at ``now`` (a terminal status stamps
    ``finished_at``, any other clears it: a requeued dead command is not finished;
    ``result`` is JSON text, None keeping the stored one)."""
    return (
        *row[:4],
        status,
        attempts,
        row[6],
        available,
        started,
        now if status in TERMINAL else None,
        row[_DEADLINE],
        error,
        row[_RESULT] if result is None else result,
        row[_CORRELATION],
        row[_CONTEXT],
    )


# ---------------------------------------------------------------------- writing to DuckDB


def upsert_commands(con: duckdb.DuckDBPyConnection, rows: list[tuple]) -> None:
    """Insert command rows, replacing the stored row of a known command id.

    Rows are in commit order; for an id given twice, the last row wins.
    """
    latest = list({row[_ID]: row for row in rows}.values())
    _insert(con, "INSERT OR REPLACE INTO commands", latest, COMMAND_SCHEMA)


def insert_history(con: duckdb.DuckDBPyConnection, rows: list[tuple]) -> None:
    """Append status-change rows."""
    _insert(con, "INSERT INTO command_history", rows, HISTORY_SCHEMA)


def _insert(con: duckdb.DuckDBPyConnection, into: str, rows: list[tuple], schema: pa.Schema):
    columns = [
        pa.array(column, type=pa.int64() if field.type == _UTC else field.type).cast(field.type)
        for column, field in zip(zip(*rows, strict=True), schema, strict=True)
    ]
    con.register("_side_rows", pa.Table.from_arrays(columns, schema=schema))
    try:
        con.execute(f"{into} SELECT * FROM _side_rows")
    finally:
        con.unregister("_side_rows")


def _apply_commands(con: duckdb.DuckDBPyConnection, rows: list[tuple]) -> None:
    con.execute(COMMANDS_DDL)
    upsert_commands(con, rows)


def _apply_history(con: duckdb.DuckDBPyConnection, rows: list[tuple]) -> None:
    # DuckDB may already hold some of them (a crash between its commit and the
    # journal being emptied): history sequence numbers tell which.
    con.execute(COMMANDS_DDL)
    stored = con.execute("SELECT coalesce(max(seq), 0) FROM command_history").fetchall()[0][0]
    fresh = [row for row in rows if row[1] > stored]
    if fresh:
        insert_history(con, fresh)


register_applier("commands", _apply_commands)
register_applier("command_history", _apply_history)


# ---------------------------------------------------------------------- decoding


def decode_command(row: tuple) -> Command:
    """The :class:`~eventlab.Command` a command row stores."""
    from .commands import Command  # commands builds on this module

    deadline = row[_DEADLINE]
    payload = from_json(row[_PAYLOAD])
    return Command(
        row[_TYPE],
        {} if payload is None else payload,  # a null stored before payloads were checked
        command_id=row[_ID],
        correlation_id=row[_CORRELATION],
        deadline=None if deadline is None else from_micros(deadline),
        context=from_json(row[_CONTEXT]) or None,
    )
