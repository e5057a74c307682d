"""The command executor: receive, validate, execute, notify.

A handler ``fn(command, ctx)`` validates the command (raising
:class:`CommandRejected` to refuse it for good) and returns what to store: an
aggregate to save, a list of them, or ``{stream_id: [events]}``. The executor
appends it atomically, every event carrying ``causation_id = command_id`` and
the command's correlation id, records the outcome in the command store and
tells its subscribers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from json.encoder import encode_basestring as _quote
from typing import TYPE_CHECKING, Any

from .aggregate import Aggregate
from .clock import from_micros, peek_micros
from .command_log import MAX_ATTEMPTS, command_log, read_only_error
from .commands import (
    EXPIRED,
    FAILED,
    REJECTED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    TIMED_OUT,
    Command,
    CommandStore,
)
from .errors import CommandError, EventlabError
from .events import Event, storable_text
from .frozen import NEW_DICT, slot_setters

if TYPE_CHECKING:
    from .clock import SimulatedClock, SystemClock
    from .store import EventStore


class _Overran(Exception):
    """Raised inside the command's transaction to undo a run that took too long."""


class CommandRejected(EventlabError):
    """Raised by a handler when a command is invalid: it is rejected and never retried."""


@dataclass(frozen=True, slots=True)
class CommandContext:
    """What a handler gets besides the command: the clock, who asked, and system settings.

    ``transaction_id`` is the command's correlation id (the business
    transaction it belongs to); ``user`` comes from the command's context.
    """

    store: EventStore
    clock: SystemClock | SimulatedClock
    command_id: str
    transaction_id: str
    attempt: int
    user: Any = None
    context: Mapping[str, Any] = field(default_factory=dict)
    system: Mapping[str, Any] = field(default_factory=dict)

    # Made for every command run: a hand-written constructor (see eventlab.frozen).
    def __init__(
        self,
        store: EventStore,
        clock: SystemClock | SimulatedClock,
        command_id: str,
        transaction_id: str,
        attempt: int,
        user: Any = None,
        context: Mapping[str, Any] = NEW_DICT,
        system: Mapping[str, Any] = NEW_DICT,
    ) -> None:
        set_store, set_clock, set_id, set_tx, set_attempt, set_user, set_ctx, set_sys = _CONTEXT
        set_store(self, store)
        set_clock(self, clock)
        set_id(self, command_id)
        set_tx(self, transaction_id)
        set_attempt(self, attempt)
        set_user(self, user)
        set_ctx(self, {} if context is NEW_DICT else context)
        set_sys(self, {} if system is NEW_DICT else system)


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """How one execution ended: ``succeeded``, ``rejected`` or ``failed``, and why.

    (Executing a command that had already finished gives back its recorded
    outcome, so ``status`` may also be ``expired`` or ``dead``.)
    """

    command_id: str
    status: str
    attempt: int
    events: int = 0
    error: str | None = None
    result: Mapping[str, Any] | None = None

    # Made for every command run: a hand-written constructor (see eventlab.frozen).
    def __init__(
        self,
        command_id: str,
        status: str,
        attempt: int,
        events: int = 0,
        error: str | None = None,
        result: Mapping[str, Any] | None = None,
    ) -> None:
        set_id, set_status, set_attempt, set_events, set_error, set_result = _OUTCOME
        set_id(self, command_id)
        set_status(self, status)
        set_attempt(self, attempt)
        set_events(self, events)
        set_error(self, error)
        set_result(self, result)


_CONTEXT = slot_setters(
    CommandContext,
    "store",
    "clock",
    "command_id",
    "transaction_id",
    "attempt",
    "user",
    "context",
    "system",
)
_OUTCOME = slot_setters(
    CommandOutcome, "command_id", "status", "attempt", "events", "error", "result"
)
_MICROSECOND = timedelta(microseconds=1)
# Columns of a command row (see eventlab.command_log.COMMAND_SCHEMA).
_ID, _STATUS, _ATTEMPTS, _STARTED, _ERROR, _RESULT = 0, 4, 5, 8, 11, 12


Handler = Callable[[Command, CommandContext], Any]


class CommandExecutor:
    """Runs commands through their handlers and records what happened.

    Parameters
    ----------
    store : EventStore
        Where the events go (and the command store's tables).
    commands : CommandStore, optional
        Where statuses are recorded; made on the same store when omitted.
    system : dict, optional
        System parameters every handler sees as ``ctx.system``.

    Examples
    --------
    >>> import eventlab as el
    >>> store = el.EventStore(clock=el.SimulatedClock("2024-05-01"))
    >>> executor = el.CommandExecutor(store)
    >>> @executor.handler("PlaceOrder")
    ... def place_order(command, ctx):
    ...     if not command.payload.get("items"):
    ...         raise el.CommandRejected("an order needs at least one item")
    ...     return {f"order-{command.payload['order_id']}": [
    ...         el.Event("OrderPlaced", {"items": command.payload["items"]})]}
    >>> executor.execute(el.Command("PlaceOrder", {"order_id": 1, "items": ["pen"]})).status
    'succeeded'
    >>> executor.execute(el.Command("PlaceOrder", {"order_id": 2})).error
    'an order needs at least one item'
    """

    def __init__(
        self,
        store: EventStore,
        commands: CommandStore | None = None,
        *,
        system: Mapping[str, Any] | None = None,
    ):
        command_log(store, "CommandExecutor")  # a clear error for something else than a store
        if commands is None:
            commands = CommandStore(store)
        elif not isinstance(commands, CommandStore) or commands.store is not store:
            # Statuses in one store and events in another would not commit together.
            raise CommandError(
                f"commands must be an el.CommandStore on the same store as the executor, "
                f"got {commands!r:.80}; leave it out to use el.CommandStore(store)"
            )
        self.store = store
        self.commands = commands
        self.system = dict(system or {})
        self._handlers: dict[str, Handler] = {}
        self._subscribers: list[Callable[[CommandOutcome], Any]] = []

    # ------------------------------------------------------------------ registering

    def handler(self, command_type: str) -> Callable[[Handler], Handler]:
        """Register the decorated ``fn(command, ctx)`` as the handler of ``command_type``."""

        def register(fn: Handler) -> Handler:
            self.register(command_type, fn)
            return fn

        return register

    def register(self, command_type: str, fn: Handler) -> None:
        """Register ``fn(command, ctx)`` as the handler of ``command_type``."""
        if not isinstance(command_type, str) or not command_type:
            raise CommandError(f"a command type must be a non-empty string, got {command_type!r}")
        if not callable(fn):
            raise CommandError(f"the handler of {command_type!r} must be callable, got {fn!r}")
        if command_type in self._handlers:
            raise CommandError(f"{command_type!r} already has a handler; one type, one handler")
        self._handlers[command_type] = fn

    def subscribe(self, fn: Callable[[CommandOutcome], Any]) -> None:
        """Call ``fn(outcome)`` after every execution (the notify stage)."""
        self._subscribers.append(fn)

    @property
    def command_types(self) -> list[str]:
        """The command types with a handler."""
        return sorted(self._handlers)

    # ------------------------------------------------------------------ executing

    def execute(self, command: Command, *, attempt: int | None = None) -> CommandOutcome:
        """Run one command now: record it if new, execute it, record and announce the outcome.

        A :class:`CommandRejected` from the handler gives ``rejected``; any
        other exception gives ``failed``. Nothing the handler produced is
        stored unless it succeeds. The command, its statuses and its events
        commit together. A command whose ``deadline`` has passed (by the
        store's clock) is not run: it is recorded and announced as ``expired``.

        The command id is the idempotency key. A command that already finished
        (``succeeded``, ``rejected``, ``expired`` or ``dead``) is not run again:
        its recorded outcome is returned (subscribers heard it when it
        happened). A queued or failed one runs as its next attempt
        (``attempt`` defaults to the stored count plus one) when you call
        ``execute`` again; unlike the :class:`~eventlab.CommandScheduler`, which
        retries with a backoff, direct execution retries only when asked.

        Raises
        ------
        CommandError
            The id is stored with another type or payload; or the command is
            ``running`` right now (running it again could apply it twice).
        ReadOnlyError
            The store was opened with ``read_only=True``.
        """
        if attempt is not None and (
            type(attempt) is not int or not 1 <= attempt <= MAX_ATTEMPTS  # bool is not int
        ):
            raise CommandError(
                f"attempt must be an int of 1 or more, got {type(attempt).__name__}: "
                f"{attempt!r:.60}; leave it out to count on from the stored attempts"
            )
        commands, store = self.commands, self.store
        if store.read_only:  # before transaction(), whose error speaks of appends
            raise read_only_error()
        with store.transaction():
            # Receive: a new command is recorded; a known one (same type and
            # payload, else add raises) carries on from where it is.
            if not commands.add(command):
                row = commands.log.row(command.command_id)
                status = row[_STATUS]
                if status in TERMINAL:
                    return _recorded(row)  # nothing staged: the transaction is empty
                if status == RUNNING:
                    raise CommandError(
                        f"command {command.command_id!r} is running (attempt {row[_ATTEMPTS]}, "
                        f"started {from_micros(row[_STARTED]).isoformat()}): executing it "
                        f"again could apply it twice. Wait for its outcome (commands.get); if "
                        f"the process running it died, CommandScheduler.scan() or recover() "
                        f"resolves it"
                    )
                attempts = row[_ATTEMPTS]
            else:
                attempts = 0
            if attempt is None:
                attempt = attempts + 1
            outcome = self.expire_if_late(command, attempts)
            if outcome is None:
                commands.set_status(command.command_id, RUNNING, attempts=attempt)
                outcome = self.run(command, attempt)
                self.stage(outcome)
        self.notify(outcome)
        return outcome

    def expire_if_late(self, command: Command, attempts: int) -> CommandOutcome | None:
        """Record ``command`` as ``expired`` if its deadline has passed by the store's
        clock (a late command is discarded, not run) and return that outcome; None
        when it may run. ``attempts`` is how many runs it has had."""
        if command.deadline is None or from_micros(peek_micros(self.store.clock)) <= (
            command.deadline
        ):
            return None
        error = f"deadline {command.deadline.isoformat()} passed before it ran"
        self.commands.set_status(command.command_id, EXPIRED, error=error)
        return CommandOutcome(command.command_id, EXPIRED, attempts, error=error)

    def run(
        self, command: Command, attempt: int, *, timeout: timedelta | None = None
    ) -> CommandOutcome:
        """Validate and execute without recording the status (for group commit).

        The events are appended in a transaction (a savepoint inside the
        caller's, if any): all of them, or none if the handler fails. A
        success's ``events`` (and ``result``) count every event the run stored,
        returned or appended by the handler itself. With a
        ``timeout``, a run that takes longer by the store's clock is undone and
        comes back ``timed_out``. The time counted is the handler's (its waits
        and clock readings): a :class:`~eventlab.SimulatedClock` also steps
        once per appended event, and those steps are bookkeeping, not work.
        """
        fn = self._handlers.get(command.type)
        if fn is None:
            return CommandOutcome(
                command.command_id,
                REJECTED,
                attempt,
                error=f"no handler for command type {command.type!r}; register one with "
                f"@executor.handler({command.type!r}) (known: {self.command_types})",
            )
        store = self.store
        transaction_id = command.correlation_id or command.command_id
        context = command.context or {}
        ctx = CommandContext(  # positional: made for every run
            store,
            store.clock,
            command.command_id,
            transaction_id,
            attempt,
            context.get("user"),
            dict(context),
            self.system,
        )
        # Every event stored while the handler runs, returned or appended by the
        # handler itself, is stamped as caused by the command.
        outer_stamp = store._stamp
        store._stamp = _stamp(command.command_id, transaction_id)
        if timeout is not None:
            started = peek_micros(store.clock)
        head = store._head  # counts the events this run appends
        try:
            with store.transaction():
                produced = fn(command, ctx)
                self._store_produced(command, produced)
                # Every event the run stored, returned or appended by the handler
                # itself (both are caused by the command: scan() counts them alike).
                count = store._head - head
                # Integer microseconds: a timedelta built per run cost 3% of a command.
                if timeout is not None:
                    elapsed_us = peek_micros(store.clock) - started
                    limit_us = timeout // _MICROSECOND
                    if elapsed_us > limit_us:  # only then: the usual run pays nothing more
                        elapsed_us -= _stepped_us(store.clock, store._head - head)
                        if elapsed_us > limit_us:
                            raise _Overran(timedelta(microseconds=elapsed_us))
        except CommandRejected as exc:
            return CommandOutcome(
                command.command_id, REJECTED, attempt, error=storable_text(str(exc))
            )
        except _Overran as overran:
            return CommandOutcome(
                command.command_id,
                TIMED_OUT,
                attempt,
                error=f"ran {overran.args[0]}, longer than the timeout {timeout}; undone",
            )
        except Exception as exc:  # noqa: BLE001 - a failed attempt is an outcome, not a crash
            # (storable_text: the message may quote a badly decoded name; it is stored.)
            error = storable_text(f"{type(exc).__name__}: {exc}")
            return CommandOutcome(command.command_id, FAILED, attempt, error=error)
        finally:
            store._stamp = outer_stamp
        return CommandOutcome(
            command.command_id, SUCCEEDED, attempt, count, result={"events": count}
        )

    def record(self, outcome: CommandOutcome) -> None:
        """The notify stage: store the outcome's status and tell the subscribers."""
        self.stage(outcome)
        self.notify(outcome)

    def stage(self, outcome: CommandOutcome) -> None:
        """Record the outcome's status (in the open transaction, if any: group commit)."""
        self.commands.set_status(
            outcome.command_id,
            outcome.status,
            error=outcome.error,
            result=outcome.result,
            attempts=outcome.attempt,
        )

    def notify(self, outcome: CommandOutcome) -> None:
        """Tell the subscribers; call it once the outcome's status has committed."""
        for fn in self._subscribers:
            fn(outcome)

    def _store_produced(self, command: Command, produced: Any) -> int:
        if produced is None:
            return 0
        if isinstance(produced, Aggregate):
            return len(produced.save(self.store))
        # (Plain dict and list checks first: an ABC isinstance costs several times more.)
        if type(produced) is not list and (type(produced) is dict or isinstance(produced, Mapping)):
            count = 0
            for stream_id, events in produced.items():
                count += len(self.store.append(stream_id, _as_list(events)))
            return count
        if isinstance(produced, list) and all(isinstance(a, Aggregate) for a in produced):
            return sum(len(aggregate.save(self.store)) for aggregate in produced)
        raise CommandError(
            f"the handler of {command.type!r} returned {type(produced).__name__}; return an "
            f"aggregate to save, a list of aggregates, {{stream_id: [events]}}, or None"
        )


def _stepped_us(clock: Any, events: int) -> int:
    """How far appending ``events`` events moved the clock: one step each on a
    :class:`~eventlab.SimulatedClock`, nothing on the wall clock."""
    reserve = getattr(clock, "reserve_micros", None)
    if reserve is None or events <= 0:
        return 0
    return events * reserve(0)[1]  # reserving no reading moves nothing; gives the step


def _recorded(row: tuple) -> CommandOutcome:
    """The outcome a finished command's row records (columns: see command_log)."""
    result = None if row[_RESULT] is None else json.loads(row[_RESULT])
    events = result.get("events", 0) if isinstance(result, dict) else 0
    return CommandOutcome(
        row[_ID],
        row[_STATUS],
        row[_ATTEMPTS],
        events if type(events) is int else 0,
        row[_ERROR],
        result,
    )


def _as_list(events: Any) -> list:
    if type(events) is list:  # the usual case: the ABC check below costs more
        return events
    return [events] if isinstance(events, (Event, Mapping)) else list(events)


def _stamp(command_id: str, transaction_id: str) -> tuple:
    """The store stamp (see ``EventStore._make_stamp``) for a command's events, built
    directly: it is made for every command run."""
    metadata = {"causation_id": command_id, "correlation_id": transaction_id}
    encoded = f'{{"causation_id":{_quote(command_id)},"correlation_id":{_quote(transaction_id)}}}'
    return metadata, encoded, transaction_id, command_id
