"""The saga coordinator: transaction ids, step commands, retries and compensations.

How the pieces compose
----------------------
Each attempt of a step is its own command, with the id
``<transaction id>:<step>:<kind>:<attempt>`` (``kind`` is ``action`` or
``compensation``), the transaction id as correlation id, and
``max_attempts=1`` in its context: the scheduler runs it once, and the saga's
own :class:`~eventlab.RetryPolicy` decides, on the store's clock, whether and
when a next attempt (a new command) follows. So every attempt shows in the
saga's stream, and the scheduler's breakers and rate limits still guard every
participant.

Every decision commits atomically: the saga's events (``StepSucceeded`` and
the next ``StepRequested``, say) and the next command are one store
transaction (command rows travel with events, see :mod:`eventlab.sidetables`).
A command's outcome and the events it caused also commit together. After a
crash, a new coordinator folds each open saga's stream, finds the command it
was waiting for in the command store, and carries on: an answered command is
not run again (its id is taken), an unanswered one is still queued, and a due
retry is still due. No step runs twice and none is forgotten.
"""

from __future__ import annotations

import heapq
import itertools
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from json.encoder import encode_basestring as _quote
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..clock import from_micros, peek_micros
from ..command_log import DEAD, EXPIRED, FAILED, REJECTED, SUCCEEDED, TERMINAL, TIMED_OUT
from ..errors import SagaError
from ..events import Event, canonical_json, check_name, to_json
from ..replay import paused_gc
from ..scheduler import CommandScheduler
from .definition import ACTION, COMPENSATION, Saga, Step
from .state import (
    COMPENSATION_REQUESTED,
    ENDED,
    SAGA_ABORTED,
    SAGA_COMPLETED,
    SAGA_STARTED,
    SAGA_STUCK,
    STEP_COMPENSATED,
    STEP_FAILED,
    STEP_REQUESTED,
    STEP_RETRIED,
    STEP_SUCCEEDED,
    STEP_TIMED_OUT,
    STREAM_PREFIX,
    STUCK,
    SagaState,
    stream_of,
)
from .status import saga_status

if TYPE_CHECKING:
    from ..executor import CommandOutcome
    from ..store import EventStore

# An answer to a step's command: (command id, status, error).
Answer = tuple[str, str, "str | None"]

_OPEN_EVENTS_SQL = f"""
SELECT stream_id, type, CAST(data AS VARCHAR), epoch_us(occurred_at)
FROM events
WHERE starts_with(stream_id, '{STREAM_PREFIX}')
  AND stream_id NOT IN (
      SELECT stream_id FROM events
      WHERE type IN ('{SAGA_COMPLETED}', '{SAGA_ABORTED}')
        AND starts_with(stream_id, '{STREAM_PREFIX}'))
ORDER BY position
"""


class SagaCoordinator:
    """Runs sagas: sends each step to its participant, retries, compensates, resumes.

    Parameters
    ----------
    store : EventStore
        Where each saga's state lives, as the events of its stream
        ``saga-<transaction id>``.
    scheduler : CommandScheduler
        Runs the step commands (on the same store). Its executor has the
        participants' handlers; its breakers and rate limits apply.
    sagas : iterable of Saga, optional
        The sagas this coordinator runs (also registered by :meth:`start` and
        :meth:`register`). A new coordinator needs the definitions of the open
        sagas it resumes.

    Notes
    -----
    A new coordinator resumes every open saga in the store, so keep one
    coordinator per store (a second one would compete for the same sagas; the
    streams' expected versions would stop it with a ConcurrencyError).

    Examples
    --------
    >>> import eventlab as el
    >>> store = el.EventStore(clock=el.SimulatedClock("2024-05-01"))
    >>> executor = el.CommandExecutor(store)
    >>> @executor.handler("Reserve")
    ... def reserve(command, ctx):
    ...     return {f"stock-{command.payload['sku']}": [el.Event("Reserved", {})]}
    >>> @executor.handler("Charge")
    ... def charge(command, ctx):
    ...     raise el.CommandRejected("card declined")
    >>> @executor.handler("Release")
    ... def release(command, ctx):
    ...     return {f"stock-{command.payload['sku']}": [el.Event("Released", {})]}
    >>> saga = el.Saga("checkout", [el.Step("reserve", "Reserve", "Release"),
    ...                             el.Step("charge", "Charge")])
    >>> coordinator = el.SagaCoordinator(store, el.CommandScheduler(store, executor))
    >>> coordinator.start(saga, {"sku": "MUG"}, transaction_id="t-1")
    't-1'
    >>> coordinator.run()
    1
    >>> [e.type for e in store.read_stream("saga-t-1")]  # doctest: +NORMALIZE_WHITESPACE
    ['SagaStarted', 'StepRequested', 'StepSucceeded', 'StepRequested', 'StepFailed',
     'CompensationRequested', 'StepCompensated', 'SagaAborted']
    """

    def __init__(
        self, store: EventStore, scheduler: CommandScheduler, *, sagas: Iterable[Saga] = ()
    ):
        if not isinstance(scheduler, CommandScheduler):
            raise SagaError(
                f"scheduler must be an el.CommandScheduler, got {type(scheduler).__name__}; "
                f"e.g. el.CommandScheduler(store, executor)"
            )
        if scheduler.store is not store:
            raise SagaError(
                "the scheduler works on another store; a saga's events and its commands "
                "must commit together, so give the coordinator the scheduler's store"
            )
        if isinstance(sagas, Saga | str) or not isinstance(sagas, Iterable):
            raise SagaError(
                f"sagas must be a list of el.Saga, e.g. sagas=[saga], got "
                f"{type(sagas).__name__}: {sagas!r:.80}"
            )
        self.store = store
        self.scheduler = scheduler
        self._sagas: dict[str, Saga] = {}
        self._open: dict[str, SagaState] = {}  # every open saga, by transaction id
        self._unconfirmed: dict[str, SagaState] = {}  # started inside a caller's transaction
        self._outstanding: dict[str, str] = {}  # command id -> transaction id, awaiting answer
        self._deadlined: set[str] = set()  # outstanding commands that may expire unheard
        self._inbox: list[Answer] = []
        self._timers: list[tuple[int, int, str]] = []  # (due µs, seq, transaction id)
        self._seq = itertools.count()
        self._settled = 0  # sagas that completed, aborted or got stuck under this coordinator
        self._check_deadlines = False
        self._resume()
        for saga in sagas:  # after _resume: a definition must fit the open sagas of its name
            self.register(saga)
        scheduler.executor.subscribe(self._heard)

    # ------------------------------------------------------------------ definitions

    def register(self, saga: Saga) -> None:
        """Make ``saga`` runnable (and resumable) by this coordinator, by its name.

        Raises :class:`~eventlab.SagaError` (and registers nothing) when open
        sagas of that name run with other steps: their streams record the steps
        they were started with, and this definition could not carry them on.
        """
        if not isinstance(saga, Saga):
            raise SagaError(
                f"expected an el.Saga, got {type(saga).__name__}; e.g. "
                f"el.Saga('checkout', [el.Step('reserve', 'ReserveStock', 'ReleaseStock')])"
            )
        known = self._sagas.get(saga.name)
        # start() registers its saga every time: the same definition again costs a lookup.
        if known is not saga and (known is None or known.step_names != saga.step_names):
            self._check_fits_open(saga)
        self._sagas[saga.name] = saga

    def _check_fits_open(self, saga: Saga) -> None:
        """Refuse a definition whose steps differ from those of open sagas of its name."""
        steps = saga.step_names
        clash = [
            state
            for state in itertools.chain(self._open.values(), self._unconfirmed.values())
            if state.saga == saga.name and state.steps != steps
        ]
        if clash:
            first = clash[0]
            raise SagaError(
                f"saga {saga.name!r} is defined here with steps {steps}, but {len(clash)} open "
                f"saga(s) of that name (e.g. {first.transaction_id!r}) run with {first.steps}; "
                f"finish them first (coordinator.run() with the old definition registered; "
                f"coordinator.retry(transaction_id) or coordinator.abandon(transaction_id, "
                f"reason) for stuck ones), or give the new definition another name, e.g. "
                f"el.Saga({saga.name + '-v2'!r}, steps)"
            )

    @property
    def sagas(self) -> dict[str, Saga]:
        """The registered sagas, by name."""
        return dict(self._sagas)

    # ------------------------------------------------------------------ starting

    def start(
        self,
        saga: Saga,
        data: Mapping[str, Any] | None = None,
        *,
        transaction_id: str | None = None,
    ) -> str:
        """Start ``saga`` on ``data`` and return its transaction id.

        The ``SagaStarted`` event, the first ``StepRequested`` and the first
        step's command commit together (inside ``store.transaction()``, when
        that commits). Starting a transaction id that already has a saga
        with the same saga and data changes nothing and returns the id (an
        idempotent retry); with another saga or other data it raises
        :class:`~eventlab.SagaError` (a transaction id names one saga).

        Parameters
        ----------
        saga : Saga
            What to run; registered with the coordinator if it is not yet.
        data : dict, optional
            The saga's JSON data: the payload of step commands given by type,
            the argument of step functions.
        transaction_id : str, optional
            Defaults to a new random id.
        """
        self.register(saga)
        data = {} if data is None else data
        if not isinstance(data, Mapping):
            raise SagaError(
                f"saga data must be a dict (a JSON object), got {type(data).__name__}; e.g. "
                f"{{'order_id': 'o-1'}}"
            )
        # Names a key that is not JSON, before anything is written.
        encoded = to_json(data, "saga data")
        if transaction_id is None:
            transaction_id = uuid.uuid4().hex
        check_name("transaction_id", transaction_id)
        stream = stream_of(transaction_id)
        known = self._open.get(transaction_id)
        if known is None:
            known = self._unconfirmed.get(transaction_id)
            if known is not None and self.store.version(stream) == 0:
                # Started inside a caller's transaction that rolled back: nothing of it
                # was written, so this is a first start again.
                del self._unconfirmed[transaction_id]
                known = None
        if known is not None or self.store.version(stream) > 0:
            name, stored = (
                (known.saga, known.data) if known is not None else self._stored_start(stream)
            )
            if name != saga.name:
                raise SagaError(
                    f"transaction {transaction_id!r} already runs saga {name!r}, not "
                    f"{saga.name!r}; give this saga another transaction_id"
                )
            stored_text = to_json(stored, "saga data")
            if stored_text != encoded and canonical_json(stored_text) != canonical_json(encoded):
                raise SagaError(
                    f"transaction {transaction_id!r} already runs saga {name!r} with data "
                    f"{stored_text:.200}, not {encoded:.200}; starting it again with the same "
                    f"data is a no-op (a retry), but other data is another saga: give it "
                    f"another transaction_id, or leave transaction_id out for a random one"
                )
            return transaction_id
        state = SagaState(transaction_id)
        events: list[Event] = []
        self._emit(
            state,
            events,
            SAGA_STARTED,
            {"saga": saga.name, "steps": saga.step_names, "data": dict(data)},
        )
        outer = self.store._tx is not None
        with self.store.transaction():
            command = self._submit(state, saga.steps[0], ACTION, 1)
            if isinstance(command, Exception):
                raise SagaError(
                    f"saga {saga.name!r} could not build the command of its first step "
                    f"{saga.steps[0].name!r}: {command}"
                ) from command
            self._sent(state, events, command, STEP_REQUESTED, saga.steps[0].name, ACTION, 1)
            self._flush(state, events)
        if outer:  # known for sure only once the caller's transaction commits
            self._unconfirmed[transaction_id] = state
        else:
            self._track(state)
        return transaction_id

    def _stored_start(self, stream: str) -> tuple[str | None, dict[str, Any]]:
        """The saga name and data a stored saga was started with."""
        events = self.store.read_stream(stream, to_version=1)
        if not events:
            return None, {}
        return events[0].data.get("saga"), events[0].data.get("data") or {}

    # ------------------------------------------------------------------ running

    def run(self, until_idle: bool = True, *, max_commands: int | None = None) -> int:
        """Advance every open saga as far as it goes; returns how many sagas settled
        (completed, aborted or got stuck) during the call.

        Runs the scheduler's due commands, records each answer in its saga
        and sends the next command, starts retries that are due. With
        ``until_idle``, also waits for retries and backoffs that are not due
        yet (a :class:`~eventlab.SimulatedClock` is moved to them at once; a
        system clock is slept on), until nothing is left to do.

        Parameters
        ----------
        until_idle : bool
            Wait for what is not due yet (see above).
        max_commands : int, optional
            Stop after the scheduler has taken this many commands (to advance
            step by step, e.g. in a lesson).
        """
        if max_commands is not None and (
            isinstance(max_commands, bool) or not isinstance(max_commands, int) or max_commands < 0
        ):
            raise SagaError(
                f"max_commands must be None (no limit) or an int of 0 or more, got "
                f"{type(max_commands).__name__}: {max_commands!r:.80}; e.g. "
                f"coordinator.run(max_commands=10)"
            )
        if self.store._tx is not None:
            raise SagaError(
                "run() commits its own transactions; call it outside store.transaction()"
            )
        settled = self._settled
        self._confirm()
        self._check_definitions()
        self._reconcile()
        taken = 0
        while True:
            # One round: due retries, then every due command, then every answer. The
            # cyclic collector waits for the round to end: it found nothing to free
            # in a round's many young objects and took a sixth of the time.
            with paused_gc():
                progressed = self._fire_timers()
                if max_commands is None or taken < max_commands:
                    left = None if max_commands is None else max_commands - taken
                    ran = self.scheduler.run(until_idle=False, max_commands=left)
                    taken += ran
                    progressed = progressed or ran > 0
                if self._deadlined:
                    self._hear_expired()
                if self._inbox:
                    self._answer_all()
                    progressed = True
            if progressed:
                continue
            if max_commands is not None and taken >= max_commands:
                break
            if not until_idle or not self._wait():
                break
        return self._settled - settled

    def _heard(self, outcome: CommandOutcome) -> None:
        """The executor's notify stage: an answer, if it is to one of our commands."""
        if outcome.command_id in self._outstanding:
            self._inbox.append((outcome.command_id, outcome.status, outcome.error))

    def _hear_expired(self) -> None:
        """Look up commands with a deadline that expired: a backstop for expiries the
        notify stage did not bring (the scheduler announces them since it learnt to)."""
        log = self.scheduler.log
        for command_id in list(self._deadlined):
            if command_id not in self._outstanding:
                self._deadlined.discard(command_id)
            elif log.status(command_id) == EXPIRED:
                self._deadlined.discard(command_id)
                self._inbox.append((command_id, EXPIRED, "its deadline passed before it ran"))

    def _answer_all(self) -> None:
        inbox, self._inbox = self._inbox, []
        touched: dict[str, SagaState] = {}
        try:
            with self.store.transaction():
                for command_id, status, error in inbox:
                    transaction_id = self._outstanding.pop(command_id, None)
                    if transaction_id is None:
                        continue  # answered already (heard twice)
                    state = self._open[transaction_id]
                    events: list[Event] = []
                    self._answer(state, status, error, events)
                    self._flush(state, events, command_id)
                    touched[transaction_id] = state
        except BaseException:
            self._reload()
            raise
        for state in touched.values():
            self._track(state)

    def _answer(self, state: SagaState, status: str, error: str | None, events: list) -> None:
        """Record the answer to the current attempt and decide what follows."""
        saga = self._sagas[state.saga]
        step = saga.step(state.step)
        kind, attempt = state.kind, state.attempt
        answer = {"step": step.name, "kind": kind, "attempt": attempt}
        answer["command_id"] = state.command_id
        if status == SUCCEEDED:
            if kind == ACTION:
                self._emit(state, events, STEP_SUCCEEDED, answer)
                following = saga.after(step.name)
                if following is None:
                    self._emit(state, events, SAGA_COMPLETED, {"steps": len(state.done)})
                else:
                    self._request(state, saga, following, ACTION, 1, events)
            else:
                self._emit(state, events, STEP_COMPENSATED, answer)
                self._compensate_or_abort(state, saga, events)
            return
        if status == REJECTED:  # declined: asking again gives the same answer
            self._emit(state, events, STEP_FAILED, {**answer, "error": error, "declined": True})
            self._give_up(state, saga, error, events)
            return
        timed_out = status in (TIMED_OUT, EXPIRED)
        # Decide first: a failure that is not retried says why in its own event.
        policy = step.retry if kind == ACTION else step.compensation_retry
        retry_at = None
        if policy.should_retry(attempt):
            # Like the scheduler: a run over the timeout is always retried, a
            # failure only if the policy's retry_on lists its exception.
            if not timed_out and not policy.retries_error(error):
                listed = ", ".join(exc.__name__ for exc in policy.retry_on)
                error = f"{error} (not retried: the step's retry policy retries only {listed})"
            else:
                delay = policy.delay(attempt)
                retry_at = _retry_at(self.store.clock, delay)
                if retry_at is None:
                    error = (
                        f"{error} (not retried: its next attempt, {delay} from now, would fall "
                        f"after the year 9999, the latest time a clock can show; give the "
                        f"step's RetryPolicy a max_delay, e.g. "
                        f"el.RetryPolicy.exponential(1, max_delay=60))"
                    )
        self._emit(
            state,
            events,
            STEP_TIMED_OUT if timed_out else STEP_FAILED,
            {**answer, "error": error}
            if timed_out
            else {**answer, "error": error, "declined": False},
        )
        if retry_at is not None:
            self._schedule_retry(state, step, kind, attempt + 1, delay, retry_at, events)
        else:
            self._give_up(state, saga, error, events)

    def _give_up(self, state: SagaState, saga: Saga, error: str | None, events: list) -> None:
        """A step failed for good: compensate (after an action) or park as stuck."""
        if state.kind == ACTION:
            self._compensate_or_abort(state, saga, events)
        else:
            self._emit(
                state,
                events,
                SAGA_STUCK,
                {
                    "step": state.step,
                    "kind": COMPENSATION,
                    "attempt": state.attempt,
                    "error": error,
                },
            )

    def _compensate_or_abort(self, state: SagaState, saga: Saga, events: list) -> None:
        left = state.to_compensate(lambda name: saga.step(name).compensation is not None)
        if left:
            self._request(state, saga, saga.step(left[0]), COMPENSATION, 1, events)
            return
        self._emit(
            state,
            events,
            SAGA_ABORTED,
            {
                "failed_step": state.failed_step,
                "reason": state.error,
                "compensated": list(state.compensated),
            },
        )

    def _schedule_retry(
        self,
        state: SagaState,
        step: Step,
        kind: str,
        attempt: int,
        delay: timedelta,
        due: datetime,
        events: list,
    ) -> None:
        data = {
            "step": step.name,
            "kind": kind,
            "attempt": attempt,
            "delay_s": delay.total_seconds(),
            "due": due.isoformat(),
        }
        self._emit(state, events, STEP_RETRIED, data)

    def _request(
        self, state: SagaState, saga: Saga, step: Step, kind: str, attempt: int, events: list
    ) -> None:
        """Send attempt ``attempt`` of the step's action or compensation."""
        command = self._submit(state, step, kind, attempt)
        request = STEP_REQUESTED if kind == ACTION else COMPENSATION_REQUESTED
        if isinstance(command, Exception):
            # A step whose command cannot even be built is declined by our side:
            # there is nothing to retry.
            error = f"could not build the {kind} command: {type(command).__name__}: {command}"
            data = {"step": step.name, "kind": kind, "attempt": attempt, "command_id": None}
            self._emit(state, events, request, data)
            self._emit(state, events, STEP_FAILED, {**data, "error": error, "declined": True})
            self._give_up(state, saga, error, events)
            return
        self._sent(state, events, command, request, step.name, kind, attempt)

    def _submit(self, state: SagaState, step: Step, kind: str, attempt: int) -> Any:
        """Build and submit the attempt's command; returns it, or the exception that
        building or submitting it raised (then nothing was submitted)."""
        transaction_id = state.transaction_id
        context = {
            "saga": state.saga,
            "step": step.name,
            "kind": kind,
            "attempt": attempt,
            "max_attempts": 1,  # one run per command: the saga's policy retries
        }
        command_id = f"{transaction_id}:{step.name}:{kind}:{attempt}"
        try:
            command = step.command(kind, state.data, command_id, transaction_id, context)
            self.scheduler.submit(command)  # encodes the payload: raises if it is not JSON
        except Exception as exc:  # noqa: BLE001 - the user's function decides, we record
            return exc
        return command

    def _sent(
        self,
        state: SagaState,
        events: list,
        command: Any,
        request: str,
        step: str,
        kind: str,
        attempt: int,
    ) -> None:
        data = {"step": step, "kind": kind, "attempt": attempt, "command_id": command.command_id}
        self._emit(state, events, request, data)
        if command.deadline is not None:
            self._deadlined.add(command.command_id)

    def _emit(self, state: SagaState, events: list, event_type: str, data: dict[str, Any]) -> None:
        """Apply an event to the saga's state and queue it for :meth:`_flush`."""
        state.apply(event_type, data, peek_micros(self.store.clock))
        events.append(_event(event_type, data))

    def _flush(self, state: SagaState, events: list, cause: str | None = None) -> None:
        """Append the queued events, each with the transaction id as correlation id and,
        when they answer a command, that command's id as causation id."""
        if not events:
            return
        store = self.store
        outer = store._stamp
        store._stamp = _stamp(state.transaction_id, cause)
        try:
            # Always inside the coordinator's own transaction, with events it made
            # for a stream id it made: the checks of ``append`` were done already.
            store._append_in(
                store._tx,
                stream_of(state.transaction_id),
                events,
                state.version - len(events),
            )
        finally:
            store._stamp = outer

    # ------------------------------------------------------------------ time

    def _fire_timers(self) -> bool:
        """Send the attempts whose retry is due."""
        timers = self._timers
        if not timers:
            return False
        now = peek_micros(self.store.clock)
        due = []
        while timers and timers[0][0] <= now:
            at, _, transaction_id = heapq.heappop(timers)
            state = self._open.get(transaction_id)
            if state is not None and state.due == at and state.command_id is None:
                due.append(state)
        if not due:
            return False
        try:
            with self.store.transaction():
                for state in due:
                    saga = self._sagas[state.saga]
                    events: list[Event] = []
                    self._request(
                        state, saga, saga.step(state.step), state.kind, state.attempt, events
                    )
                    self._flush(state, events)
        except BaseException:
            self._reload()
            raise
        for state in due:
            self._track(state)
        return True

    def _next_due(self) -> int | None:
        timers = self._timers
        while timers:
            at, _, transaction_id = timers[0]
            state = self._open.get(transaction_id)
            if state is not None and state.due == at and state.command_id is None:
                break
            heapq.heappop(timers)  # stale: answered, retried by hand, or over
        candidates = [timers[0][0]] if timers else []
        queued = self.scheduler.log.next_due()
        if queued is not None:
            candidates.append(queued)
        return min(candidates) if candidates else None

    def _wait(self) -> bool:
        """Wait until the next retry or queued command is due; False when none is."""
        due = self._next_due()
        if due is None:
            return False
        clock = self.store.clock
        now = peek_micros(clock)
        if due > now:
            advance = getattr(clock, "advance", None)
            if advance is not None:
                advance(timedelta(microseconds=due - now))
            else:
                time.sleep((due - now) / 1e6)
        return True

    # ------------------------------------------------------------------ tracking

    def _track(self, state: SagaState) -> None:
        """Follow a saga whose latest events have committed."""
        transaction_id = state.transaction_id
        if state.state in ENDED or state.state == STUCK:
            self._settled += 1
        if state.state in ENDED:
            self._open.pop(transaction_id, None)
            return
        self._open[transaction_id] = state
        if state.command_id is not None:
            self._outstanding[state.command_id] = transaction_id
        elif state.due is not None:
            heapq.heappush(self._timers, (state.due, next(self._seq), transaction_id))

    def _confirm(self) -> None:
        """Follow the sagas started inside a caller's transaction, if it committed."""
        if not self._unconfirmed:
            return
        unconfirmed, self._unconfirmed = self._unconfirmed, {}
        for transaction_id, state in unconfirmed.items():
            version = self.store.version(stream_of(transaction_id))
            if version == state.version:
                self._track(state)
            elif version:  # moved on without us: read it back
                self._load([transaction_id])

    def _resume(self) -> None:
        """Load every open saga from its stream (a new coordinator, or after an error)."""
        rows = self.store._cursor().execute(_OPEN_EVENTS_SQL).fetchall()
        states: dict[str, SagaState] = {}
        for stream_id, event_type, data, occurred_at in rows:
            transaction_id = stream_id[len(STREAM_PREFIX) :]
            state = states.get(transaction_id)
            if state is None:
                state = states[transaction_id] = SagaState(transaction_id)
            state.apply(event_type, json.loads(data), occurred_at)
        for state in states.values():
            if state.saga is not None:  # a stream without SagaStarted is not ours
                self._track_resumed(state)
        self._check_deadlines = True  # see _reconcile

    def _track_resumed(self, state: SagaState) -> None:
        self._open[state.transaction_id] = state
        if state.command_id is not None:
            self._outstanding[state.command_id] = state.transaction_id
        elif state.due is not None:
            heapq.heappush(self._timers, (state.due, next(self._seq), state.transaction_id))

    def _load(self, transaction_ids: list[str]) -> None:
        for transaction_id in transaction_ids:
            events = self.store.read_stream(stream_of(transaction_id))
            state = SagaState.from_events(transaction_id, events)
            if state.open:
                self._track_resumed(state)

    def _reload(self) -> None:
        """Forget what is in memory and read the open sagas back (a transaction failed)."""
        self._open.clear()
        self._outstanding.clear()
        self._deadlined.clear()
        self._inbox.clear()
        self._timers.clear()
        self._resume()

    def _check_definitions(self) -> None:
        missing: dict[str, int] = {}
        for state in self._open.values():
            saga = self._sagas.get(state.saga)
            if saga is None:
                missing[state.saga] = missing.get(state.saga, 0) + 1
            elif saga.step_names != state.steps:
                raise SagaError(
                    f"saga {state.saga!r} now has steps {saga.step_names}, but open saga "
                    f"{state.transaction_id!r} was started with {state.steps}; finish the open "
                    f"sagas with the old definition (coordinator.abandon(transaction_id, "
                    f"reason) closes a stuck one), or give the new one another name"
                )
        if missing:
            raise SagaError(
                f"open sagas of {missing} (name: count) have no definition here; pass them as "
                f"el.SagaCoordinator(store, scheduler, sagas=[...]) or coordinator.register(saga)"
            )

    def _reconcile(self) -> None:
        """Hear the answers this coordinator missed (a crash, or another runner)."""
        log = self.scheduler.log
        live = log._live  # unfinished commands, in memory: still waiting, nothing to hear
        unheard = [cid for cid in self._outstanding if cid not in live]
        if self._check_deadlines:  # resumed: which waiting commands may expire unheard?
            self._check_deadlines = False
            self._deadlined.update(
                cid for cid in self._outstanding if cid in live and log.command(cid).deadline
            )
        if not unheard:
            return
        found = {
            row[0]: row[1:]
            for row in self.store._cursor()
            .execute(
                "SELECT command_id, status, error FROM commands "
                "WHERE list_contains($1, command_id)",
                [unheard],
            )
            .fetchall()
        }
        heard = {answer[0] for answer in self._inbox}
        missing = []
        for command_id in unheard:
            if command_id in heard:
                continue
            row = found.get(command_id)
            if row is None:
                missing.append(command_id)
                continue
            status, error = row
            if status in TERMINAL:
                self._inbox.append((command_id, _answer_status(status, error), error))
        if missing:  # never submitted (should not happen: they commit together): send now
            self._resend(missing)

    def _resend(self, command_ids: list[str]) -> None:
        with self.store.transaction():
            for command_id in command_ids:
                state = self._open[self._outstanding[command_id]]
                step = self._sagas[state.saga].step(state.step)
                self._submit(state, step, state.kind, state.attempt)

    # ------------------------------------------------------------------ operators

    def _stuck(self, transaction_id: str, action: str, done: str) -> Any:
        """The state of the stuck saga an operator's ``action`` is for, else SagaError."""
        if self.store._tx is not None:
            raise SagaError(
                f"{action}() commits its own transaction; call it outside store.transaction()"
            )
        self._confirm()
        state = self._open.get(transaction_id)
        if state is None or state.state != STUCK:
            now = "not open" if state is None else state.state
            raise SagaError(
                f"only a stuck saga is {done}; {transaction_id!r} is {now}. "
                f"coordinator.status(states='stuck') lists the stuck sagas"
            )
        return state

    def retry(self, transaction_id: str) -> None:
        """Try a stuck saga's compensation again (after an operator fixed its cause).

        Records a ``StepRetried`` due now; :meth:`run` sends the attempt. A
        compensation that can never succeed is closed with :meth:`abandon`.
        """
        state = self._stuck(transaction_id, "retry", "retried by hand")
        step = self._sagas[state.saga].step(state.step) if state.saga in self._sagas else None
        if step is None:
            raise SagaError(f"saga {state.saga!r} has no definition here; register it first")
        events: list[Event] = []
        try:
            with self.store.transaction():
                now = from_micros(peek_micros(self.store.clock))
                self._schedule_retry(
                    state, step, state.kind, state.attempt + 1, timedelta(0), now, events
                )
                self._flush(state, events)
        except BaseException:
            self._reload()
            raise
        self._track(state)

    def abandon(self, transaction_id: str, reason: str) -> None:
        """Close a stuck saga for good, leaving what it did not compensate as it is.

        For a compensation that can never succeed (declined every time: the
        reservation it would release is gone, the payment was refunded by
        hand), where :meth:`retry` would only park the saga again. Records a
        ``SagaAborted`` with ``abandoned: true``, the operator's ``reason``,
        the steps ``compensated`` and those left ``uncompensated`` (latest
        first). The saga is then ``aborted``: no longer open, not resumed by a
        new coordinator, and no longer in the way of a changed definition of
        its saga (see :meth:`register`). Setting right what it left undone is
        the operator's job.

        Parameters
        ----------
        transaction_id : str
            A saga in state ``stuck`` (``coordinator.status(states="stuck")``).
        reason : str
            Why, for the record, e.g. ``"refunded by hand at the bank"``.
        """
        if not isinstance(transaction_id, str) or not transaction_id:
            raise SagaError(
                f"transaction_id must be a non-empty string, e.g. coordinator.abandon('t-1', "
                f"'refunded by hand'), got {type(transaction_id).__name__}: {transaction_id!r:.80}"
            )
        if not isinstance(reason, str) or not reason.strip():
            raise SagaError(
                f"reason must be a non-empty string saying why the saga is abandoned, e.g. "
                f"'refunded by hand at the bank', got {reason!r:.80}"
            )
        state = self._stuck(transaction_id, "abandon", "abandoned")
        data = {
            "failed_step": state.failed_step,
            "reason": reason,
            "compensated": list(state.compensated),
            "abandoned": True,
            "uncompensated": [s for s in reversed(state.done) if s not in state.compensated],
        }
        events: list[Event] = []
        try:
            with self.store.transaction():
                self._emit(state, events, SAGA_ABORTED, data)
                self._flush(state, events)
        except BaseException:
            self._reload()
            raise
        self._track(state)

    # ------------------------------------------------------------------ reading

    def status(self, *, states: Iterable[str] | str | None = None) -> pd.DataFrame:
        """Every saga in the store with its state, current step and age (see
        :func:`~eventlab.saga.saga_status`); ``states`` keeps only those in these states."""
        self._confirm()
        return saga_status(self.store, states=states)

    @property
    def open_sagas(self) -> list[str]:
        """The transaction ids of the open sagas (running, compensating or stuck)."""
        self._confirm()
        return list(self._open)

    def state(self, transaction_id: str) -> SagaState:
        """One saga's state, folded from its stream."""
        if not isinstance(transaction_id, str) or not transaction_id:
            raise SagaError(
                f"transaction_id must be a non-empty string, e.g. coordinator.state('t-1'), "
                f"got {type(transaction_id).__name__}: {transaction_id!r:.80}"
            )
        events = self.store.read_stream(stream_of(transaction_id))
        if not events:
            raise SagaError(
                f"no saga with transaction id {transaction_id!r}; coordinator.status() lists them"
            )
        return SagaState.from_events(transaction_id, events)

    def __repr__(self) -> str:
        return (
            f"SagaCoordinator(sagas={sorted(self._sagas)}, open={len(self._open)}, "
            f"waiting_for={len(self._outstanding)} command(s), retries_due={len(self._timers)})"
        )


def _event(event_type: str, data: dict[str, Any]) -> Event:
    """An :class:`~eventlab.Event` made without its checks: the type is one of the saga's
    own and the data a fresh dict (the store encodes, and so checks, it on append)."""
    event = object.__new__(Event)
    put = object.__setattr__
    put(event, "type", event_type)
    put(event, "data", data)
    put(event, "metadata", None)
    put(event, "event_id", None)
    put(event, "occurred_at", None)
    return event


def _stamp(transaction_id: str, causation_id: str | None) -> tuple:
    """The store stamp (see ``EventStore._make_stamp``) for a saga's events, built
    directly: one is made for every decision."""
    metadata = {"correlation_id": transaction_id}
    encoded = f'{{"correlation_id":{_quote(transaction_id)}}}'
    if causation_id is not None:
        metadata["causation_id"] = causation_id
        encoded = (
            f'{{"correlation_id":{_quote(transaction_id)},"causation_id":{_quote(causation_id)}}}'
        )
    return metadata, encoded, transaction_id, causation_id


def _retry_at(clock: Any, delay: timedelta) -> datetime | None:
    """When a retry ``delay`` from now falls; None when after the latest time a clock
    can show (the year 9999: an uncapped exponential backoff after many attempts)."""
    try:
        return from_micros(peek_micros(clock) + delay // timedelta(microseconds=1))
    except OverflowError:
        return None


def _answer_status(status: str, error: str | None) -> str:
    """What a finished command's stored status means for its saga."""
    if status == DEAD:  # out of attempts: did the last one fail or take too long?
        return TIMED_OUT if error and "longer than the timeout" in error else FAILED
    return status
