"""The command side against a plain-Python model: a hypothesis state machine.

Commands with model-controlled behaviours (succeed with N events, reject, fail
for the next k attempts, overrun the timeout, be interrupted by Ctrl-C) are
submitted (with deadlines, correlation ids, their own timeout and max_attempts,
unchecked bad contexts), resubmitted, run one at a time, in batches and until
idle, retried on a simulated clock, dead-lettered and requeued, executed by hand,
left ``running`` as if a worker died (scan, recover), and carried across new
schedulers and store restarts. After every step the outcomes, the handler calls
(FIFO among due commands), what the subscribers heard, the clock and the queue
must be what the model says; the ``check`` rule, every reopen and the teardown
(which drains the queue) compare every command row, every status history and
every event a command caused with the model.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pandas as pd
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

import eventlab as el
import eventlab.store
from eventlab.commands import STATUSES, TERMINAL
from tests.conftest import START

STREAMS = ("acct-0", "acct-1")
TYPES = ("Work", "Chore")  # both handled; "Nobody" has no handler (rejected)
KINDS = ("ok", "reject", "flaky", "slow", "interrupt")
SCAN_REASON = "still running after the timeout (a crash?)"
RECOVER_REASON = "the process running it stopped"
FAR = START + timedelta(days=10_000)
# A command's own attempts and timeout (seconds) override the scheduler's.
CONTEXTS = (
    None,
    {"user": "ann"},
    {"max_attempts": 1},
    {"max_attempts": 3, "timeout": 8},
    {"timeout": 2.5},
)

# About 12 s of CPU: each example opens a DuckDB file and reads it back at every check.
SETTINGS = settings(
    max_examples=8,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --------------------------------------------------------------------------- the model


class Boom(Exception):
    """Raised on purpose inside a transaction block."""


class Interrupted(Exception):
    """The model's KeyboardInterrupt: a handler was stopped mid-batch."""


@dataclass
class Behaviour:
    """What the handler does with a command: the world's copy and the model's copy."""

    kind: str  # ok | reject | flaky | slow | interrupt
    fails: int = 0  # flaky: attempts left that raise; interrupt: runs left that are stopped
    seconds: float = 0.0  # slow: how long a run takes
    direct: bool = False  # append the events itself instead of returning them

    def copy(self) -> Behaviour:
        return Behaviour(self.kind, self.fails, self.seconds, self.direct)


@dataclass
class Config:
    """A scheduler's settings, as the model needs them."""

    timeout: timedelta
    max_attempts: int
    backoff: str  # fixed | exponential
    batch_size: int

    def delay(self, attempt: int) -> timedelta:
        if self.backoff == "fixed":
            return timedelta(seconds=3)
        return timedelta(seconds=min(2 ** (attempt - 1), 8))

    def policy(self) -> el.RetryPolicy:
        if self.backoff == "fixed":
            return el.RetryPolicy.fixed(3, max_attempts=self.max_attempts)
        return el.RetryPolicy.exponential(1, max_delay=8, max_attempts=self.max_attempts)


@dataclass
class Cmd:
    """The model of one command: its row and its history."""

    cid: str
    seq: int
    type: str
    payload: dict[str, Any]
    submitted: datetime
    deadline: datetime | None
    correlation: str | None
    context: dict[str, Any] | None
    status: str = "queued"
    attempts: int = 0
    available: datetime | None = None
    started: datetime | None = None
    finished: datetime | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    events: int = 0  # events in the store caused by its runs
    crashed: int = 0  # events a worker that died stored for it (no correlation id)
    history: list[tuple[str, int, datetime, str | None]] = field(default_factory=list)

    def move(self, status: str, now: datetime, *, attempt: int | None = None, error=None) -> None:
        """A status change as CommandStore.set_status records it."""
        if attempt is not None:
            self.attempts = attempt
        self.status = status
        self.error = error
        if status == "running":
            self.started = now
        self.finished = now if status in TERMINAL else None
        self.history.append((status, self.attempts, now, error))

    def unusable(self) -> str | None:
        """Why the scheduler cannot take this command's context (added unchecked)."""
        context = self.context or {}
        if context.get("max_attempts") == 0:
            return (
                f"command {self.cid!r} sets max_attempts=0 in its context; give an int of 1 "
                f"or more, e.g. context={{'max_attempts': 1}}"
            )
        if context.get("timeout") == -1:
            return (
                f"command {self.cid!r} sets timeout=-1 in its context; give a positive number "
                f"of seconds, at most 8.64e+13 (a timedelta's range), e.g. "
                f"context={{'timeout': 5.0}}"
            )
        return None

    def buried(self) -> str:
        """The error of a command the scheduler could not handle."""
        return (
            f"the scheduler could not handle this command (CommandError: {self.unusable()}); "
            f"its run, if any, was undone. Fix the cause, then requeue it with "
            f"scheduler.requeue({self.cid!r})"
        )

    def limits(self, config: Config) -> tuple[timedelta, int]:
        context = self.context or {}
        timeout = context.get("timeout")
        return (
            config.timeout if timeout is None else timedelta(seconds=timeout),
            context.get("max_attempts", config.max_attempts),
        )


# --------------------------------------------------------------------------- the machine


class SchedulerMachine(RuleBasedStateMachine):
    """Drives a file store's command side and a model of it side by side."""

    ids = Bundle("ids")

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="eventlab-sched-"))
        self.path = self.directory / "store.duckdb"
        self.clock = el.SimulatedClock(START, step=timedelta(0))
        self.now = START  # the model's clock
        self.cmds: dict[str, Cmd] = {}
        self.world: dict[str, Behaviour] = {}  # what the handler reads (and updates)
        self.model: dict[str, Behaviour] = {}  # the model's copy of it
        self.calls: list[tuple[str, int]] = []  # (command id, attempt) per handler call
        self.expected_calls: list[tuple[str, int]] = []
        self.heard: list[tuple[str, str, int]] = []  # what the subscribers heard
        self.expected_heard: list[tuple[str, str, int]] = []
        self.stream_versions = dict.fromkeys(STREAMS, 0)
        self.seq = 0
        self.counter = 0
        self.store: el.EventStore | None = None
        self.patch = None

    # ------------------------------------------------------------------ set-up

    @initialize(
        threshold=st.sampled_from([1, 7, 100_000]),
        step=st.sampled_from([timedelta(0), timedelta(0), timedelta(milliseconds=250)]),
        config=st.builds(
            Config,
            timeout=st.sampled_from([timedelta(seconds=5), timedelta(seconds=4)]),
            max_attempts=st.integers(1, 4),
            backoff=st.sampled_from(["fixed", "exponential"]),
            batch_size=st.sampled_from([1, 2, 3, 5]),
        ),
    )
    def open(self, threshold: int, step: timedelta, config: Config) -> None:
        self.clock.step = self.step = step  # how far each appended event moves the clock
        # A small threshold makes absorbs (and background absorbs) happen all the time.
        self.patch = mock.patch.object(eventlab.store, "ABSORB_THRESHOLD", threshold)
        self.patch.start()
        self.store = el.EventStore(self.path, clock=self.clock)
        self.executor = self.make_executor()
        self.scheduler = self.make_scheduler(config, recover=True)

    def make_executor(self) -> el.CommandExecutor:
        executor = el.CommandExecutor(self.store)
        for command_type in TYPES:
            executor.register(command_type, self.handle)
        executor.subscribe(lambda o: self.heard.append((o.command_id, o.status, o.attempt)))
        return executor

    def make_scheduler(self, config: Config, *, recover: bool) -> el.CommandScheduler:
        self.config = config
        scheduler = el.CommandScheduler(
            self.store,
            self.executor,
            timeout=config.timeout,
            max_attempts=config.max_attempts,
            backoff=config.policy(),
            batch_size=config.batch_size,
            recover=recover,
        )
        real = scheduler._run_batch
        count = {"batches": 0}

        def bounded(limit: int) -> list:
            # Fail, do not hang, if run() keeps taking (empty) batches.
            count["batches"] += 1
            assert count["batches"] < 5_000, "the scheduler loops without end"
            return real(limit)

        scheduler._run_batch = bounded
        if recover:
            self.model_resolve(self.running(), RECOVER_REASON)
        return scheduler

    def handle(self, command: el.Command, ctx: Any) -> Any:
        cid = command.command_id
        self.calls.append((cid, ctx.attempt))
        behaviour = self.world[cid]
        stream, n = command.payload["stream"], command.payload["n"]
        events = [
            el.Event("Worked", {"cmd": cid, "attempt": ctx.attempt, "i": i}) for i in range(n)
        ]
        if behaviour.kind == "reject":
            raise el.CommandRejected(f"{cid} is not allowed")
        if behaviour.kind == "interrupt" and behaviour.fails > 0:
            behaviour.fails -= 1
            raise KeyboardInterrupt  # Ctrl-C in the notebook: the whole batch is undone
        if behaviour.kind == "flaky" and behaviour.fails > 0:
            behaviour.fails -= 1
            if events:
                ctx.store.append(stream, events)  # stored, then undone by the failure
            raise ConnectionError(f"{cid} is down")
        if behaviour.direct and events:
            ctx.store.append(stream, events)
            events = []
        if behaviour.kind == "slow":
            ctx.clock.advance(timedelta(seconds=behaviour.seconds))
        return {stream: events} if events else None

    def teardown(self) -> None:
        try:
            if self.store is not None and not self.store.closed:
                self.check_everything(STATUSES)
                for _ in range(20):  # drain the queue: every command reaches an end
                    self.run(until_idle=True, max_commands=None)
                    if not self.scheduler.pending():
                        break
                self.cheap_checks()
                self.check_everything(STATUSES)
                self.store.close()
        finally:
            if self.store is not None:
                self.store.close()
            if self.patch is not None:
                self.patch.stop()
            shutil.rmtree(self.directory, ignore_errors=True)

    # ------------------------------------------------------------------ model steps

    def queued(self) -> list[Cmd]:
        return [c for c in self.cmds.values() if c.status == "queued"]

    def running(self) -> list[Cmd]:
        return sorted((c for c in self.cmds.values() if c.status == "running"), key=lambda c: c.seq)

    def model_batch(self, limit: int) -> list[tuple[str, str, int]]:
        """One batch: the due commands oldest first, each run at the (moving) clock."""
        due = sorted((c for c in self.queued() if c.available <= self.now), key=lambda c: c.seq)
        # An interrupted batch leaves nothing but its handler calls and the clock.
        saved = (copy.deepcopy(self.cmds), dict(self.stream_versions), len(self.expected_heard))
        outcomes = []
        try:
            for cmd in due[:limit]:
                outcomes.append(self.model_run(cmd))
        except Interrupted:
            self.cmds, self.stream_versions = saved[0], saved[1]
            del self.expected_heard[saved[2] :]
            raise
        return outcomes

    def model_run(self, cmd: Cmd) -> tuple[str, str, int]:
        if cmd.deadline is not None and self.now > cmd.deadline:
            error = f"deadline {cmd.deadline.isoformat()} passed before it ran"
            cmd.move("expired", self.now, error=error)
            self.expected_heard.append((cmd.cid, "expired", cmd.attempts))
            return (cmd.cid, "expired", cmd.attempts)
        if cmd.unusable():
            cmd.move("dead", self.now, error=cmd.buried())
            self.expected_heard.append((cmd.cid, "dead", cmd.attempts))
            return (cmd.cid, "dead", cmd.attempts)
        attempt = cmd.attempts + 1
        timeout, max_attempts = cmd.limits(self.config)
        started = self.now
        status, error, produced = self.model_handle(cmd, attempt, timeout)
        cmd.history.append(("running", attempt, started, None))
        cmd.started = started
        cmd.attempts = attempt
        if status == "succeeded":
            cmd.events += produced
            self.stream_versions[cmd.payload["stream"]] += produced
            cmd.result = {"events": produced}
        cmd.move(status, self.now, error=error)
        self.expected_heard.append((cmd.cid, status, attempt))
        if status in ("failed", "timed_out"):
            self.retry_or_bury(cmd, attempt, error, max_attempts)
        return (cmd.cid, status, attempt)

    def model_handle(
        self, cmd: Cmd, attempt: int, timeout: timedelta | None
    ) -> tuple[str, Any, int]:
        """(status, error, events stored) of one run; moves the model's clock."""
        if cmd.type not in TYPES:
            error = (
                f"no handler for command type {cmd.type!r}; register one with "
                f"@executor.handler({cmd.type!r}) (known: {sorted(TYPES)})"
            )
            return "rejected", error, 0
        self.expected_calls.append((cmd.cid, attempt))
        behaviour = self.model[cmd.cid]
        n = cmd.payload["n"]
        if behaviour.kind == "reject":
            return "rejected", f"{cmd.cid} is not allowed", 0
        if behaviour.kind == "interrupt" and behaviour.fails > 0:
            behaviour.fails -= 1
            raise Interrupted
        # Each appended event steps the clock, also those a failure or overrun undoes.
        self.now += n * self.step
        if behaviour.kind == "flaky" and behaviour.fails > 0:
            behaviour.fails -= 1
            return "failed", f"ConnectionError: {cmd.cid} is down", 0
        if behaviour.kind == "slow":
            took = timedelta(seconds=behaviour.seconds)
            self.now += took
            # The clock steps of the run's own events are not counted as its time.
            if timeout is not None and took > timeout:
                return "timed_out", f"ran {took}, longer than the timeout {timeout}; undone", 0
        return "succeeded", None, n

    def retry_or_bury(
        self, cmd: Cmd, attempt: int, error: str, max_attempts: int, *, announce: bool = True
    ) -> None:
        if attempt >= max_attempts:
            cmd.move("dead", self.now, error=error)
            if announce:  # after a run; scan() and recover() tell nobody
                self.expected_heard.append((cmd.cid, "dead", attempt))
            return
        cmd.available = self.now + self.config.delay(attempt)
        cmd.move("queued", self.now, error=error)

    def model_resolve(self, stuck: list[Cmd], reason: str) -> None:
        """What scan() and recover() do with commands left running."""
        for cmd in stuck:
            if cmd.crashed:
                cmd.result = {"events": cmd.crashed}
                cmd.move("succeeded", self.now)
                continue
            cmd.move("timed_out", self.now, error=reason)
            if cmd.unusable():
                cmd.move("dead", self.now, error=cmd.buried())
                continue
            max_attempts = cmd.limits(self.config)[1]
            self.retry_or_bury(cmd, cmd.attempts, reason, max_attempts, announce=False)

    def model_scan(self) -> int:
        # Each is held to its own timeout; a bad stored context to the scheduler's.
        stuck = [
            c
            for c in self.running()
            if c.started
            < self.now - (self.config.timeout if c.unusable() else c.limits(self.config)[0])
        ]
        self.model_resolve(stuck, SCAN_REASON)
        return len(stuck)

    def model_next_due(self) -> datetime | None:
        queued = self.queued()
        return min(c.available for c in queued) if queued else None

    # ------------------------------------------------------------------ submitting

    def new_command(self, data: st.DataObject) -> tuple[el.Command, Behaviour]:
        self.counter += 1
        cid = f"c-{self.counter}"
        command_type = data.draw(st.sampled_from((*TYPES, *TYPES, "Nobody")), label="type")
        payload = {
            "stream": data.draw(st.sampled_from(STREAMS), label="stream"),
            "n": data.draw(st.integers(0, 3), label="n"),
        }
        kind = data.draw(st.sampled_from(KINDS), label="kind")
        behaviour = Behaviour(
            kind,
            fails=data.draw(st.integers(1, 4), label="fails")
            if kind in ("flaky", "interrupt")
            else 0,
            seconds=data.draw(st.sampled_from([1, 4, 5, 6, 9]), label="seconds")
            if kind == "slow"
            else 0.0,
            direct=data.draw(st.booleans(), label="direct"),
        )
        deadline = None
        if data.draw(st.booleans(), label="has deadline"):
            deadline = self.now + timedelta(seconds=data.draw(st.integers(-1, 20), label="in"))
        correlation = data.draw(st.sampled_from([None, "tx-1", "tx-2"]), label="correlation")
        context = data.draw(
            st.sampled_from(CONTEXTS),
            label="context",
        )
        command = el.Command(
            command_type,
            payload,
            command_id=cid,
            correlation_id=correlation,
            deadline=deadline,
            context=context,
        )
        return command, behaviour

    def model_submit(self, command: el.Command, behaviour: Behaviour) -> None:
        self.seq += 1
        cmd = Cmd(
            command.command_id,
            self.seq,
            command.type,
            command.payload,
            self.now,
            command.deadline,
            command.correlation_id,
            command.context,
            available=self.now,
        )
        cmd.history.append(("queued", 0, self.now, None))
        self.cmds[cmd.cid] = cmd
        self.world[cmd.cid] = behaviour
        self.model[cmd.cid] = behaviour.copy()

    @rule(target=ids, data=st.data())
    def submit(self, data: st.DataObject) -> str:
        command, behaviour = self.new_command(data)
        self.world[command.command_id] = behaviour  # the handler may run it at once
        assert self.scheduler.submit(command) == command.command_id
        self.model_submit(command, behaviour)
        return command.command_id

    @rule(data=st.data(), size=st.integers(1, 4))
    def submit_many(self, data: st.DataObject, size: int) -> None:
        made = [self.new_command(data) for _ in range(size)]
        ids = self.scheduler.submit_many([command for command, _ in made])
        assert ids == [command.command_id for command, _ in made]
        for command, behaviour in made:
            self.model_submit(command, behaviour)

    @rule(
        target=ids, data=st.data(), context=st.sampled_from([{"max_attempts": 0}, {"timeout": -1}])
    )
    def add_unchecked(self, data: st.DataObject, context: dict[str, Any]) -> str:
        """A command added straight to the command store: submit() never checked its context."""
        command, behaviour = self.new_command(data)
        command = el.Command(
            command.type,
            command.payload,
            command_id=command.command_id,
            correlation_id=command.correlation_id,
            deadline=command.deadline,
            context=context,
        )
        assert self.scheduler.commands.add(command) is True
        self.model_submit(command, behaviour)
        return command.command_id

    @rule(target=ids, data=st.data(), reuse=st.booleans())
    def submit_rolled_back(self, data: st.DataObject, reuse: bool) -> str:
        """A submit in a transaction that raises leaves nothing: its id stays free."""
        command, behaviour = self.new_command(data)
        with pytest.raises(Boom), self.store.transaction():
            self.scheduler.submit(command)
            raise Boom
        with pytest.raises(el.CommandError, match="no command with id"):
            self.scheduler.commands.get(command.command_id)
        if reuse:  # the id is free for another command
            command = el.Command(
                "Chore", {"stream": STREAMS[0], "n": 1}, command_id=command.command_id
            )
            behaviour = Behaviour("ok")
        self.world[command.command_id] = behaviour
        self.scheduler.submit(command)
        self.model_submit(command, behaviour)
        return command.command_id

    @rule(cid=ids, reordered=st.booleans())
    def resubmit_same(self, cid: str, reordered: bool) -> None:
        cmd = self.cmds[cid]
        items = list(cmd.payload.items())
        payload = dict(reversed(items) if reordered else items)  # the same JSON object
        again = el.Command(cmd.type, payload, command_id=cid)
        assert self.scheduler.submit(again) == cid  # a no-op, whatever its status

    @rule(cid=ids, data=st.data())
    def resubmit_different(self, cid: str, data: st.DataObject) -> None:
        cmd = self.cmds[cid]
        other = data.draw(
            st.sampled_from(
                [
                    ("Chore" if cmd.type == "Work" else "Work", cmd.payload),
                    (cmd.type, {**cmd.payload, "n": cmd.payload["n"] + 1}),
                ]
            )
        )
        with pytest.raises(el.CommandError, match=rf"command id '{cid}' is already stored as a "):
            self.scheduler.submit(el.Command(other[0], other[1], command_id=cid))

    @rule(data=st.data(), cid=ids)
    def submit_many_with_a_conflict(self, data: st.DataObject, cid: str) -> None:
        # One reused id with another payload: nothing of the call is stored.
        fresh, _ = self.new_command(data)
        cmd = self.cmds[cid]
        clash = el.Command(cmd.type, {**cmd.payload, "n": 9}, command_id=cid)
        with pytest.raises(el.CommandError, match="is already stored as a"):
            self.scheduler.submit_many([fresh, clash])
        with pytest.raises(el.CommandError, match="no command with id"):
            self.scheduler.commands.get(fresh.command_id)

    # ------------------------------------------------------------------ running

    def outcomes(self, outcomes: list) -> list[tuple[str, str, int]]:
        return [(o.command_id, o.status, o.attempt) for o in outcomes]

    @rule()
    def run_once(self) -> None:
        try:
            expected = self.model_batch(1)
        except Interrupted:
            with pytest.raises(KeyboardInterrupt):
                self.scheduler.run_once()
            return
        outcome = self.scheduler.run_once()
        assert self.outcomes([outcome] if outcome else []) == expected

    @rule()
    def run_batch(self) -> None:
        try:
            expected = self.model_batch(self.config.batch_size)
        except Interrupted:
            with pytest.raises(KeyboardInterrupt):
                self.scheduler.run_batch()
            return
        assert self.outcomes(self.scheduler.run_batch()) == expected

    @rule(until_idle=st.booleans(), max_commands=st.sampled_from([None, None, 0, 1, 4]))
    def run(self, until_idle: bool, max_commands: int | None) -> None:
        try:
            taken = self.model_run_loop(until_idle, max_commands)
        except Interrupted:
            with pytest.raises(KeyboardInterrupt):
                self.scheduler.run(until_idle, max_commands=max_commands)
            return
        assert self.scheduler.run(until_idle, max_commands=max_commands) == taken

    def model_run_loop(self, until_idle: bool, max_commands: int | None) -> int:
        """What run() does: scan, then batches (waiting for the next due one if idle)."""
        self.model_scan()
        taken = 0
        while max_commands is None or taken < max_commands:
            size = self.config.batch_size
            if max_commands is not None:
                size = min(size, max_commands - taken)
            outcomes = self.model_batch(size)
            if outcomes:
                taken += len(outcomes)
                continue
            due = self.model_next_due()
            if not until_idle or due is None:
                break
            self.now = max(self.now, due)
        return taken

    # Running is most of what a scheduler does: these rules come up more often.
    @rule()
    def run_batch_more(self) -> None:
        self.run_batch()

    @rule(until_idle=st.booleans())
    def run_more(self, until_idle: bool) -> None:
        self.run(until_idle, max_commands=None)

    @rule(seconds=st.sampled_from([0.5, 1, 3, 4, 5, 8, 30]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(timedelta(seconds=seconds))
        self.now += timedelta(seconds=seconds)

    @rule(cid=ids)
    def requeue(self, cid: str) -> None:
        cmd = self.cmds[cid]
        if cmd.status != "dead":
            with pytest.raises(
                el.CommandError,
                match=f"only dead commands are requeued by hand; '{cid}' is {cmd.status}",
            ):
                self.scheduler.requeue(cid)
            return
        self.scheduler.requeue(cid)
        cmd.available = self.now
        cmd.move("queued", self.now, attempt=0)

    @rule(cid=ids)
    def execute(self, cid: str) -> None:
        """Run a command at once through the executor, past the scheduler's queue."""
        cmd = self.cmds[cid]
        command = el.Command(
            cmd.type,
            dict(cmd.payload),
            command_id=cid,
            correlation_id=cmd.correlation,
            deadline=cmd.deadline,
            context=cmd.context,
        )
        if cmd.status == "running":
            with pytest.raises(el.CommandError, match=f"command '{cid}' is running"):
                self.executor.execute(command)
            return
        if cmd.status in TERMINAL:  # its recorded outcome; nothing runs
            outcome = self.executor.execute(command)
            assert (outcome.command_id, outcome.status, outcome.attempt) == (
                cid,
                cmd.status,
                cmd.attempts,
            )
            assert outcome.error == cmd.error
            return
        if cmd.deadline is not None and self.now > cmd.deadline:  # discarded, not run
            error = f"deadline {cmd.deadline.isoformat()} passed before it ran"
            cmd.move("expired", self.now, error=error)
            self.expected_heard.append((cid, "expired", cmd.attempts))
            outcome = self.executor.execute(command)
            assert (outcome.status, outcome.attempt, outcome.error) == (
                "expired",
                cmd.attempts,
                error,
            )
            return
        attempt = cmd.attempts + 1
        saved = copy.deepcopy(cmd)
        cmd.move("running", self.now, attempt=attempt)
        try:
            status, error, produced = self.model_handle(cmd, attempt, None)
        except Interrupted:
            self.cmds[cid] = saved  # undone: only the handler call remains
            with pytest.raises(KeyboardInterrupt):
                self.executor.execute(command)
            return
        if status == "succeeded":
            cmd.events += produced
            self.stream_versions[cmd.payload["stream"]] += produced
            cmd.result = {"events": produced}
        cmd.move(status, self.now, error=error)
        self.expected_heard.append((cid, status, attempt))
        outcome = self.executor.execute(command)
        assert (outcome.command_id, outcome.status, outcome.attempt) == (cid, status, attempt)

    @rule(cid=ids, data=st.data())
    def heal(self, cid: str, data: st.DataObject) -> None:
        # The participant recovers (or breaks): the handler's next runs change.
        behaviour = Behaviour(
            data.draw(st.sampled_from(KINDS)),
            fails=data.draw(st.integers(0, 2)),
            seconds=data.draw(st.sampled_from([1, 6])),
            direct=data.draw(st.booleans()),
        )
        self.world[cid] = behaviour
        self.model[cid] = behaviour.copy()

    # ------------------------------------------------------------------ crashes

    @rule(cid=ids, stored=st.integers(0, 2))
    def left_running(self, cid: str, stored: int) -> None:
        """A worker took the command and died: it stays ``running`` (with the events its
        attempt committed, if ``stored``)."""
        cmd = self.cmds[cid]
        if cmd.status != "queued":
            return
        attempt = cmd.attempts + 1
        self.scheduler.commands.set_status(cid, "running", attempts=attempt)
        cmd.move("running", self.now, attempt=attempt)
        if stored:
            stream = cmd.payload["stream"]
            events = [
                el.Event("Worked", {"cmd": cid, "crashed": i}, metadata={"causation_id": cid})
                for i in range(stored)
            ]
            self.store.append(stream, events)
            self.now += stored * self.step
            cmd.crashed += stored
            self.stream_versions[stream] += stored

    @rule()
    def scan(self) -> None:
        expected = self.model_scan()
        assert self.scheduler.scan() == expected

    @rule(
        batch_size=st.sampled_from([1, 2, 4]),
        backoff=st.sampled_from(["fixed", "exponential"]),
        max_attempts=st.integers(1, 4),
        recover=st.booleans(),
    )
    def new_scheduler(
        self, batch_size: int, backoff: str, max_attempts: int, recover: bool
    ) -> None:
        """Another scheduler on the same store (a worker restarted in the same process)."""
        config = Config(self.config.timeout, max_attempts, backoff, batch_size)
        self.scheduler = self.make_scheduler(config, recover=recover)

    @rule(batch_size=st.sampled_from([1, 3]), peek=st.booleans())
    def reopen(self, batch_size: int, peek: bool) -> None:
        """Close the store and open it again: the queue survives the restart."""
        self.store.close()
        if peek:  # a reader in between sees every command as it was
            with el.EventStore(self.path, read_only=True) as reader:
                self.check_everything(commands=el.CommandStore(reader))
        self.store = el.EventStore(self.path, clock=self.clock)
        self.executor = self.make_executor()
        config = Config(
            self.config.timeout, self.config.max_attempts, self.config.backoff, batch_size
        )
        self.scheduler = self.make_scheduler(config, recover=True)
        self.check_everything()

    # ------------------------------------------------------------------ checks

    @invariant()
    def cheap_checks(self) -> None:
        if self.store is None:
            return
        assert self.calls == self.expected_calls
        assert self.heard == self.expected_heard
        assert self.clock.current == self.now
        assert self.scheduler.pending() == len(self.queued())
        due = self.model_next_due()
        got = self.scheduler.next_due()
        if due is None or due > self.now:
            assert got == due
        else:
            assert got is not None and got <= self.now
        for cid, behaviour in self.world.items():
            assert behaviour == self.model[cid], cid

    @rule(statuses=st.lists(st.sampled_from(STATUSES), min_size=1, max_size=3, unique=True))
    def check(self, statuses: list[str]) -> None:
        self.check_everything(statuses)

    def check_everything(
        self,
        statuses: list[str] | tuple[str, ...] = STATUSES,
        commands: el.CommandStore | None = None,
    ) -> None:
        commands = commands or self.scheduler.commands
        frame = commands.df()
        assert frame["command_id"].tolist() == list(self.cmds)  # submission order
        for row in frame.to_dict("records"):
            self.check_row(row, self.cmds[row["command_id"]])
        # get, by_status and between agree with df.
        for cid in list(self.cmds)[-3:]:
            row = commands.get(cid)
            self.check_row(row, self.cmds[cid])
        ids = commands.by_status(*statuses)["command_id"].tolist()
        assert ids == [c for c, cmd in self.cmds.items() if cmd.status in statuses], statuses
        assert commands.between(START, FAR)["command_id"].tolist() == list(self.cmds)
        if self.cmds:
            middle = list(self.cmds.values())[len(self.cmds) // 2].submitted
            assert commands.between(START, middle)["command_id"].tolist() == [
                c for c, cmd in self.cmds.items() if cmd.submitted < middle
            ]
        assert commands.counts() == dict(
            sorted(
                pd.Series([c.status for c in self.cmds.values()], dtype=object)
                .value_counts()
                .items()
            )
        )
        self.check_histories(commands)
        self.check_events(commands.store)

    def check_row(self, row: dict[str, Any], cmd: Cmd) -> None:
        got = (
            row["status"],
            row["attempts"],
            row["type"],
            row["payload"],
            row["error"],
            row["correlation_id"],
            row["context"],
        )
        want = (
            cmd.status,
            cmd.attempts,
            cmd.type,
            cmd.payload,
            cmd.error,
            cmd.correlation,
            cmd.context or {},
        )
        assert _clean(got) == _clean(want), cmd.cid
        assert _time(row["submitted_at"]) == cmd.submitted
        assert _time(row["started_at"]) == cmd.started, cmd.cid
        assert _time(row["finished_at"]) == cmd.finished, cmd.cid
        assert _time(row["deadline"]) == cmd.deadline, cmd.cid
        if cmd.status == "queued":
            assert _time(row["available_at"]) == cmd.available, cmd.cid
        if cmd.status == "succeeded":
            assert row["result"] == cmd.result, cmd.cid

    def check_histories(self, commands: el.CommandStore) -> None:
        frame = commands.store.sql(
            "SELECT command_id, status, attempt, changed_at, error FROM command_history "
            "ORDER BY seq"
        )
        got: dict[str, list] = {}
        for row in frame.itertuples(index=False):
            got.setdefault(row.command_id, []).append(
                (row.status, row.attempt, _time(row.changed_at), _none(row.error))
            )
        for cid, cmd in self.cmds.items():
            assert got.get(cid) == cmd.history, cid
        assert set(got) == set(self.cmds)
        for cid in list(self.cmds)[-2:]:  # history() says the same
            history = commands.history(cid)
            rows = [
                (r.status, r.attempt, _time(r.at), _none(r.error))
                for r in history.itertuples(index=False)
            ]
            assert rows == self.cmds[cid].history, cid

    def check_events(self, store: el.EventStore) -> None:
        # Which command, stream, transaction and attempt caused how many events.
        frame = store.sql(
            "SELECT causation_id, stream_id, correlation_id, "
            "coalesce(CAST(data->>'attempt' AS INTEGER), 0) AS attempt, count(*) AS n "
            "FROM events GROUP BY ALL"
        )
        got = {
            (r.causation_id, r.stream_id, _none(r.correlation_id), r.attempt): r.n
            for r in frame.itertuples(index=False)
        }
        want = {}
        for cid, cmd in self.cmds.items():
            stream = cmd.payload["stream"]
            if cmd.events:  # all from its one successful run, its last attempt
                want[cid, stream, cmd.correlation or cid, cmd.attempts] = cmd.events
            if cmd.crashed:
                want[cid, stream, None, 0] = cmd.crashed
        assert got == want
        for stream, version in self.stream_versions.items():
            assert store.version(stream) == version, stream


def _none(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and value != value) else value


def _time(value: Any) -> datetime | None:
    """A timestamp from a row or DataFrame as a datetime; None for NULL (None, NaT, NaN)."""
    return None if value is None or pd.isna(value) else pd.Timestamp(value).to_pydatetime()


def _clean(values: tuple) -> tuple:
    return tuple(_none(v) for v in values)


SchedulerMachine.TestCase.settings = SETTINGS
test_the_command_side_matches_the_model = SchedulerMachine.TestCase
