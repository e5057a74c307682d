"""Background absorbs: a full buffer's journal is handed over and absorbed on another thread.

See eventlab/absorber.py. The thread's work is held at a gate where a test
needs to look at the files mid-absorb (a crash image) or to act while it runs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

import eventlab as el
import eventlab.absorber
import eventlab.store
from eventlab.journal import Journal, journal_paths

THRESHOLD = 4


@pytest.fixture(autouse=True)
def small_threshold(monkeypatch):
    monkeypatch.setattr(eventlab.store, "ABSORB_THRESHOLD", THRESHOLD)


class Gate:
    """Holds every absorb (in the thread or a retry) until opened; can make them fail."""

    def __init__(self, monkeypatch):
        self.opened = threading.Event()
        self.entered = threading.Event()
        self.failures = 0  # how many absorbs fail next
        self.calls = 0
        real = eventlab.absorber.write_batch

        def gated(con, batch, writers):
            self.calls += 1
            self.entered.set()
            assert self.opened.wait(10), "the test never opened the gate"
            if self.failures:
                self.failures -= 1
                raise duckdb.IOException("IO Error: could not write (no space left on device)")
            real(con, batch, writers)

        monkeypatch.setattr(eventlab.absorber, "write_batch", gated)

    def open_later(self, seconds: float) -> None:
        threading.Timer(seconds, self.opened.set).start()


@pytest.fixture
def gate(monkeypatch):
    gate = Gate(monkeypatch)
    yield gate
    gate.opened.set()  # never leave a thread waiting


def absorb_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "eventlab-absorb"]


def events(n: int, start: int = 0) -> list[el.Event]:
    return [el.Event("Counted", {"n": i}) for i in range(start, start + n)]


def journal_positions(path: Path) -> list[int]:
    table, _ = Journal.recover(path, repair=False)
    return table["position"].to_pylist()


def stored(store: el.EventStore) -> list[tuple]:
    return [(e.position, e.stream_id, e.version, e.data["n"]) for e in store.read_all()]


EXPECTED = [(p, "s-1", p, p - 1) for p in range(1, 7)]


def test_a_full_buffer_is_absorbed_on_another_thread_while_appends_go_on(tmp_path, clock, gate):
    path = tmp_path / "live" / "store.duckdb"
    path.parent.mkdir()
    journal, absorbing = journal_paths(path)
    store = el.EventStore(path, clock=clock)
    try:
        store.append("s-1", events(THRESHOLD))  # fills the buffer: handed over
        assert gate.entered.wait(5)
        assert len(absorb_threads()) == 1
        assert journal_positions(absorbing) == [1, 2, 3, 4]
        assert journal_positions(journal) == []
        store.append("s-1", events(2, start=4))  # acknowledged while DuckDB absorbs
        assert journal_positions(journal) == [5, 6]
        assert store.head == 6 and store.version("s-1") == 6
        # A crash now: the image holds both journals and a DuckDB file without the rows.
        image = tmp_path / "image"
        shutil.copytree(path.parent, image)
        gate.opened.set()
        assert stored(store) == EXPECTED  # a read waits for the absorb
        assert absorb_threads() == []
        assert not absorbing.exists()
    finally:
        gate.opened.set()
        store.close()

    crashed = image / "store.duckdb"
    with el.EventStore(crashed, read_only=True) as reader:  # shows both journals' rows
        assert stored(reader) == EXPECTED
    with el.EventStore(crashed) as recovered:
        assert stored(recovered) == EXPECTED
        assert recovered.sql("SELECT count(*) AS n FROM events")["n"][0] == 6
    assert not journal_paths(crashed)[1].exists()
    with el.EventStore(crashed) as again:  # recovery ran once: nothing applied twice
        assert stored(again) == EXPECTED


def test_a_crash_after_the_absorb_committed_but_before_its_journal_was_deleted(
    tmp_path, clock, gate, monkeypatch
):
    path = tmp_path / "store.duckdb"
    kept = tmp_path / "kept.journal"
    # Keep a copy of the handed-over journal just before the thread deletes it.
    delete = Journal.delete

    def copy_then_delete(journal):
        shutil.copy(journal.path, kept)
        delete(journal)

    monkeypatch.setattr(Journal, "delete", copy_then_delete)
    gate.opened.set()
    with el.EventStore(path, clock=clock) as store:
        store.append("s-1", events(THRESHOLD))
        store.append("s-1", events(2, start=4))
    shutil.copy(kept, journal_paths(path)[1])  # as if the deletion never reached the disk
    with el.EventStore(path) as store:
        assert stored(store) == EXPECTED
        assert store.sql("SELECT count(DISTINCT position) AS n FROM events")["n"][0] == 6
        assert store.sql("SELECT count(*) AS n FROM events")["n"][0] == 6


def test_reads_and_lookups_wait_for_the_background_absorb(store_path, clock, gate):
    with el.EventStore(store_path, clock=clock) as store:
        first = store.append(
            "s-1", [el.Event("Counted", {"n": i}, event_id=f"e-{i}") for i in range(4)]
        )
        assert gate.entered.wait(5)
        gate.open_later(0.2)
        # An idempotent retry of ids handed to the absorb finds them once it commits.
        again = store.append(
            "s-1", [el.Event("Counted", {"n": i}, event_id=f"e-{i}") for i in range(4)]
        )
        assert again == first
        assert store.head == 4
        assert store.sql("SELECT count(*) AS n FROM events")["n"][0] == 4


def test_a_failed_background_absorb_is_retried_by_the_next_read(store_path, clock, gate):
    gate.failures = 1
    gate.opened.set()
    with el.EventStore(store_path, clock=clock) as store:
        store.append("s-1", events(THRESHOLD))  # its absorb fails in the thread
        store.append("s-1", events(2, start=4))  # unaffected
        assert stored(store) == EXPECTED  # retried here, then the rest absorbed
        assert gate.calls == 2
        assert not journal_paths(store_path)[1].exists()
    with el.EventStore(store_path) as store:
        assert stored(store) == EXPECTED


def test_an_absorb_that_keeps_failing_raises_on_read_and_close_and_nothing_is_lost(
    store_path, clock, gate
):
    gate.failures = 1_000
    gate.opened.set()
    store = el.EventStore(store_path, clock=clock)
    store.append("s-1", events(THRESHOLD))  # handed over; fails
    store.append("s-1", events(THRESHOLD, start=4))  # retried here, fails: buffered on
    with pytest.raises(duckdb.IOException, match="no space left"):
        store.read_all().__next__()
    with pytest.raises(duckdb.IOException, match="no space left"):
        store.close()
    assert store.closed
    gate.failures = 0  # the disk has room again
    with el.EventStore(store_path) as reopened:
        assert stored(reopened) == [(p, "s-1", p, p - 1) for p in range(1, 9)]
    assert not journal_paths(store_path)[1].exists()


def test_command_rows_handed_to_a_background_absorb_are_found(store_path, clock, gate):
    gate.opened.set()
    store = el.EventStore(store_path, clock=clock)
    executor = el.CommandExecutor(store)

    @executor.handler("Ping")
    def ping(command, ctx):
        return {f"ping-{command.payload['n']}": [el.Event("Pinged", {"n": command.payload["n"]})]}

    scheduler = el.CommandScheduler(store, executor, batch_size=1)
    ids = [scheduler.submit(el.Command("Ping", {"n": n}, command_id=f"p-{n}")) for n in range(9)]
    assert scheduler.run(until_idle=True) == 9
    assert gate.calls >= 4  # absorbs ran while commands did
    for command_id in ids:
        assert scheduler.commands.get(command_id)["status"] == "succeeded"
        assert [h["status"] for h in scheduler.commands.history(command_id).to_dict("records")] == [
            "queued",
            "running",
            "succeeded",
        ]
    assert scheduler.submit(el.Command("Ping", {"n": 0}, command_id="p-0")) == "p-0"
    assert scheduler.pending() == 0  # a known id, though its row was handed over: a no-op
    store.close()
    with el.EventStore(store_path, clock=clock) as reopened:
        frame = el.CommandStore(reopened).df()
        assert sorted(frame["command_id"]) == sorted(ids)
        assert set(frame["status"]) == {"succeeded"}
        assert reopened.sql("SELECT count(*) AS n FROM command_history")["n"][0] == 27


def test_where_the_journal_cannot_be_renamed_the_buffer_is_absorbed_in_place(
    store_path, clock, gate, monkeypatch
):
    # Windows refuses to rename an open file: the store then absorbs synchronously.
    def refuse(journal, path):
        raise PermissionError("the file is open in another process")

    monkeypatch.setattr(Journal, "move_to", refuse)
    gate.opened.set()
    with el.EventStore(store_path, clock=clock) as store:
        store.append("s-1", events(THRESHOLD))
        assert absorb_threads() == []
        assert gate.calls == 0  # no handing over
        assert store._pending.count == 0  # absorbed in the committing thread
        assert journal_positions(journal_paths(store_path)[0]) == []
        store.append("s-1", events(2, start=4))
        assert stored(store) == EXPECTED
    with el.EventStore(store_path) as store:
        assert stored(store) == EXPECTED


def test_a_program_that_ends_without_closing_lets_the_absorb_finish(store_path):
    # The thread is not a daemon: the interpreter waits for it at exit, even for a
    # slow absorb, instead of killing it inside DuckDB.
    code = (
        "import sys, time, eventlab as el, eventlab.absorber, eventlab.store\n"
        "eventlab.store.ABSORB_THRESHOLD = 50\n"
        "real = eventlab.absorber.write_batch\n"
        "def slow(*args):\n"
        "    time.sleep(0.5)\n"
        "    real(*args)\n"
        "eventlab.absorber.write_batch = slow\n"
        "store = el.EventStore(sys.argv[1])\n"
        "for n in range(60):\n"
        "    store.append('s-1', el.Event('Counted', {'n': n}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(store_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert not journal_paths(store_path)[1].exists()  # the absorb finished and cleaned up
    with el.EventStore(store_path) as store:
        assert [e.data["n"] for e in store.read_all()] == list(range(60))


def test_an_in_memory_store_absorbs_in_the_background_too(clock, gate):
    gate.opened.set()
    with el.EventStore(clock=clock) as store:
        for n in range(30):
            store.append(f"s-{n % 3}", el.Event("Counted", {"n": n}))
            if n % 7 == 0:
                assert [e.data["n"] for e in store.read_all()] == list(range(n + 1))
        assert gate.calls >= 3
        assert store.sql("SELECT count(*) AS n FROM events")["n"][0] == 30
        assert [store.version(f"s-{k}") for k in range(3)] == [10, 10, 10]


def _threads(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.execute("SELECT current_setting('threads')").fetchall()[0][0])


@pytest.mark.parametrize("fails", [False, True], ids=["absorbed", "failed"])
def test_a_background_absorb_runs_duckdb_on_one_thread_then_restores_the_setting(
    tmp_path: Path, gate: Gate, fails: bool
) -> None:
    # DuckDB's threads are a setting of the whole database: the absorb's thread sets
    # one (leaving the other cores to the appending thread) and puts back what it found.
    seen: list[int] = []
    real = eventlab.absorber.write_batch

    def observed(con, batch, writers):
        seen.append(_threads(con))
        real(con, batch, writers)

    gate.failures = int(fails)
    with el.EventStore(tmp_path / "s.duckdb") as store:
        store._con.execute("SET threads = 3")  # say a user asked for three
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(eventlab.absorber, "write_batch", observed)  # before the gate
            store.append("s-1", events(THRESHOLD))  # hands the buffer over
            assert absorb_threads()
            gate.opened.set()
            absorb_threads()[0].join(10)
            assert seen == [1]
            assert _threads(store._con) == 3
            # A failed absorb is retried by the next read, in the reading thread, which
            # waits for it: on every thread the database has.
            assert stored(store) == [(p, "s-1", p, p - 1) for p in range(1, THRESHOLD + 1)]
            assert seen == ([1, 3] if fails else [1])
            assert _threads(store._con) == 3
