"""The command scheduler: a durable FIFO queue with deadlines, timeouts, retries and dead letters.

Commands wait in the command store's ``commands`` table (status ``queued``),
so the queue survives a restart: a new scheduler on the same store continues
where the last one stopped. Every timeout, deadline and backoff is read from
the store's clock, so with a :class:`~eventlab.SimulatedClock` an hour of
retries runs in a second.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .breaker import CircuitBreaker
from .clock import from_micros, peek_micros
from .commands import (
    DEAD,
    EXPIRED,
    FAILED,
    QUEUED,
    SUCCEEDED,
    TIMED_OUT,
    Command,
    CommandStore,
)
from .errors import CircuitOpenError, CommandError
from .events import to_json
from .executor import CommandExecutor, CommandOutcome
from .ratelimit import RateLimiter
from .replay import paused_gc
from .resilience import RetryPolicy

if TYPE_CHECKING:
    from .store import EventStore


class CommandScheduler:
    """Takes queued commands in FIFO order and runs them through an executor.

    Parameters
    ----------
    store : EventStore
        The store the executor writes to (and where the queue lives).
    executor : CommandExecutor
        Runs each command.
    timeout : timedelta or float
        A run longer than this (by the store's clock) is undone and counts as
        ``timed_out``; a command stuck in ``running`` this long is requeued by
        :meth:`scan`.
    max_attempts : int
        Attempts before a failing command is parked as ``dead``.
    backoff : RetryPolicy, optional
        Delays between attempts; defaults to exponential from 1 s, capped at 60 s.
    batch_size : int
        Commands run inside one transaction (group commit; see :meth:`run_batch`).
    recover : bool
        Resolve commands a stopped process left ``running`` (see :meth:`recover`).
    breakers : dict, optional
        ``{command type: el.CircuitBreaker}`` for flaky participants. While a
        type's breaker is open its commands wait in the queue until it
        half-opens (no attempt is used up); each run's outcome is recorded on
        the breaker (failed and timed-out runs count as failures).
    limits : dict, optional
        ``{command type: el.RateLimiter}``: a command of that type runs only
        with a token; otherwise it waits in the queue until one is due.

    A command may set its own ``max_attempts`` and ``timeout`` (seconds) in its
    context, e.g. ``context={"max_attempts": 1, "timeout": 5.0}``; they are
    stored with it, so they hold after a restart too. A saga submits each
    attempt of a step as its own command with ``max_attempts=1``: the saga's
    retry policy, not the scheduler's, decides whether to try again.

    Examples
    --------
    >>> import eventlab as el
    >>> store = el.EventStore(clock=el.SimulatedClock("2024-05-01"))
    >>> executor = el.CommandExecutor(store)
    >>> @executor.handler("Ping")
    ... def ping(command, ctx):
    ...     return {"pings": [el.Event("Pinged", {})]}
    >>> scheduler = el.CommandScheduler(store, executor)
    >>> _ = scheduler.submit(el.Command("Ping", command_id="p-1"))
    >>> scheduler.run()
    1
    >>> executor.commands.get("p-1")["status"]
    'succeeded'
    """

    def __init__(
        self,
        store: EventStore,
        executor: CommandExecutor,
        *,
        timeout: timedelta | float = timedelta(seconds=30),
        max_attempts: int = 3,
        backoff: RetryPolicy | None = None,
        batch_size: int = 1,
        recover: bool = True,
        breakers: Mapping[str, CircuitBreaker] | None = None,
        limits: Mapping[str, RateLimiter] | None = None,
    ):
        if not isinstance(executor, CommandExecutor):
            raise CommandError(f"executor must be an el.CommandExecutor, got {executor!r}")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise CommandError(f"max_attempts must be an int of 1 or more, got {max_attempts!r}")
        self.timeout = timeout if isinstance(timeout, timedelta) else timedelta(seconds=timeout)
        if self.timeout <= timedelta(0):
            raise CommandError(
                f"timeout must be positive, e.g. timedelta(seconds=30), got {timeout}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise CommandError(f"batch_size must be an int of 1 or more, got {batch_size!r}")
        self.batch_size = batch_size
        self.breakers = _guards("breakers", breakers, CircuitBreaker, "el.CircuitBreaker()")
        self.limits = _guards("limits", limits, RateLimiter, "el.RateLimiter(rate=5)")
        self._slots: dict[str, Any] = {}  # command type -> last slot given to a held command
        self.store = store
        self.executor = executor
        self.commands: CommandStore = executor.commands
        self.log = self.commands.log
        self.max_attempts = max_attempts
        self.backoff = backoff or RetryPolicy.exponential(
            1.0, max_delay=60.0, max_attempts=max_attempts
        )
        if recover:
            self.recover()

    # ------------------------------------------------------------------ the queue

    def submit(self, command: Command) -> str:
        """Queue a command and return its id; submitting the same id again changes nothing.

        Durable when it returns (or, inside ``store.transaction()``, when that commits).
        """
        if command.context:
            _overrides(command, self.timeout, self.max_attempts)  # reject bad ones now
        self.commands.add(command)
        return command.command_id

    def submit_many(self, commands: Iterable[Command]) -> list[str]:
        """Queue many commands in one commit (one journal sync); returns their ids."""
        # A bulk of new rows: the cyclic collector would keep re-walking them (see paused_gc).
        with paused_gc(), self.store.transaction():
            return [self.submit(command) for command in commands]

    def requeue(self, command_id: str) -> None:
        """Bring a ``dead`` (dead-lettered) command back to the queue with fresh attempts."""
        status = self.commands.get(command_id)["status"]
        if status != DEAD:
            raise CommandError(
                f"only dead commands are requeued by hand; {command_id!r} is {status}"
            )
        self.commands.set_status(command_id, QUEUED, attempts=0, available_at=self._now())

    def next_due(self) -> datetime | None:
        """When the next queued command is due (UTC); None when the queue is empty.

        A simulation can run what is due, then advance its clock to the earlier of
        this and its own next action.
        """
        due = self.log.next_due()
        return None if due is None else from_micros(due)

    def pending(self) -> int:
        """Commands waiting in the queue, ready or not yet due."""
        return self.log.queued()

    def _now(self) -> Any:
        return from_micros(peek_micros(self.store.clock))

    # ------------------------------------------------------------------ running

    def run_once(self) -> CommandOutcome | None:
        """Run the oldest due command; None when none is due."""
        outcomes = self._run_batch(1)
        return outcomes[0] if outcomes else None

    def run_batch(self) -> list[CommandOutcome]:
        """Run up to ``batch_size`` due commands in one transaction (group commit).

        Each command runs in a savepoint of that transaction, so one that fails
        or overruns takes nothing of the others down with it. Their statuses
        become final only after the transaction commits.
        """
        return self._run_batch(self.batch_size)

    def _run_batch(self, limit: int) -> list[CommandOutcome]:
        store, log = self.store, self.log
        taken = log.take_due(peek_micros(store.clock), limit)
        if not taken:
            return []
        expired: list[CommandOutcome] = []
        ran: list[CommandOutcome] = []
        try:
            # One commit for the whole batch: the events, every status change and
            # every retry scheduled are durable together (one journal sync). Each
            # command runs in its own savepoint, so a failing one takes nothing
            # of the others down.
            with paused_gc(), store.transaction():
                for command, attempts, _ in taken:
                    if command.deadline is not None and self._now() > command.deadline:
                        error = f"deadline {command.deadline.isoformat()} passed before it ran"
                        self.commands.set_status(command.command_id, EXPIRED, error=error)
                        expired.append(CommandOutcome(command.command_id, EXPIRED, attempts))
                        continue
                    if self.breakers or self.limits:
                        held = self._held(command, attempts)
                        if held is not None:
                            expired.append(held)
                            continue
                    attempt = attempts + 1
                    timeout, max_attempts = (
                        _overrides(command, self.timeout, self.max_attempts)
                        if command.context
                        else (self.timeout, self.max_attempts)
                    )
                    started = peek_micros(store.clock)
                    outcome = self.executor.run(command, attempt, timeout=timeout)
                    breaker = self.breakers.get(command.type)
                    if breaker is not None:
                        if outcome.status in (FAILED, TIMED_OUT):
                            breaker.record_failure()
                        else:
                            breaker.record_success()
                    log.record_run(
                        command,
                        attempt,
                        started,
                        outcome.status,
                        outcome.error,
                        None if outcome.result is None else to_json(outcome.result, "result"),
                    )
                    if outcome.status in (FAILED, TIMED_OUT):
                        self._retry_or_bury(
                            outcome.command_id, outcome.attempt, outcome.error, max_attempts
                        )
                    ran.append(outcome)
        except BaseException:
            log.give_back([ticket for _, _, ticket in taken])
            raise
        for outcome in ran:
            self.executor.notify(outcome)
        return expired + ran

    def _held(self, command: Command, attempts: int) -> CommandOutcome | None:
        """Keep the command queued while its breaker is open or its rate limit is spent.

        Returns the outcome (status ``queued``, the reason as error) when held.
        """
        breaker = self.breakers.get(command.type)
        if breaker is not None and breaker.state == "open":
            return self._hold(command, attempts, breaker.retry_at, f"circuit {breaker.name!r} open")
        limiter = self.limits.get(command.type)
        if limiter is not None and not limiter.try_acquire():
            # Each held command gets its own future slot, one token-time after the
            # last one handed out: waking them all at the first slot would hold all
            # but one of them again, over and over (quadratic in the burst).
            until = self._now() + limiter.wait_time()
            last = self._slots.get(command.type)
            if last is not None and last >= until:
                until = last + timedelta(seconds=1 / limiter.rate)
            self._slots[command.type] = until
            return self._hold(command, attempts, until, f"rate limit {limiter.name!r} reached")
        if breaker is not None:
            try:
                breaker.check()  # half-open: this run is one of its trial calls
            except CircuitOpenError:
                # Its trial calls are taken: try again once they are done.
                return self._hold(command, attempts, self._now(), f"circuit {breaker.name!r} busy")
        return None

    def _hold(self, command: Command, attempts: int, until: Any, reason: str) -> CommandOutcome:
        error = f"{reason}; waits until {until.isoformat()}"
        self.commands.set_status(command.command_id, QUEUED, error=error, available_at=until)
        return CommandOutcome(command.command_id, QUEUED, attempts, error=error)

    def _retry_or_bury(
        self, command_id: str, attempt: int, error: str | None, max_attempts: int | None = None
    ) -> None:
        """Requeue after the backoff, or dead-letter when out of attempts (keeping the error)."""
        if attempt >= (self.max_attempts if max_attempts is None else max_attempts):
            self.commands.set_status(command_id, DEAD, error=error)
            return
        due = self._now() + self.backoff.delay(attempt)
        self.commands.set_status(command_id, QUEUED, error=error, available_at=due)

    def run(self, until_idle: bool = True, *, max_commands: int | None = None) -> int:
        """Run due commands in FIFO order; returns how many were taken.

        With ``until_idle``, also waits for commands whose retry is not due yet:
        a :class:`~eventlab.SimulatedClock` is advanced to the next due time,
        so retries with backoff finish at once. Calls :meth:`scan` first.
        """
        self.scan()
        taken = 0
        while max_commands is None or taken < max_commands:
            size = (
                self.batch_size
                if max_commands is None
                else min(self.batch_size, max_commands - taken)
            )
            outcomes = self._run_batch(size)
            if outcomes:
                taken += len(outcomes)
                continue
            if not until_idle or not self._wait_for_next():
                break
        return taken

    def _wait_for_next(self) -> bool:
        """Advance a simulated clock to the next queued command's due time."""
        next_due = self.log.next_due()
        if next_due is None:
            return False
        due = from_micros(next_due)
        advance = getattr(self.store.clock, "advance", None)
        if advance is None:  # a system clock: the caller runs again later
            return False
        now = self._now()
        if due > now:
            advance(due - now)
        return True

    def scan(self) -> int:
        """Resolve commands stuck in ``running`` longer than the timeout (a worker died).

        One whose events are in the store (its attempt committed just before the
        crash) is marked ``succeeded``, so it never runs twice; the others are
        requeued (or dead-lettered, when out of attempts). Returns how many.
        """
        limit = peek_micros(self.store.clock) - self.timeout // timedelta(microseconds=1)
        stuck = self.log.running(started_before=limit)
        self._resolve(stuck, "still running after the timeout (a crash?)")
        return len(stuck)

    def recover(self) -> int:
        """Resolve every command left ``running`` by a process that stopped (see :meth:`scan`).

        Safe when this is the only scheduler working on the store: a DuckDB file
        has one writing process, so commands running when it opens are orphans.
        Called when the scheduler is created. Returns how many were resolved.
        """
        orphans = self.log.running()
        self._resolve(orphans, "the process running it stopped")
        return len(orphans)

    def _resolve(self, stuck: list[tuple[str, int]], reason: str) -> None:
        if not stuck:
            return
        with self.store.transaction():
            for command_id, attempts in stuck:
                stored = self._events_caused_by(command_id)
                if stored:
                    self.commands.set_status(command_id, SUCCEEDED, result={"events": stored})
                    continue
                self.commands.set_status(command_id, TIMED_OUT, error=reason)
                _, max_attempts = _overrides(
                    self.log.command(command_id), self.timeout, self.max_attempts
                )
                self._retry_or_bury(command_id, attempts, reason, max_attempts)

    def _events_caused_by(self, command_id: str) -> int:
        found = self.store.sql(
            "SELECT count(*) AS n FROM events WHERE causation_id = $1", [command_id]
        )
        return int(found["n"].iloc[0])


def _overrides(command: Command, timeout: timedelta, max_attempts: int) -> tuple[timedelta, int]:
    """The command's own ``timeout`` and ``max_attempts`` (from its context), else the
    scheduler's."""
    context = command.context or {}
    own_attempts = context.get("max_attempts", max_attempts)
    if isinstance(own_attempts, bool) or not isinstance(own_attempts, int) or own_attempts < 1:
        raise CommandError(
            f"command {command.command_id!r} sets max_attempts={own_attempts!r} in its context; "
            f"give an int of 1 or more, e.g. context={{'max_attempts': 1}}"
        )
    own_timeout = context.get("timeout")
    if own_timeout is None:
        return timeout, own_attempts
    if (
        isinstance(own_timeout, bool)
        or not isinstance(own_timeout, int | float)
        or not (own_timeout > 0)
    ):
        raise CommandError(
            f"command {command.command_id!r} sets timeout={own_timeout!r} in its context; "
            f"give a positive number of seconds, e.g. context={{'timeout': 5.0}}"
        )
    return timedelta(seconds=own_timeout), own_attempts


def _guards(name: str, given: Mapping[str, Any] | None, kind: type, example: str) -> dict:
    guards = dict(given or {})
    for command_type, guard in guards.items():
        if not isinstance(command_type, str) or not isinstance(guard, kind):
            raise CommandError(
                f"{name} maps command types to {kind.__name__}s, e.g. "
                f"{{'ChargePayment': {example}}}; got {command_type!r}: {guard!r}"
            )
    return guards
