"""The command scheduler on a simulated clock: FIFO, deadlines, retries, dead letters, timeouts."""

from __future__ import annotations

from datetime import timedelta

import pytest

import eventlab as el
from tests.conftest import START


@pytest.fixture
def clock():
    # Appends do not move this clock: only the tests and the scheduler's waits do.
    return el.SimulatedClock(START, step=timedelta(0))


@pytest.fixture
def setup(clock):
    with el.EventStore(clock=clock) as store:
        executor = el.CommandExecutor(store)
        calls: list[tuple[str, int]] = []
        flaky = {"failures": 0}

        @executor.handler("Ping")
        def ping(command, ctx):
            calls.append((command.command_id, ctx.attempt))
            return {f"ping-{command.payload['n']}": [el.Event("Pinged", {})]}

        @executor.handler("Flaky")
        def flaky_handler(command, ctx):
            calls.append((command.command_id, ctx.attempt))
            if flaky["failures"] > 0:
                flaky["failures"] -= 1
                raise ConnectionError("payment service down")
            return {"flaky-1": [el.Event("Done", {})]}

        @executor.handler("Invalid")
        def invalid(command, ctx):
            calls.append((command.command_id, ctx.attempt))
            raise el.CommandRejected("never valid")

        @executor.handler("Slow")
        def slow(command, ctx):
            calls.append((command.command_id, ctx.attempt))
            clock.advance(timedelta(seconds=command.payload["seconds"]))
            return {"slow-1": [el.Event("Done", {})]}

        backoff = el.RetryPolicy.fixed(10, max_attempts=3)
        scheduler = el.CommandScheduler(
            store, executor, timeout=timedelta(seconds=5), max_attempts=3, backoff=backoff
        )
        yield store, scheduler, calls, flaky


def status(scheduler, command_id):
    return scheduler.commands.get(command_id)["status"]


def test_fifo_and_idempotent_submission(setup):
    store, scheduler, calls, _ = setup
    for i in range(3):
        scheduler.submit(el.Command("Ping", {"n": i}, command_id=f"c-{i}"))
    scheduler.submit(el.Command("Ping", {"n": 0}, command_id="c-0"))  # a resubmission
    assert scheduler.pending() == 3
    assert scheduler.run() == 3
    assert calls == [("c-0", 1), ("c-1", 1), ("c-2", 1)]
    assert [status(scheduler, f"c-{i}") for i in range(3)] == ["succeeded"] * 3
    assert store.version("ping-0") == 1
    assert scheduler.run() == 0


def test_deadline_expiry(setup, clock):
    _, scheduler, calls, _ = setup
    scheduler.submit(el.Command("Ping", {"n": 1}, command_id="late", deadline=START))
    clock.advance(timedelta(seconds=1))
    scheduler.run()
    assert calls == []
    row = scheduler.commands.get("late")
    assert row["status"] == "expired" and "deadline" in row["error"]


def test_retries_with_backoff_then_success(setup, clock):
    _, scheduler, calls, flaky = setup
    flaky["failures"] = 2
    scheduler.submit(el.Command("Flaky", {}, command_id="f-1"))
    assert scheduler.run() == 3
    assert calls == [("f-1", 1), ("f-1", 2), ("f-1", 3)]
    assert status(scheduler, "f-1") == "succeeded"
    history = scheduler.commands.history("f-1")
    assert history["status"].tolist() == [
        "queued", "running", "failed", "queued",
        "running", "failed", "queued",
        "running", "succeeded",
    ]  # fmt: skip
    # Two backoffs of 10 s on the simulated clock.
    assert history["at"].iloc[-1] - START == timedelta(seconds=20)


def test_dead_letter_and_requeue(setup):
    _, scheduler, calls, flaky = setup
    flaky["failures"] = 5
    scheduler.submit(el.Command("Flaky", {}, command_id="f-2"))
    scheduler.run()
    row = scheduler.commands.get("f-2")
    assert (row["status"], row["attempts"]) == ("dead", 3)
    assert row["error"] == "ConnectionError: payment service down"
    assert scheduler.commands.by_status("dead")["command_id"].tolist() == ["f-2"]
    flaky["failures"] = 0
    scheduler.requeue("f-2")
    scheduler.run()
    assert status(scheduler, "f-2") == "succeeded"
    assert calls[-1] == ("f-2", 1)
    with pytest.raises(el.CommandError, match="only dead commands"):
        scheduler.requeue("f-2")


def test_rejected_commands_are_never_retried(setup):
    _, scheduler, calls, _ = setup
    scheduler.submit(el.Command("Invalid", {}, command_id="i-1"))
    scheduler.run()
    assert calls == [("i-1", 1)]
    assert status(scheduler, "i-1") == "rejected"


def test_a_run_over_the_timeout_is_undone_and_retried(setup):
    store, scheduler, calls, _ = setup
    scheduler.submit(el.Command("Slow", {"seconds": 6}, command_id="s-1"))
    scheduler.run()
    # Every attempt overran: nothing it wrote stayed, and it ended dead.
    assert [a for _, a in calls] == [1, 2, 3]
    assert store.version("slow-1") == 0
    history = scheduler.commands.history("s-1")["status"].tolist()
    assert history.count("timed_out") == 3 and history[-1] == "dead"
    scheduler.submit(el.Command("Slow", {"seconds": 2}, command_id="s-2"))
    scheduler.run()
    assert status(scheduler, "s-2") == "succeeded" and store.version("slow-1") == 1


def test_a_run_of_exactly_the_timeout_succeeds_and_one_microsecond_more_times_out(setup):
    store, scheduler, _, _ = setup
    scheduler.submit(el.Command("Slow", {"seconds": 5}, command_id="exact"))
    scheduler.submit(
        el.Command("Slow", {"seconds": 5.000001}, command_id="over", context={"max_attempts": 1})
    )
    scheduler.run()
    assert status(scheduler, "exact") == "succeeded"
    assert status(scheduler, "over") == "dead"
    error = scheduler.commands.history("over")["error"].dropna().iloc[0]
    assert error == "ran 0:00:05.000001, longer than the timeout 0:00:05; undone"
    assert store.version("slow-1") == 1


def test_scan_requeues_a_command_stuck_running(setup, clock):
    _, scheduler, calls, _ = setup
    scheduler.submit(el.Command("Ping", {"n": 7}, command_id="c-7"))
    scheduler.commands.set_status("c-7", "running", attempts=1)  # as if a worker died here
    assert scheduler.scan() == 0  # not past the timeout yet
    clock.advance(timedelta(seconds=6))
    assert scheduler.scan() == 1
    assert status(scheduler, "c-7") == "queued"
    scheduler.run()
    assert calls == [("c-7", 2)]
    assert status(scheduler, "c-7") == "succeeded"


def test_scan_holds_each_command_to_its_own_timeout(setup, clock):
    _, scheduler, _, _ = setup  # the scheduler's timeout is 5 s
    scheduler.submit(el.Command("Ping", {"n": 1}, command_id="slow", context={"timeout": 60}))
    scheduler.submit(el.Command("Ping", {"n": 2}, command_id="quick", context={"timeout": 1}))
    scheduler.submit(el.Command("Ping", {"n": 3}, command_id="plain"))
    for command_id in ("slow", "quick", "plain"):
        scheduler.commands.set_status(command_id, "running", attempts=1)
    clock.advance(timedelta(seconds=2))
    assert scheduler.scan() == 1  # only 'quick' is past its own 1 s
    assert [status(scheduler, c) for c in ("slow", "quick", "plain")] == [
        "running",
        "queued",
        "running",
    ]
    clock.advance(timedelta(seconds=4))
    assert scheduler.scan() == 1  # 'plain', past the scheduler's 5 s
    assert status(scheduler, "slow") == "running"  # it may take a minute
    clock.advance(timedelta(seconds=60))
    assert scheduler.scan() == 1
    assert status(scheduler, "slow") == "queued"


def test_the_queue_survives_a_restart(store_path):
    clock = el.SimulatedClock(START, step=timedelta(0))

    def make(store):
        executor = el.CommandExecutor(store)

        @executor.handler("Ping")
        def ping(command, ctx):
            return {f"ping-{command.payload['n']}": [el.Event("Pinged", {})]}

        return el.CommandScheduler(store, executor)

    with el.EventStore(store_path, clock=clock) as store:
        scheduler = make(store)
        for i in range(3):
            scheduler.submit(el.Command("Ping", {"n": i}, command_id=f"c-{i}"))
        scheduler.run(max_commands=1)
    with el.EventStore(store_path, clock=clock) as store:
        scheduler = make(store)
        assert scheduler.pending() == 2
        assert scheduler.run() == 2
        assert scheduler.commands.counts() == {"succeeded": 3}


def test_bad_settings(setup):
    store, scheduler, _, _ = setup
    with pytest.raises(el.CommandError, match="max_attempts"):
        el.CommandScheduler(store, scheduler.executor, max_attempts=0)
    with pytest.raises(
        el.CommandError,
        match="timeout must be a positive timedelta or number of seconds, got int: 0",
    ):
        el.CommandScheduler(store, scheduler.executor, timeout=0)
    with pytest.raises(el.CommandError, match="executor must be"):
        el.CommandScheduler(store, "executor")


def test_scan_marks_a_command_whose_events_are_stored_as_succeeded(setup, clock):
    store, scheduler, calls, _ = setup
    scheduler.submit(el.Command("Ping", {"n": 8}, command_id="c-8"))
    scheduler.commands.set_status("c-8", "running", attempts=1)
    # Its attempt committed its events, then the worker died before recording it.
    store.append("ping-8", [el.Event("Pinged", {}, metadata={"causation_id": "c-8"})])
    clock.advance(timedelta(seconds=6))
    assert scheduler.scan() == 1
    row = scheduler.commands.get("c-8")
    assert (row["status"], row["result"]) == ("succeeded", {"events": 1})
    scheduler.run()
    assert calls == [] and store.version("ping-8") == 1


def test_a_new_scheduler_recovers_orphans_at_once(setup):
    store, scheduler, calls, _ = setup
    scheduler.submit(el.Command("Ping", {"n": 9}, command_id="c-9"))
    scheduler.commands.set_status("c-9", "running", attempts=1)
    again = el.CommandScheduler(store, scheduler.executor)
    assert status(again, "c-9") == "queued"
    again.run()
    assert calls == [("c-9", 2)] and store.version("ping-9") == 1


def test_group_commit_runs_a_batch_in_one_commit_and_isolates_failures(setup, monkeypatch):
    store, scheduler, calls, flaky = setup
    grouped = el.CommandScheduler(
        store,
        scheduler.executor,
        batch_size=4,
        timeout=timedelta(seconds=5),
        backoff=el.RetryPolicy.fixed(10, max_attempts=3),
    )
    commits = []
    real_commit = store._commit
    monkeypatch.setattr(store, "_commit", lambda tx: (commits.append(1), real_commit(tx)))
    flaky["failures"] = 1
    ids = grouped.submit_many(
        [
            el.Command("Ping", {"n": 1}, command_id="g-1"),
            el.Command("Flaky", {}, command_id="g-2"),
            el.Command("Slow", {"seconds": 9}, command_id="g-3"),
            el.Command("Ping", {"n": 4}, command_id="g-4"),
        ]
    )
    assert ids == ["g-1", "g-2", "g-3", "g-4"] and len(commits) == 1  # one for all four
    commits.clear()
    outcomes = grouped.run_batch()
    assert [(o.command_id, o.status) for o in outcomes] == [
        ("g-1", "succeeded"),
        ("g-2", "failed"),
        ("g-3", "timed_out"),
        ("g-4", "succeeded"),
    ]
    assert len(commits) == 1  # one commit for the whole batch
    # The failing and the overrunning commands left nothing; the others are stored.
    assert (store.version("ping-1"), store.version("ping-4")) == (1, 1)
    assert (store.version("flaky-1"), store.version("slow-1")) == (0, 0)
    assert [status(grouped, c) for c in ("g-2", "g-3")] == ["queued", "queued"]
    with pytest.raises(el.CommandError, match="batch_size"):
        el.CommandScheduler(store, scheduler.executor, batch_size=0)


def test_an_open_breaker_holds_its_commands_without_using_attempts(setup, clock):
    store, scheduler, calls, flaky = setup
    breaker = el.CircuitBreaker(failure_threshold=2, cool_down=60, clock=clock, name="pay")
    guarded = el.CommandScheduler(
        store,
        scheduler.executor,
        max_attempts=5,
        backoff=el.RetryPolicy.fixed(10, max_attempts=5),
        breakers={"Flaky": breaker},
    )
    flaky["failures"] = 2
    guarded.submit(el.Command("Flaky", {}, command_id="f-1"))
    guarded.submit(el.Command("Flaky", {}, command_id="f-2"))
    guarded.submit(el.Command("Ping", {"n": 1}, command_id="p-1"))
    # Two failures open the breaker; the next Flaky run is held, the Ping is not.
    outcomes = [guarded.run_once() for _ in range(3)]
    assert [(o.command_id, o.status) for o in outcomes] == [
        ("f-1", "failed"),
        ("f-2", "failed"),
        ("p-1", "succeeded"),
    ]
    assert breaker.state == "open"
    clock.advance(timedelta(seconds=10))  # f-1's retry is due, but the breaker is open
    held = guarded.run_once()
    assert (held.command_id, held.status, held.attempt) == ("f-1", "queued", 1)
    assert held.error.startswith("circuit 'pay' open; waits until 2024-01-01T00:01:00")
    assert guarded.commands.get("f-1")["attempts"] == 1
    # run() waits out the cool-down on the simulated clock; the trial closes the breaker.
    guarded.run()
    assert [status(guarded, c) for c in ("f-1", "f-2")] == ["succeeded", "succeeded"]
    assert [c for c in calls if c[0].startswith("f-")] == [
        ("f-1", 1),
        ("f-2", 1),
        ("f-1", 2),
        ("f-2", 2),
    ]
    assert list(breaker.events()["kind"]) == ["CircuitOpened", "CircuitHalfOpened", "CircuitClosed"]
    assert list(guarded.commands.history("f-1")["status"]) == [
        "queued",
        "running",
        "failed",
        "queued",
        "queued",
        "running",
        "succeeded",
    ]


def test_a_rate_limit_spreads_commands_over_the_simulated_clock(setup, clock):
    store, scheduler, calls, _ = setup
    limiter = el.RateLimiter(rate=1, capacity=2, clock=clock, name="api")
    limited = el.CommandScheduler(
        store, scheduler.executor, batch_size=10, limits={"Ping": limiter}
    )
    limited.submit_many([el.Command("Ping", {"n": n}, command_id=f"p-{n}") for n in range(5)])
    limited.run()
    started = limited.commands.df()[["command_id", "started_at"]]
    seconds = [(t - started["started_at"][0]).total_seconds() for t in started["started_at"]]
    # Two tokens at once, then one a second.
    assert seconds == [0, 0, 1, 2, 3]
    assert [c for c, _ in calls] == ["p-0", "p-1", "p-2", "p-3", "p-4"]
    assert limited.commands.counts() == {"succeeded": 5}


def test_guards_must_map_command_types_to_guards(setup):
    store, scheduler, _, _ = setup
    with pytest.raises(el.CommandError, match="breakers maps command types to CircuitBreakers"):
        el.CommandScheduler(store, scheduler.executor, breakers={"Pay": "not a breaker"})
    with pytest.raises(el.CommandError, match="limits maps command types to RateLimiters"):
        el.CommandScheduler(store, scheduler.executor, limits={1: el.RateLimiter(1, 1)})


def test_a_command_may_set_its_own_attempts_and_timeout(setup):
    store, scheduler, calls, flaky = setup
    flaky["failures"] = 5
    once = el.Command("Flaky", {}, command_id="f-once", context={"max_attempts": 1})
    scheduler.submit(once)
    scheduler.run()
    assert calls == [("f-once", 1)]  # the scheduler's max_attempts=3 does not apply
    assert scheduler.commands.history("f-once")["status"].tolist() == [
        "queued", "running", "failed", "dead",
    ]  # fmt: skip
    calls.clear()
    # 6 s is within this command's own timeout of 8 s (the scheduler's is 5 s).
    patient = el.Command("Slow", {"seconds": 6}, command_id="s-own", context={"timeout": 8})
    scheduler.submit(patient)
    scheduler.run()
    assert status(scheduler, "s-own") == "succeeded" and calls == [("s-own", 1)]
    hasty = el.Command(
        "Slow", {"seconds": 2}, command_id="s-hasty", context={"timeout": 1.5, "max_attempts": 2}
    )
    scheduler.submit(hasty)
    scheduler.run()
    history = scheduler.commands.history("s-hasty")["status"].tolist()
    assert history.count("timed_out") == 2 and history[-1] == "dead"


def test_a_running_orphan_with_one_attempt_is_buried_on_recovery(setup):
    store, scheduler, calls, _ = setup
    scheduler.submit(el.Command("Ping", {"n": 8}, command_id="c-8", context={"max_attempts": 1}))
    scheduler.commands.set_status("c-8", "running", attempts=1)
    again = el.CommandScheduler(store, scheduler.executor)
    assert status(again, "c-8") == "dead"
    assert again.run() == 0 and calls == []


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"max_attempts": 0}, r"sets max_attempts=0 in its context; give an int of 1 or more"),
        ({"max_attempts": True}, r"sets max_attempts=True"),
        ({"timeout": -1}, r"sets timeout=-1 in its context; give a positive number of seconds"),
        ({"timeout": "5"}, r"sets timeout='5'"),
    ],
)
def test_bad_command_overrides_are_refused_at_submit(setup, context, message):
    store, scheduler, _, _ = setup
    with pytest.raises(el.CommandError, match=message):
        scheduler.submit(el.Command("Ping", {"n": 1}, command_id="bad", context=context))
    assert scheduler.pending() == 0


def test_a_burst_behind_a_rate_limit_is_held_once_per_command(setup, clock):
    store, scheduler, _, _ = setup
    limiter = el.RateLimiter(rate=2, capacity=1, clock=clock, name="api")
    limited = el.CommandScheduler(
        store, scheduler.executor, batch_size=50, limits={"Ping": limiter}
    )
    limited.submit_many([el.Command("Ping", {"n": n}, command_id=f"p-{n}") for n in range(40)])
    limited.run()
    assert limited.commands.counts() == {"succeeded": 40}
    history = store.sql("SELECT status, error FROM command_history WHERE status = 'queued'")
    holds = history["error"].str.startswith("rate limit").sum()
    # Each command but the first is held once, to its own slot (not woken with all
    # the others at the first free token and held again: quadratic).
    assert holds == 39
    started = limited.commands.df()["started_at"]
    gaps = {(b - a).total_seconds() for a, b in zip(started, started[1:], strict=False)}
    assert gaps == {0.5}
    assert limited.next_due() is None


def test_next_due_is_the_earliest_queued_command(setup, clock):
    store, scheduler, _, flaky = setup
    assert scheduler.next_due() is None
    flaky["failures"] = 1
    scheduler.submit(el.Command("Flaky", {}, command_id="f-1"))
    assert scheduler.next_due() == clock.current
    scheduler.run(until_idle=False)
    assert scheduler.next_due() == clock.current + timedelta(seconds=10)


# ---------------------------------------------------------------------- review fixes


def bounded(scheduler, batches=200):
    """Make ``scheduler.run`` fail, not hang, if it keeps taking batches."""
    real = scheduler._run_batch
    count = {"batches": 0}

    def run_batch(limit):
        count["batches"] += 1
        if count["batches"] > batches:
            raise AssertionError(f"run() took more than {batches} batches: a busy loop")
        return real(limit)

    scheduler._run_batch = run_batch
    return count


def half_open_breaker(clock, name="pay"):
    breaker = el.CircuitBreaker(failure_threshold=1, cool_down=30, clock=clock, name=name)
    breaker.record_failure()
    clock.advance(timedelta(seconds=31))
    assert breaker.state == "half-open"
    return breaker


def test_a_trial_run_interrupted_by_ctrl_c_does_not_leak_the_breakers_slot(setup, clock):
    store, scheduler, calls, _ = setup
    executor = scheduler.executor
    interrupt = {"once": True}

    @executor.handler("Charge")
    def charge(command, ctx):
        calls.append((command.command_id, ctx.attempt))
        if interrupt.pop("once", False):
            raise KeyboardInterrupt  # the user pressed Ctrl-C in the notebook
        return {"charge-1": [el.Event("Charged", {})]}

    breaker = half_open_breaker(clock)
    guarded = el.CommandScheduler(store, executor, breakers={"Charge": breaker})
    guarded.submit(el.Command("Charge", {}, command_id="c-1"))
    with pytest.raises(KeyboardInterrupt):
        guarded.run()
    assert status(guarded, "c-1") == "queued" and store.version("charge-1") == 0
    assert breaker.state == "half-open"  # the interrupted trial counted neither way
    count = bounded(guarded)
    assert guarded.run() == 1
    assert count["batches"] == 2  # the command's, then an empty one
    assert status(guarded, "c-1") == "succeeded" and breaker.state == "closed"
    assert calls == [("c-1", 1), ("c-1", 1)]  # the interrupted attempt was undone
    assert guarded.commands.history("c-1")["status"].tolist() == ["queued", "running", "succeeded"]


def test_a_command_behind_a_trial_someone_else_holds_waits_and_run_returns(setup, clock):
    store, scheduler, calls, _ = setup
    breaker = half_open_breaker(clock)
    guarded = el.CommandScheduler(
        store, scheduler.executor, timeout=timedelta(seconds=5), breakers={"Ping": breaker}
    )
    breaker.check()  # another caller's trial call is in flight
    guarded.submit(el.Command("Ping", {"n": 1}, command_id="p-1"))
    began = clock.current
    count = bounded(guarded)
    assert guarded.run() == 1  # returns: advancing the clock cannot end that trial
    assert calls == [] and status(guarded, "p-1") == "queued"
    holds = guarded.commands.history("p-1")
    assert holds["status"].tolist() == ["queued", "queued"]  # submitted, held once
    assert holds["error"].iloc[1] == (
        f"circuit 'pay' busy; waits until {(began + timedelta(seconds=5)).isoformat()}"
    )
    assert count["batches"] == 2  # the hold, then none due
    assert clock.current == began and guarded.next_due() == began + timedelta(seconds=5)
    breaker.record_success()  # that trial ended well: the breaker closes
    guarded.run()
    assert status(guarded, "p-1") == "succeeded" and calls == [("p-1", 1)]


def test_holds_behind_a_busy_breaker_do_not_stop_other_work(setup, clock):
    store, scheduler, calls, flaky = setup
    breaker = half_open_breaker(clock)
    guarded = el.CommandScheduler(
        store,
        scheduler.executor,
        timeout=timedelta(seconds=5),
        backoff=el.RetryPolicy.fixed(60, max_attempts=3),
        breakers={"Ping": breaker},
    )
    breaker.check()
    began = clock.current
    flaky["failures"] = 2
    guarded.submit(el.Command("Ping", {"n": 1}, command_id="p-1"))
    guarded.submit(el.Command("Flaky", {}, command_id="f-1"))
    bounded(guarded)
    guarded.run()
    # The Flaky retries (a minute apart) ran to the end; the Ping still waits for the
    # trial, held again every timeout (5 s) meanwhile, and run() then returned.
    assert status(guarded, "f-1") == "succeeded"
    assert [c for c in calls if c[0] == "f-1"] == [("f-1", 1), ("f-1", 2), ("f-1", 3)]
    assert clock.current == began + timedelta(seconds=120)
    assert status(guarded, "p-1") == "queued"
    assert guarded.commands.history("p-1")["status"].tolist() == ["queued"] * 26


def test_an_uncapped_exponential_backoff_buries_the_command_instead_of_jamming(setup, clock):
    store, scheduler, calls, flaky = setup
    flaky["failures"] = 100
    patient = el.CommandScheduler(
        store,
        scheduler.executor,
        max_attempts=50,
        backoff=el.RetryPolicy.exponential(1, max_attempts=50),
        batch_size=2,
    )
    patient.submit(el.Command("Flaky", {}, command_id="f-1"))
    patient.submit(el.Command("Ping", {"n": 1}, command_id="p-1"))
    patient.run()
    row = patient.commands.get("f-1")
    # 2**37 s after the 38th attempt (in year 8000-something) would pass the year 9999.
    assert (row["status"], row["attempts"]) == ("dead", 38)
    assert row["error"].startswith("ConnectionError: payment service down (not retried: ")
    assert "would fall after the year 9999" in row["error"]
    assert "give the backoff a max_delay" in row["error"]
    assert status(patient, "p-1") == "succeeded"
    assert patient.run() == 0  # nothing jammed


def test_a_failure_in_the_schedulers_bookkeeping_buries_only_that_command(setup, monkeypatch):
    store, scheduler, calls, _ = setup
    grouped = el.CommandScheduler(store, scheduler.executor, batch_size=3)
    heard = []
    grouped.executor.subscribe(lambda o: heard.append((o.command_id, o.status)))
    real = grouped.log.record_run

    def record_run(command, *args):
        if command.command_id == "c-2":
            raise RuntimeError("disk on fire")
        return real(command, *args)

    monkeypatch.setattr(grouped.log, "record_run", record_run)
    grouped.submit_many([el.Command("Ping", {"n": n}, command_id=f"c-{n}") for n in (1, 2, 3)])
    outcomes = grouped.run_batch()
    assert [(o.command_id, o.status) for o in outcomes] == [
        ("c-1", "succeeded"),
        ("c-2", "dead"),
        ("c-3", "succeeded"),
    ]
    assert heard == [("c-1", "succeeded"), ("c-2", "dead"), ("c-3", "succeeded")]
    # c-2's run went through its handler, then was undone with its bookkeeping.
    assert [c for c, _ in calls] == ["c-1", "c-2", "c-3"]
    assert (store.version("ping-1"), store.version("ping-2"), store.version("ping-3")) == (1, 0, 1)
    row = grouped.commands.get("c-2")
    assert (row["status"], row["attempts"]) == ("dead", 0)
    assert row["error"] == (
        "the scheduler could not handle this command (RuntimeError: disk on fire); its run, "
        "if any, was undone. Fix the cause, then requeue it with scheduler.requeue('c-2')"
    )
    assert grouped.commands.history("c-2")["status"].tolist() == ["queued", "dead"]
    monkeypatch.undo()
    grouped.requeue("c-2")
    grouped.run()
    assert status(grouped, "c-2") == "succeeded" and store.version("ping-2") == 1


def test_a_stored_command_with_a_bad_context_is_buried_not_jamming_the_queue(setup):
    store, scheduler, calls, _ = setup
    # Added straight to the command store, so submit() never checked its context.
    scheduler.commands.add(el.Command("Ping", {"n": 1}, command_id="bad", context={"timeout": 0}))
    scheduler.submit(el.Command("Ping", {"n": 2}, command_id="good"))
    scheduler.run()
    row = scheduler.commands.get("bad")
    assert row["status"] == "dead"
    assert (
        "could not handle this command (CommandError: command 'bad' sets timeout=0"
        in (row["error"])
    )
    assert status(scheduler, "good") == "succeeded" and calls == [("good", 1)]
    # The same when a restart finds it left running.
    scheduler.commands.add(
        el.Command("Ping", {"n": 3}, command_id="orphan", context={"timeout": 0})
    )
    scheduler.commands.set_status("orphan", "running", attempts=1)
    again = el.CommandScheduler(store, scheduler.executor)
    assert status(again, "orphan") == "dead"


def test_backoff_must_be_a_retry_policy(setup):
    store, scheduler, _, _ = setup
    for backoff in (5, "fixed", timedelta(seconds=5)):
        with pytest.raises(el.CommandError, match=r"backoff must be an el.RetryPolicy, got "):
            el.CommandScheduler(store, scheduler.executor, backoff=backoff)


def test_a_rate_limiter_too_small_for_one_command_is_refused(setup, clock):
    store, scheduler, _, _ = setup
    limiter = el.RateLimiter(rate=0.5, capacity=0.5, clock=clock, name="api")
    with pytest.raises(
        el.CommandError,
        match=r"limits\['Ping'\] holds 0.5 token\(s\), but each command takes one.*"
        r"capacity=1\) for one command every 2 s",
    ):
        el.CommandScheduler(store, scheduler.executor, limits={"Ping": limiter})


def test_subscribers_hear_expired_and_dead_outcomes(setup, clock):
    store, scheduler, _, flaky = setup
    heard = []
    scheduler.executor.subscribe(lambda o: heard.append((o.command_id, o.status, o.attempt)))
    flaky["failures"] = 5
    scheduler.submit(el.Command("Ping", {"n": 1}, command_id="late", deadline=START))
    scheduler.submit(el.Command("Flaky", {}, command_id="f-1"))
    clock.advance(timedelta(seconds=1))
    scheduler.run()
    assert heard == [
        ("late", "expired", 0),
        ("f-1", "failed", 1),
        ("f-1", "failed", 2),
        ("f-1", "failed", 3),
        ("f-1", "dead", 3),
    ]
    assert status(scheduler, "late") == "expired" and status(scheduler, "f-1") == "dead"


def test_the_backoffs_retry_on_is_honoured(setup):
    store, scheduler, calls, _ = setup
    executor = scheduler.executor
    errors = {"bug": KeyError("order_id"), "refused": ConnectionRefusedError("no")}

    @executor.handler("Raise")
    def raise_(command, ctx):
        calls.append((command.command_id, ctx.attempt))
        raise errors[command.command_id]

    policy = el.RetryPolicy.fixed(10, max_attempts=3, retry_on=(ConnectionError, TimeoutError))
    picky = el.CommandScheduler(store, executor, backoff=policy)
    picky.submit(el.Command("Raise", {}, command_id="bug"))
    picky.submit(el.Command("Raise", {}, command_id="refused"))
    picky.run()
    row = picky.commands.get("bug")
    assert (row["status"], row["attempts"]) == ("dead", 1)
    assert row["error"] == (
        "KeyError: 'order_id' (not retried: the backoff retries only ConnectionError, TimeoutError)"
    )
    # A subclass of a listed exception is retried, up to max_attempts.
    assert [c for c in calls if c[0] == "refused"] == [
        ("refused", 1),
        ("refused", 2),
        ("refused", 3),
    ]
    assert picky.commands.get("refused")["error"] == "ConnectionRefusedError: no"


def test_the_backoffs_max_attempts_applies_unless_the_scheduler_sets_its_own(setup):
    store, scheduler, calls, flaky = setup
    policy = el.RetryPolicy.fixed(10, max_attempts=5)
    assert el.CommandScheduler(store, scheduler.executor, backoff=policy).max_attempts == 5
    assert el.CommandScheduler(store, scheduler.executor).max_attempts == 3
    own = el.CommandScheduler(store, scheduler.executor, backoff=policy, max_attempts=2)
    assert own.max_attempts == 2
    flaky["failures"] = 10
    el.CommandScheduler(store, scheduler.executor, backoff=policy).submit(
        el.Command("Flaky", {}, command_id="f-5")
    )
    el.CommandScheduler(store, scheduler.executor, backoff=policy).run()
    assert calls == [("f-5", n) for n in range(1, 6)]
    assert status(scheduler, "f-5") == "dead"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda s: el.CommandScheduler(s.store, s.executor, timeout="30"),
            r"timeout must be a positive timedelta or number of seconds, got str: '30'; "
            r"e\.g\. timeout=timedelta\(seconds=30\)",
        ),
        (lambda s: el.CommandScheduler(s.store, s.executor, timeout=None), r"got NoneType: None"),
        (
            lambda s: el.CommandScheduler(s.store, s.executor, timeout=float("inf")),
            r"at most 8\.64e\+13 s \(a timedelta's range\), got float: inf",
        ),
        (lambda s: el.CommandScheduler(s.store, s.executor, timeout=float("nan")), r"float: nan"),
        (lambda s: el.CommandScheduler(s.store, s.executor, timeout=True), r"got bool: True"),
        (
            lambda s: s.submit(el.Command("Ping", {"n": 1}, context={"timeout": 1e15})),
            r"sets timeout=1000000000000000.0 in its context; give a positive number of "
            r"seconds, at most 8.64e\+13",
        ),
        (
            lambda s: s.submit({"type": "Ping"}),
            r"submit\(\) takes an el\.Command, got dict: \{'type': 'Ping'\}; wrap it",
        ),
        (lambda s: s.submit(None), r"submit\(\) takes an el\.Command, got NoneType"),
        (
            lambda s: s.run(max_commands="a"),
            r"max_commands must be None \(no limit\) or an int of 0 or more, got 'a'",
        ),
        (lambda s: s.run(max_commands=-1), r"got -1"),
    ],
)
def test_bad_arguments_raise_command_errors_naming_the_fix(setup, make, message):
    store, scheduler, calls, _ = setup
    with pytest.raises(el.CommandError, match=message):
        make(scheduler)
    assert scheduler.pending() == 0 and calls == []


def test_a_requeued_dead_command_is_not_finished_until_it_ends_again(setup, clock):
    store, scheduler, calls, flaky = setup
    flaky["failures"] = 4
    scheduler.submit(el.Command("Flaky", {}, command_id="f-1"))
    scheduler.run()  # three failures, 10 s apart: dead at START + 20 s
    assert scheduler.commands.get("f-1")["finished_at"] == START + timedelta(seconds=20)
    clock.advance(timedelta(seconds=40))
    scheduler.requeue("f-1")
    row = scheduler.commands.get("f-1")
    assert (row["status"], row["finished_at"]) == ("queued", None)
    assert scheduler.run_once().status == "failed"  # its fourth failure: queued for a retry
    row = scheduler.commands.get("f-1")
    # Not a finish before its start: command_stats would count a negative duration.
    assert (row["status"], row["started_at"], row["finished_at"]) == (
        "queued",
        START + timedelta(seconds=60),
        None,
    )
    assert el.analytics.command_stats(store)["p50_duration"].isna().all()
    clock.advance(timedelta(seconds=10))
    scheduler.run()
    row = scheduler.commands.get("f-1")
    assert (row["status"], row["started_at"], row["finished_at"]) == (
        "succeeded",
        START + timedelta(seconds=70),
        START + timedelta(seconds=70),
    )
