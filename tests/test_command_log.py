"""Command rows travel with events through the journal: atomic, recoverable, idempotent.

The command store stages its rows in the store's transaction (see
eventlab/command_log.py and eventlab/sidetables.py). These tests check that a
transaction's events and command rows are durable together or not at all, that
savepoints undo both, that a reopened store rebuilds the tables from the journal
exactly once, and (property test) that the in-memory queue always agrees with
a plain model of FIFO-with-retries and with the DuckDB tables.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventlab as el
import eventlab.store
from eventlab.journal import Journal
from tests.conftest import START, crash


def make_executor(store):
    executor = el.CommandExecutor(store)

    @executor.handler("Ping")
    def ping(command, ctx):
        return {f"ping-{command.payload['n']}": [el.Event("Pinged", {"n": command.payload["n"]})]}

    return executor


def journal_of(path):
    return path.with_name(path.name + ".journal")


def test_events_and_command_rows_share_one_journal_record(store_path):
    store = el.EventStore(store_path, clock=el.SimulatedClock(START))
    executor = make_executor(store)
    scheduler = el.CommandScheduler(store, executor, batch_size=10)
    scheduler.submit_many([el.Command("Ping", {"n": n}, command_id=f"c-{n}") for n in range(3)])
    assert scheduler.run() == 3
    events, side = Journal.recover(journal_of(store_path), repair=False)
    assert events.num_rows == 3
    tables = [table for table, _ in side]
    # Submission: a row and a history row per command; the batch: running, row, succeeded.
    assert tables.count("commands") == 6 and tables.count("command_history") == 9
    crash(store)

    with el.EventStore(store_path) as reopened:
        commands = el.CommandStore(reopened)
        assert commands.counts() == {"succeeded": 3}
        assert list(commands.history("c-1")["status"]) == ["queued", "running", "succeeded"]
        assert reopened.sql("SELECT count(*) AS n FROM command_history")["n"][0] == 9
        assert [e.causation_id for e in reopened.read_stream("ping-2")] == ["c-2"]


def test_a_read_only_store_refuses_command_rows_it_cannot_recover_then_shows_them(store_path):
    store = el.EventStore(store_path, clock=el.SimulatedClock(START))
    scheduler = el.CommandScheduler(store, make_executor(store), batch_size=10)
    scheduler.submit_many([el.Command("Ping", {"n": n}, command_id=f"c-{n}") for n in range(3)])
    assert scheduler.run() == 3
    crash(store)
    with el.EventStore(store_path, read_only=True) as reader:
        assert reader.head == 3  # the journal's events are shown...
        with pytest.raises(el.ReadOnlyError, match="command rows that a writer .* left in its"):
            el.CommandStore(reader)  # ...its command rows cannot be: no half-true answers
    el.EventStore(store_path).close()  # a writable open recovers them
    with el.EventStore(store_path, read_only=True) as reader:
        assert el.CommandStore(reader).counts() == {"succeeded": 3}


def test_a_torn_record_loses_the_events_and_the_command_rows_together(store_path):
    store = el.EventStore(store_path, clock=el.SimulatedClock(START))
    scheduler = el.CommandScheduler(store, make_executor(store), batch_size=10)
    scheduler.submit(el.Command("Ping", {"n": 1}, command_id="c-1"))
    size_before_batch = Journal.intact_size(journal_of(store_path))
    scheduler.run()
    crash(store)
    # Cut the batch's record short: the write never finished, so it was never acknowledged.
    # (The file goes on with the zeros a synced journal writes ahead of its records.)
    with open(journal_of(store_path), "r+b") as handle:
        handle.truncate(Journal.intact_size(journal_of(store_path)) - 5)

    with el.EventStore(store_path, clock=el.SimulatedClock(START)) as reopened:
        assert reopened.version("ping-1") == 0
        commands = el.CommandStore(reopened)
        assert commands.get("c-1")["status"] == "queued"
        assert list(commands.history("c-1")["status"]) == ["queued"]
        # The command is still queued, so a new scheduler runs it, once.
        again = el.CommandScheduler(reopened, make_executor(reopened))
        assert again.run() == 1
        assert reopened.version("ping-1") == 1
    assert size_before_batch > 0


def test_recovery_is_idempotent_when_duckdb_already_holds_the_rows(store_path):
    store = el.EventStore(store_path, clock=el.SimulatedClock(START))
    scheduler = el.CommandScheduler(store, make_executor(store))
    scheduler.submit(el.Command("Ping", {"n": 1}, command_id="c-1"))
    scheduler.run()
    kept = store_path.with_name("kept.journal")
    shutil.copy(journal_of(store_path), kept)
    store.close()  # absorbs into DuckDB and empties the journal
    # A crash between DuckDB's commit and the journal being emptied leaves both.
    shutil.copy(kept, journal_of(store_path))

    with el.EventStore(store_path) as reopened:
        commands = el.CommandStore(reopened)
        assert commands.counts() == {"succeeded": 1}
        history = reopened.sql("SELECT status FROM command_history ORDER BY seq")["status"]
        assert list(history) == ["queued", "running", "succeeded"]
        assert reopened.sql("SELECT count(*) AS n FROM events")["n"][0] == 1


def test_a_savepoint_undoes_its_command_rows_with_its_events(clock_store):
    store = clock_store
    commands = el.CommandStore(store)
    with store.transaction():
        commands.add(el.Command("Ping", {"n": 1}, command_id="kept"))
        with pytest.raises(RuntimeError), store.transaction():
            store.append("x", [el.Event("Happened", {})])
            commands.add(el.Command("Ping", {"n": 2}, command_id="undone"))
            commands.set_status("kept", "running", attempts=1)
            raise RuntimeError("boom")
        # Inside the transaction the staged row reads back; the undone one is gone.
        assert commands.log.status("kept") == "queued"
        assert commands.log.status("undone") is None
    assert store.version("x") == 0
    assert list(commands.df()["command_id"]) == ["kept"]
    assert list(commands.history("kept")["status"]) == ["queued"]
    # The undone id was never stored, so it can be submitted for real now.
    assert commands.add(el.Command("Ping", {"n": 2}, command_id="undone")) is True


def test_a_rolled_back_transaction_leaves_no_command_and_no_queue_entry(clock_store):
    store = clock_store
    scheduler = el.CommandScheduler(store, make_executor(store))
    with pytest.raises(RuntimeError), store.transaction():
        scheduler.submit(el.Command("Ping", {"n": 1}, command_id="c-1"))
        raise RuntimeError("boom")
    assert scheduler.pending() == 0 and scheduler.run() == 0
    assert scheduler.commands.counts() == {}


def test_a_batch_that_fails_to_commit_gives_its_commands_back(clock_store, monkeypatch):
    store = clock_store
    scheduler = el.CommandScheduler(store, make_executor(store), batch_size=5)
    scheduler.submit_many([el.Command("Ping", {"n": n}, command_id=f"c-{n}") for n in range(3)])

    def broken_commit(tx):
        raise el.JournalError("disk full")

    real_commit = store._commit
    monkeypatch.setattr(store, "_commit", broken_commit)
    with pytest.raises(el.JournalError):
        scheduler.run_batch()
    monkeypatch.setattr(store, "_commit", real_commit)
    assert scheduler.pending() == 3
    assert [store.version(f"ping-{n}") for n in range(3)] == [0, 0, 0]
    assert [o.command_id for o in scheduler.run_batch()] == ["c-0", "c-1", "c-2"]
    assert scheduler.commands.counts() == {"succeeded": 3}


def test_record_run_refuses_bad_arguments_before_staging_anything(clock_store):
    store = clock_store
    scheduler = el.CommandScheduler(store, make_executor(store))
    log = scheduler.log
    with pytest.raises(el.CommandError, match="expected an el.Command, got dict"):
        log.add({"type": "Ping"})
    scheduler.submit(el.Command("Ping", {"n": 1}, command_id="c-1"))
    [(command, _, ticket)] = log.take_due(store.clock.peek_micros(), 1)
    now = store.clock.peek_micros()
    good = {"attempt": 1, "started": now, "status": "succeeded", "error": None}
    cases = [
        ({"attempt": 0}, r"attempt must be an int from 1 to 2147483647, got int: 0"),
        ({"attempt": "1"}, r"attempt must be an int from 1 to 2147483647, got str"),
        ({"attempt": 2**31}, r"attempt must be an int from 1 to 2147483647"),
        ({"started": 2**70}, r"started must be a datetime, an ISO 8601 string or epoch"),
        ({"started": 1.5}, r"started must be a datetime.*got float"),
        ({"status": "done"}, r"unknown command status 'done'"),
        ({"error": 5}, r"error must be a str \(why\) or None, got int"),
        ({"result": "oops"}, r"result must be the JSON text of an object or None, got str"),
        ({"result": "[1]"}, r"result must be the JSON text of an object"),
        ({"result": {"events": 1}}, r"result must be the JSON text of an object.*got dict"),
    ]
    with store.transaction():
        for bad, message in cases:
            args = {**good, "result": None, **bad}
            with pytest.raises(el.CommandError, match=message):
                log.record_run(command, args["attempt"], args["started"], args["status"],
                               args["error"], args["result"])  # fmt: skip
        assert log.status("c-1") == "queued"
        assert store._tx.side == []
    log.give_back([ticket])
    assert scheduler.run() == 1
    assert scheduler.commands.get("c-1")["status"] == "succeeded"
    with pytest.raises(el.CommandError, match="'c-1' is not one"), store.transaction():
        log.record_run(command, 2, now, "succeeded", None, None)


@pytest.fixture
def clock_store():
    with el.EventStore(clock=el.SimulatedClock(START, step=timedelta(0))) as store:
        yield store


# -------------------------------------------------------------------- property test

# A command's script: how many times it fails before succeeding (a value of
# max_attempts or more means it never succeeds), or "reject".
scripts = st.lists(
    st.one_of(st.integers(min_value=0, max_value=4), st.just("reject")), min_size=1, max_size=12
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    scripts=scripts,
    batch_size=st.integers(min_value=1, max_value=5),
    reopen_after=st.integers(min_value=0, max_value=6),
    # Small thresholds hand the rows to background absorbs while commands run.
    threshold=st.sampled_from([2, 5, 100_000]),
)
def test_queue_matches_a_model_of_fifo_with_retries(
    tmp_path_factory, scripts, batch_size, reopen_after, threshold
):
    with mock.patch.object(eventlab.store, "ABSORB_THRESHOLD", threshold):
        check_fifo_with_retries(tmp_path_factory, scripts, batch_size, reopen_after)


def check_fifo_with_retries(tmp_path_factory, scripts, batch_size, reopen_after):
    path = tmp_path_factory.mktemp("log") / "store.duckdb"
    max_attempts = 3
    clock = el.SimulatedClock(START, step=timedelta(0))
    calls: list[tuple[int, int]] = []

    def executor_for(store):
        executor = el.CommandExecutor(store)

        @executor.handler("Work")
        def work(command, ctx):
            n = command.payload["n"]
            calls.append((n, ctx.attempt))
            script = scripts[n]
            if script == "reject":
                raise el.CommandRejected("no")
            if ctx.attempt <= script:
                raise ConnectionError("flaky")
            return {f"work-{n}": [el.Event("Worked", {"n": n})]}

        return executor

    def scheduler_for(store):
        return el.CommandScheduler(
            store,
            executor_for(store),
            batch_size=batch_size,
            max_attempts=max_attempts,
            backoff=el.RetryPolicy.fixed(10, max_attempts=max_attempts),
        )

    store = el.EventStore(path, clock=clock)
    scheduler = scheduler_for(store)
    scheduler.submit_many(
        [el.Command("Work", {"n": n}, command_id=f"w-{n}") for n in range(len(scripts))]
    )
    scheduler.run(until_idle=False, max_commands=reopen_after)
    crash(store)  # no clean close: the journal carries everything
    store = el.EventStore(path, clock=clock)
    scheduler = scheduler_for(store)
    scheduler.run(until_idle=True)

    # The model: each command runs until it succeeds, is rejected or runs out of attempts.
    expected_status, expected_attempts = {}, {}
    for n, script in enumerate(scripts):
        if script == "reject":
            expected_status[n], expected_attempts[n] = "rejected", 1
        elif script < max_attempts:
            expected_status[n], expected_attempts[n] = "succeeded", script + 1
        else:
            expected_status[n], expected_attempts[n] = "dead", max_attempts
    assert sorted(calls) == sorted(
        (n, a) for n in expected_attempts for a in range(1, expected_attempts[n] + 1)
    )
    # First attempts run in submission order (FIFO).
    assert [n for n, a in calls if a == 1] == list(range(len(scripts)))
    frame = scheduler.commands.df()
    assert dict(zip(frame["command_id"], frame["status"], strict=True)) == {
        f"w-{n}": s for n, s in expected_status.items()
    }
    assert dict(zip(frame["command_id"], frame["attempts"], strict=True)) == {
        f"w-{n}": a for n, a in expected_attempts.items()
    }
    for n, status in expected_status.items():
        assert store.version(f"work-{n}") == (1 if status == "succeeded" else 0)
    assert scheduler.pending() == 0 and scheduler.log.next_due() is None
    store.close()
