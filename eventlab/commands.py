"""Commands and the command store: every command ever submitted, and its status history.

A :class:`Command` is a request to change the system (``PlaceOrder``), unlike
an event, which records that something changed. The :class:`CommandStore`
keeps each command in a ``commands`` table of the event store's database with
its current status, attempts, timestamps, error and result, and every status
change in ``command_history``, permanently, so the command side can be queried
and plotted like the event log.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from .checkpoints import dicts
from .clock import to_micros, to_utc
from .command_log import (
    COMMAND_SCHEMA,
    DEAD,
    EXPIRED,
    FAILED,
    QUEUED,
    REJECTED,
    RUNNING,
    STATUSES,
    SUCCEEDED,
    TERMINAL,
    TIMED_OUT,
    check_command_id,
    command_log,
)
from .errors import CommandError
from .events import check_name, to_json
from .frozen import NEW_DICT

if TYPE_CHECKING:
    from .store import EventStore

# The statuses live with the log; importing them from here reads naturally.
__all__ = [
    "Command",
    "CommandStore",
    "STATUSES",
    "TERMINAL",
    "QUEUED",
    "RUNNING",
    "SUCCEEDED",
    "REJECTED",
    "FAILED",
    "TIMED_OUT",
    "EXPIRED",
    "DEAD",
]

_COLUMNS = (
    "command_id, seq, type, CAST(payload AS VARCHAR) AS payload, status, attempts, "
    "submitted_at, available_at, started_at, finished_at, deadline, error, "
    "CAST(result AS VARCHAR) AS result, correlation_id, CAST(context AS VARCHAR) AS context"
)
_NAMES = [field.name for field in COMMAND_SCHEMA]  # the columns of df(), in order


@dataclass(frozen=True)
class Command:
    """A request to do something, e.g. ``Command("PlaceOrder", {"order_id": "o-1"})``.

    Parameters
    ----------
    type : str
        What to do, in the imperative: ``"PlaceOrder"``.
    payload : dict, optional
        Its JSON-serialisable arguments; ``{}`` (the default) for none. ``None``
        is refused: a payload is always a JSON object.
    command_id : str, optional
        A unique id, also the idempotency key: submitting the same id twice
        runs the command once. Defaults to a new UUID.
    correlation_id : str, optional
        Ties the command and the events it causes to one business transaction.
    deadline : datetime or str, optional
        After this time (UTC) the command is discarded as ``expired`` instead of run.
    context : dict, optional
        Who asked and why (user, channel, ...), handed to the handler.

    Examples
    --------
    >>> cmd = Command("PlaceOrder", {"order_id": "o-1"}, command_id="c-1")
    >>> cmd.type, cmd.command_id
    ('PlaceOrder', 'c-1')
    """

    type: str
    payload: dict[str, Any] = field(default_factory=dict)
    command_id: str = ""
    correlation_id: str | None = None
    deadline: datetime | None = None
    context: dict[str, Any] | None = None

    # Hand-written (see Event.__init__): the generated one of a frozen dataclass sets
    # each field through object.__setattr__, and reactions make a command per event.
    def __init__(
        self,
        type: str,
        payload: dict[str, Any] = NEW_DICT,
        command_id: str = "",
        correlation_id: str | None = None,
        deadline: datetime | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        check_name("command type", type)
        if payload is NEW_DICT:
            payload = {}
        elif payload is None:
            raise CommandError(
                f"command payload must be a dict (a JSON object), got NoneType for command "
                f"type {type!r}; pass {{}} (or leave it out) for a command without arguments"
            )
        for what, value in (("payload", payload), ("context", context)):
            if value is not None and value.__class__ is not dict and not isinstance(value, Mapping):
                raise CommandError(
                    f"command {what} must be a dict (a JSON object), got "
                    f"{value.__class__.__name__} for command type {type!r}"
                )
            if value or (value is not None and value.__class__ is not dict):
                # (An empty plain dict needs no check: it encodes as {}.)
                to_json(value, f"command {what}")  # names a key that is not JSON
        if not command_id:
            command_id = str(uuid.uuid4())
        else:
            check_name("command_id", command_id)
        if correlation_id is not None:
            check_name("correlation_id", correlation_id)
        if deadline is not None:
            deadline = to_utc(deadline)
        fields = self.__dict__  # frozen: its __setattr__ refuses, its __dict__ does not
        fields["type"] = type
        fields["payload"] = payload
        fields["command_id"] = command_id
        fields["correlation_id"] = correlation_id
        fields["deadline"] = deadline
        fields["context"] = context


class CommandStore:
    """Every command submitted to a store, its current status and its status history.

    Parameters
    ----------
    store : EventStore
        The ``commands`` and ``command_history`` tables live in its database,
        next to the events the commands cause. On a store opened with
        ``read_only=True`` the queries work and :meth:`add` and
        :meth:`set_status` raise :class:`~eventlab.ReadOnlyError`.

    Examples
    --------
    >>> import eventlab as el
    >>> commands = el.CommandStore(el.EventStore(clock=el.SimulatedClock("2024-05-01")))
    >>> commands.add(el.Command("PlaceOrder", {"order_id": "o-1"}, command_id="c-1"))
    True
    >>> commands.get("c-1")["status"]
    'queued'
    """

    def __init__(self, store: EventStore):
        self.log = command_log(store, "CommandStore")  # shared by every command store on it
        self.store = store

    # ------------------------------------------------------------------ writing

    def add(self, command: Command) -> bool:
        """Record a new command as ``queued``; False (and no change) if its id is known.

        The command id is the idempotency key: adding the same command again is
        a no-op, but adding another type or payload under a known id raises
        :class:`~eventlab.CommandError` (a client bug: give it a new id).
        """
        if not isinstance(command, Command):
            raise CommandError(
                f"expected an el.Command, got {type(command).__name__}; wrap it, e.g. "
                f"el.Command('PlaceOrder', {{'order_id': 'o-1'}})"
            )
        return self.log.add(command)

    def set_status(
        self,
        command_id: str,
        status: str,
        *,
        error: str | None = None,
        result: Mapping[str, Any] | None = None,
        attempts: int | None = None,
        available_at: datetime | str | None = None,
    ) -> None:
        """Move a command to ``status`` and add the change to its history.

        ``running`` stamps ``started_at``; a terminal status stamps ``finished_at``
        and any other clears it (a requeued command is not finished).
        Inside ``store.transaction()`` the change commits (or rolls back) with it.

        Parameters
        ----------
        command_id : str
            A command of this store.
        status : str
            One of :data:`STATUSES`.
        error : str, optional
            Why it failed (kept in the row and the history).
        result : dict, optional
            A JSON object; None keeps the stored one.
        attempts : int, optional
            Runs so far, 0 to 2**31 - 1; None keeps the stored count.
        available_at : datetime or str, optional
            When it may run next (a queued command); None keeps the stored time.

        Raises
        ------
        CommandError
            An unknown command or status, or an argument of the wrong type or
            range (nothing is recorded).
        ReadOnlyError
            The store was opened with ``read_only=True``.
        """
        self.log.set_status(
            command_id,
            status,
            error=error,
            result=result,
            attempts=attempts,
            available_at=available_at,
        )

    # ------------------------------------------------------------------ reading

    def get(self, command_id: str) -> dict[str, Any]:
        """One command as a dict (payload, result and context decoded)."""
        check_command_id(command_id)
        if not self.log.has_tables:
            rows = []
        else:
            rows = dicts(
                self.store._cursor().execute(
                    f"SELECT {_COLUMNS} FROM commands WHERE command_id = $1", [command_id]
                )
            )
        if not rows:
            raise CommandError(
                f"no command with id {command_id!r} in the command store; list them with "
                f"commands.df()"
            )
        return _decoded(rows[0])

    def df(
        self, where: str = "", params: list[Any] | None = None, *, limit: int | None = None
    ) -> pd.DataFrame:
        """Every command (or those matching a SQL condition, the first ``limit``), in
        submission order."""
        if limit is not None and (type(limit) is not int or limit < 0):  # bool is not int
            raise CommandError(
                f"limit must be an int of 0 or more, or None for every command, got "
                f"{type(limit).__name__}: {limit!r:.60}"
            )
        if not self.log.has_tables:  # a read-only store that never held a command
            return pd.DataFrame(columns=_NAMES)
        sql = f"SELECT {_COLUMNS} FROM commands {where} ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {limit}"
        frame = self.store._cursor().execute(sql, params or []).df()
        for column in ("payload", "result", "context"):
            frame[column] = frame[column].map(_loads)
        return frame

    def between(self, start: datetime | str, end: datetime | str) -> pd.DataFrame:
        """The commands submitted from ``start`` (inclusive) to ``end`` (exclusive)."""
        return self.df(
            "WHERE submitted_at >= make_timestamptz($1) AND submitted_at < make_timestamptz($2)",
            [to_micros(start), to_micros(end)],
        )

    def by_status(self, *statuses: str) -> pd.DataFrame:
        """The commands whose current status is one of ``statuses``."""
        unknown = [s for s in statuses if s not in STATUSES]
        if unknown or not statuses:
            raise CommandError(
                f"by_status() takes one or more of {list(STATUSES)}, got {list(statuses)}"
            )
        return self.df("WHERE list_contains($1, status)", [list(statuses)])

    def history(self, command_id: str) -> pd.DataFrame:
        """Every status the command went through, oldest first (kept permanently)."""
        self.get(command_id)  # a clear error for an unknown id
        return (
            self.store._cursor()
            .execute(
                "SELECT status, attempt, changed_at AS at, error FROM command_history "
                "WHERE command_id = $1 "
                "ORDER BY seq",
                [command_id],
            )
            .df()
        )

    def counts(self) -> dict[str, int]:
        """How many commands are in each status."""
        if not self.log.has_tables:
            return {}
        rows = self.store._cursor().execute(
            "SELECT status, count(*) FROM commands GROUP BY status ORDER BY status"
        )
        return dict(rows.fetchall())

    def __repr__(self) -> str:
        return f"CommandStore({self.counts()})"


def _loads(text: str | float | None) -> Any:
    # A NULL reaches a DataFrame column as NaN (or None when the whole column is NULL).
    return None if text is None or (isinstance(text, float) and text != text) else json.loads(text)


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    for column in ("payload", "result", "context"):
        row[column] = _loads(row[column])
    return row
