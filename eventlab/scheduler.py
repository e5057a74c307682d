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
    FAILED,
    QUEUED,
    SUCCEEDED,
    TIMED_OUT,
    Command,
    CommandStore,
)
from .errors import CircuitOpenError, CommandError, EventlabError
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
    max_attempts : int, optional
        Attempts before a failing command is parked as ``dead``. Defaults to
        the ``backoff`` policy's ``max_attempts``, or 3 without a policy.
    backoff : RetryPolicy, optional
        Delays between attempts; defaults to exponential from 1 s, capped at 60 s.
        Its ``retry_on`` is honoured: a failure whose exception is not listed
        there is not retried but parked as ``dead`` at once (a run over the
        timeout is always retried). A retry that would fall after the latest
        time a clock can show (an uncapped exponential backoff after many
        attempts) is not scheduled either: the command is parked as ``dead``,
        its error saying to give the policy a ``max_delay``.
    batch_size : int
        Commands run inside one transaction (group commit; see :meth:`run_batch`).
    recover : bool
        Resolve commands a stopped process left ``running`` (see :meth:`recover`).
    breakers : dict, optional
        ``{command type: el.CircuitBreaker}`` for flaky participants. While a
        type's breaker is open its commands wait in the queue until it
        half-opens (no attempt is used up); each run's outcome is recorded on
        the breaker (failed and timed-out runs count as failures). While its
        trial calls are all taken by someone else, a command waits one
        ``timeout`` (by then a trial run has ended).
    limits : dict, optional
        ``{command type: el.RateLimiter}``: a command of that type runs only
        with a token; otherwise it waits in the queue until one is due. The
        limiter's capacity must hold one token.

    The executor's subscribers hear every outcome once its batch commits:
    each run (``succeeded``, ``rejected``, ``failed``, ``timed_out``), each
    ``expired`` command, and ``dead`` after the failed or timed-out run that
    used up a command's attempts. A command the scheduler itself cannot handle
    (e.g. its retry cannot be scheduled) is parked as ``dead`` with the reason,
    undoing only its own run: the rest of its batch goes on.

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
        max_attempts: int | None = None,
        backoff: RetryPolicy | None = None,
        batch_size: int = 1,
        recover: bool = True,
        breakers: Mapping[str, CircuitBreaker] | None = None,
        limits: Mapping[str, RateLimiter] | None = None,
    ):
        if not isinstance(executor, CommandExecutor):
            raise CommandError(f"executor must be an el.CommandExecutor, got {executor!r}")
        if backoff is not None and not isinstance(backoff, RetryPolicy):
            raise CommandError(
                f"backoff must be an el.RetryPolicy, got {type(backoff).__name__}: "
                f"{backoff!r:.80}; e.g. backoff=el.RetryPolicy.fixed(5) for 5 s between "
                f"attempts, or el.RetryPolicy.exponential(1, max_delay=60)"
            )
        if max_attempts is None:
            # The policy's own count when the scheduler is not told otherwise: a
            # policy built with max_attempts=5 should give five attempts.
            max_attempts = backoff.max_attempts if backoff is not None else 3
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise CommandError(f"max_attempts must be an int of 1 or more, got {max_attempts!r}")
        self.timeout = _timeout(timeout)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise CommandError(f"batch_size must be an int of 1 or more, got {batch_size!r}")
        self.batch_size = batch_size
        self.breakers = _guards("breakers", breakers, CircuitBreaker, "el.CircuitBreaker()")
        self.limits = _guards("limits", limits, RateLimiter, "el.RateLimiter(rate=5)")
        for command_type, limiter in self.limits.items():
            if limiter.capacity < 1:
                # Each command takes one token: a smaller bucket could never grant it.
                raise CommandError(
                    f"limits[{command_type!r}] holds {limiter.capacity} token(s), but each "
                    f"command takes one, so none would ever run; give the limiter a "
                    f"capacity of at least 1, e.g. el.RateLimiter(rate={limiter.rate}, "
                    f"capacity=1) for one command every {1 / limiter.rate:g} s"
                )
        self._slots: dict[str, Any] = {}  # command type -> last slot given to a held command
        # Commands last held because someone else holds their breaker's trial calls.
        self._busy_ids: dict[str, CircuitBreaker] = {}
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
        if not isinstance(command, Command):
            raise CommandError(
                f"submit() takes an el.Command, got {type(command).__name__}: {command!r:.80}; "
                f"wrap it, e.g. scheduler.submit(el.Command('PlaceOrder', {{'order_id': 'o-1'}}))"
            )
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
        """Bring a ``dead`` (dead-lettered) command back to the queue with fresh attempts.

        A saga's step command is refused: each attempt of a step is its own
        command, and its saga (not the dead-letter queue) decides whether the
        step runs again. Run behind its back, a step could run after the saga
        compensated or aborted. Ask the saga's coordinator instead
        (``coordinator.retry(transaction_id)`` for a stuck saga).
        """
        row = self.commands.get(command_id)
        status = row["status"]
        if status != DEAD:
            raise CommandError(
                f"only dead commands are requeued by hand; {command_id!r} is {status}"
            )
        context = row["context"] or {}
        saga, step, kind, attempt = (context.get(k) for k in ("saga", "step", "kind", "attempt"))
        # A saga's commands are named <transaction id>:<step>:<kind>:<attempt> and say
        # so in their context (see SagaCoordinator._submit): both must hold.
        transaction_id = row["correlation_id"]
        if saga is not None and command_id == f"{transaction_id}:{step}:{kind}:{attempt}":
            raise CommandError(
                f"command {command_id!r} is attempt {attempt} of step {step!r} of saga "
                f"{saga!r} (transaction {transaction_id!r}); its saga decides whether the "
                f"step runs again, and requeued here it could run after the saga compensated "
                f"or aborted. See where the saga stands with coordinator.status(); a stuck "
                f"one is tried again with coordinator.retry({transaction_id!r})"
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
        outcomes: list[CommandOutcome] = []  # for the caller: one per command taken
        heard: list[CommandOutcome] = []  # for the subscribers, once the batch commits
        guarded = bool(self.breakers or self.limits)
        try:
            # One commit for the whole batch: the events, every status change and
            # every retry scheduled are durable together (one journal sync). Each
            # command's run is a savepoint (see CommandExecutor.run), so a failing
            # one takes nothing of the others down.
            with paused_gc(), store.transaction():
                busy_ids = self._busy_ids
                for command, attempts, _ in taken:
                    if busy_ids:
                        busy_ids.pop(command.command_id, None)  # (_held adds it back if so)
                    # Where this command's rows begin: if the scheduler's own
                    # bookkeeping fails for it, only they are undone (a nested
                    # store.transaction() would do the same, at a microsecond a command).
                    mark = store._savepoint()
                    trial = None  # a breaker whose admitted call awaits this run's outcome
                    try:
                        if command.deadline is not None:  # (no call for the usual command)
                            late = self.executor.expire_if_late(command, attempts)
                            if late is not None:
                                outcomes.append(late)
                                heard.append(late)
                                continue
                        if guarded:
                            held = self._held(command, attempts)
                            if held is not None:
                                outcomes.append(held)
                                continue
                            trial = self.breakers.get(command.type)
                        attempt = attempts + 1
                        timeout, max_attempts = (
                            _overrides(command, self.timeout, self.max_attempts)
                            if command.context
                            else (self.timeout, self.max_attempts)
                        )
                        started = peek_micros(store.clock)
                        outcome = self.executor.run(command, attempt, timeout=timeout)
                        failed = outcome.status in (FAILED, TIMED_OUT)
                        if trial is not None:
                            if failed:
                                trial.record_failure()
                            else:
                                trial.record_success()
                            trial = None
                        log.record_run(
                            command,
                            attempt,
                            started,
                            outcome.status,
                            outcome.error,
                            None if outcome.result is None else to_json(outcome.result, "result"),
                        )
                        buried = (
                            self._retry_or_bury(
                                outcome.command_id,
                                attempt,
                                outcome.error,
                                max_attempts,
                                outcome.status,
                            )
                            if failed
                            else None
                        )
                    except Exception as error:  # noqa: BLE001 - one command's trouble, not the batch's
                        store._rollback_to(mark)
                        if trial is not None:
                            trial.release()
                        outcome = self._bury_unhandled(command, attempts, error)
                        outcomes.append(outcome)
                        heard.append(outcome)
                        continue
                    except BaseException:
                        # Interrupted (Ctrl-C, SystemExit, cancelled): the whole batch
                        # is undone below; a breaker's trial call must not stay taken.
                        if trial is not None:
                            trial.release()
                        raise
                    outcomes.append(outcome)
                    heard.append(outcome)
                    if buried is not None:
                        heard.append(buried)
        except BaseException:
            log.give_back([ticket for _, _, ticket in taken])
            raise
        notify = self.executor.notify
        for outcome in heard:
            notify(outcome)
        return outcomes

    def _bury_unhandled(self, command: Command, attempts: int, error: Exception) -> CommandOutcome:
        """Park a command the scheduler could not handle as ``dead``, saying why.

        Its own run (if any) was undone; left queued it would fail the same way
        in every batch and keep the commands behind it waiting.
        """
        reason = (
            f"the scheduler could not handle this command ({type(error).__name__}: {error}); "
            f"its run, if any, was undone. Fix the cause, then requeue it with "
            f"scheduler.requeue({command.command_id!r})"
        )
        self.commands.set_status(command.command_id, DEAD, error=reason)
        return CommandOutcome(command.command_id, DEAD, attempts, error=reason)

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
                # Someone else holds its trial calls (this scheduler records each
                # run's outcome at once). A trial run ends within a timeout; trying
                # again sooner (at now) would take the command back at once, forever.
                self._busy_ids[command.command_id] = breaker
                until = self._now() + self.timeout
                return self._hold(command, attempts, until, f"circuit {breaker.name!r} busy")
        return None

    def _hold(self, command: Command, attempts: int, until: Any, reason: str) -> CommandOutcome:
        error = f"{reason}; waits until {until.isoformat()}"
        self.commands.set_status(command.command_id, QUEUED, error=error, available_at=until)
        return CommandOutcome(command.command_id, QUEUED, attempts, error=error)

    def _retry_or_bury(
        self,
        command_id: str,
        attempt: int,
        error: str | None,
        max_attempts: int | None = None,
        status: str = FAILED,
    ) -> CommandOutcome | None:
        """Requeue after the backoff, or dead-letter (keeping the error); returns the
        ``dead`` outcome when it buried the command.

        Buried: out of attempts, a failure the backoff's ``retry_on`` does not
        list, or a retry that would fall after the latest time a clock can show.
        """
        reason = None
        if attempt >= (self.max_attempts if max_attempts is None else max_attempts):
            reason = error
        elif status == FAILED and not self.backoff.retries_error(error):
            reason = (
                f"{error} (not retried: the backoff retries only "
                f"{', '.join(kind.__name__ for kind in self.backoff.retry_on)})"
            )
        else:
            delay = self.backoff.delay(attempt)
            try:
                due = self._now() + delay
            except OverflowError:
                reason = (
                    f"{error} (not retried: its retry, {delay} from now, would fall after "
                    f"the year 9999, the latest time a clock can show; give the backoff a "
                    f"max_delay, e.g. el.RetryPolicy.exponential(1, max_delay=60))"
                )
            else:
                self.commands.set_status(command_id, QUEUED, error=error, available_at=due)
                return None
        self.commands.set_status(command_id, DEAD, error=reason)
        return CommandOutcome(command_id, DEAD, attempt, error=reason)

    def run(self, until_idle: bool = True, *, max_commands: int | None = None) -> int:
        """Run due commands in FIFO order; returns how many were taken.

        With ``until_idle``, also waits for commands whose retry is not due yet:
        a :class:`~eventlab.SimulatedClock` is advanced to the next due time,
        so retries with backoff finish at once. Calls :meth:`scan` first.

        It returns early, leaving them queued, when every command left in the
        queue waits for a circuit breaker whose trial calls someone else holds:
        advancing the clock cannot end that trial. Run again once it has ended.
        """
        if max_commands is not None and (
            isinstance(max_commands, bool) or not isinstance(max_commands, int) or max_commands < 0
        ):
            raise CommandError(
                f"max_commands must be None (no limit) or an int of 0 or more, got "
                f"{max_commands!r}; e.g. scheduler.run(max_commands=100)"
            )
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
            if not until_idle or (self._busy_ids and self._only_busy_left()):
                break
            if not self._wait_for_next():
                break
        return taken

    def _only_busy_left(self) -> bool:
        """Whether every queued command waits for a trial call someone else still holds."""
        log = self.log
        self._busy_ids = {
            command_id: breaker
            for command_id, breaker in self._busy_ids.items()
            if breaker.busy and log.status(command_id) == QUEUED
        }
        return len(self._busy_ids) == log.queued()

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

        A command's own ``timeout`` (in its context) counts instead of the
        scheduler's. One whose events are in the store (its attempt committed
        just before the crash) is marked ``succeeded``, so it never runs twice;
        the others are requeued (or dead-lettered, when out of attempts).
        Returns how many.
        """
        now = peek_micros(self.store.clock)
        log = self.log
        stuck = []
        for command_id, attempts in log.running():
            command = log.command(command_id)
            timeout = self.timeout
            if command.context:
                try:
                    timeout = _overrides(command, self.timeout, self.max_attempts)[0]
                except EventlabError:
                    pass  # a bad stored context: held to the scheduler's; _resolve buries it
            if log.started(command_id) < now - timeout // timedelta(microseconds=1):
                stuck.append((command_id, attempts))
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
                command = self.log.command(command_id)
                try:
                    _, max_attempts = _overrides(command, self.timeout, self.max_attempts)
                except EventlabError as error:  # stored before submit() checked contexts
                    self._bury_unhandled(command, attempts, error)
                    continue
                self._retry_or_bury(command_id, attempts, reason, max_attempts, TIMED_OUT)

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
    seconds = _positive_seconds(own_timeout)
    if seconds is None:
        raise CommandError(
            f"command {command.command_id!r} sets timeout={own_timeout!r} in its context; "
            f"give a positive number of seconds, at most {_MAX_TIMEOUT_S:.3g} (a timedelta's "
            f"range), e.g. context={{'timeout': 5.0}}"
        )
    return seconds, own_attempts


# The longest timedelta, in whole seconds: a longer timeout cannot be represented.
_MAX_TIMEOUT_S = timedelta.max // timedelta(seconds=1)


def _positive_seconds(value: object) -> timedelta | None:
    """``value`` (a timedelta or seconds) as a positive timedelta; None if it is not one."""
    if isinstance(value, timedelta):
        return value if value > timedelta(0) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not (0 < value <= _MAX_TIMEOUT_S):  # also refuses nan and inf
        return None
    return timedelta(seconds=value)


def _timeout(value: object) -> timedelta:
    """The scheduler's ``timeout`` argument as a positive timedelta, or a clear error."""
    timeout = _positive_seconds(value)
    if timeout is None:
        too_long = isinstance(value, int | float) and value > _MAX_TIMEOUT_S
        bound = f", at most {_MAX_TIMEOUT_S:.3g} s (a timedelta's range)" if too_long else ""
        raise CommandError(
            f"timeout must be a positive timedelta or number of seconds{bound}, got "
            f"{type(value).__name__}: {value!r:.80}; e.g. timeout=timedelta(seconds=30) "
            f"or timeout=30"
        )
    return timeout


def _guards(name: str, given: Mapping[str, Any] | None, kind: type, example: str) -> dict:
    guards = dict(given or {})
    for command_type, guard in guards.items():
        if not isinstance(command_type, str) or not isinstance(guard, kind):
            raise CommandError(
                f"{name} maps command types to {kind.__name__}s, e.g. "
                f"{{'ChargePayment': {example}}}; got {command_type!r}: {guard!r}"
            )
    return guards
