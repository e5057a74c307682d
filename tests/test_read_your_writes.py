"""Inside a transaction, reads of one stream include the block's own appends."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

import eventlab as el


class Counter(el.Aggregate):
    def __init__(self, id: str):
        super().__init__(id)
        self.total = 0

    def add(self, amount: int) -> None:
        self.emit("Added", {"amount": amount})

    def apply_Added(self, event: el.RecordedEvent) -> None:
        self.total += event.data["amount"]


class SnappedCounter(Counter):
    snapshot_every = 2


def _amounts(events: list[el.RecordedEvent]) -> list[int]:
    return [event.data["amount"] for event in events]


def _added(*amounts: int) -> list[el.Event]:
    return [el.Event("Added", {"amount": amount}) for amount in amounts]


def test_read_stream_in_a_transaction_includes_its_appends(store):
    store.append("c-1", _added(1))
    with store.transaction():
        store.append("c-1", _added(2, 3))
        store.append("c-2", _added(9))
        assert _amounts(store.read_stream("c-1")) == [1, 2, 3]
        assert [e.version for e in store.read_stream("c-1")] == [1, 2, 3]
        assert _amounts(store.read_stream("c-1", from_version=2)) == [2, 3]
        assert _amounts(store.read_stream("c-1", from_version=3, to_version=3)) == [3]
        assert _amounts(store.read_stream("c-1", to_version=2)) == [1, 2]
        assert _amounts(store.read_stream("c-2")) == [9]
        assert store.read_stream("c-3") == []
        # Whole-log reads show what is committed.
        assert [e.stream_id for e in store.read_all()] == ["c-1"]
    assert _amounts(store.read_stream("c-1")) == [1, 2, 3]


def test_an_inner_block_that_raises_takes_its_events_out_of_the_reads(store):
    with store.transaction():
        store.append("c-1", _added(1))
        with pytest.raises(RuntimeError), store.transaction():
            store.append("c-1", _added(2))
            assert _amounts(store.read_stream("c-1")) == [1, 2]
            raise RuntimeError("undo the inner block")
        assert _amounts(store.read_stream("c-1")) == [1]
        store.append("c-1", _added(3))
        assert [(e.version, e.data["amount"]) for e in store.read_stream("c-1")] == [(1, 1), (2, 3)]


def test_a_rolled_back_transaction_leaves_nothing_to_read(store):
    with pytest.raises(RuntimeError), store.transaction():
        store.append("c-1", _added(1))
        raise RuntimeError("roll back")
    assert store.read_stream("c-1") == []
    assert store.state_at("c-1", Counter).total == 0


def test_load_and_save_twice_in_one_transaction(store):
    with store.transaction():
        first = Counter.load(store, "c-1")
        first.add(5)
        first.save(store)
        again = Counter.load(store, "c-1")
        assert (again.total, again.version) == (5, 1)
        again.add(7)
        again.save(store)  # expected_version=1: no ConcurrencyError
    assert (Counter.load(store, "c-1").total, store.version("c-1")) == (12, 2)


def test_state_at_a_staged_version_and_time_bounds(store, clock):
    store.append("c-1", _added(1))
    with store.transaction():
        clock.advance(timedelta(hours=1))
        store.append("c-1", _added(2))
        second = store.read_stream("c-1")[1].recorded_at
        clock.advance(timedelta(hours=1))
        store.append("c-1", _added(4))
        assert store.state_at("c-1", Counter, version=2).total == 3
        assert store.state_at("c-1", Counter, known_at=second).total == 3
        assert store.state_at("c-1", Counter, at=second).total == 3
        assert store.state_at("c-1", Counter).total == 7
        with pytest.raises(el.VersionNotFoundError):
            store.state_at("c-1", Counter, version=4)


def test_snapshots_with_staged_events(store):
    with store.transaction():
        counter = SnappedCounter.load(store, "c-1")
        for amount in (1, 2, 3):
            counter.add(amount)
        counter.save(store)  # crosses version 2: a snapshot is staged with the events
        loaded = SnappedCounter.load(store, "c-1")
        assert (loaded.total, loaded.version) == (6, 3)
    store.append("c-1", _added(10))
    with store.transaction():
        store.append("c-1", _added(100))
        loaded = SnappedCounter.load(store, "c-1")  # from the committed snapshot at 2
        assert (loaded.total, loaded.version) == (116, 5)


def test_another_thread_reads_only_what_committed(store):
    store.append("c-1", _added(1))
    seen: list[list[int]] = []
    with store.transaction():
        store.append("c-1", _added(2))
        reader = threading.Thread(target=lambda: seen.append(_amounts(store.read_stream("c-1"))))
        reader.start()
        reader.join(timeout=0.2)
        assert reader.is_alive()  # waits for the commit: the store's lock is held
    reader.join()
    assert seen == [[1, 2]]


def test_group_commit_runs_commands_on_one_aggregate_without_conflicts(clock):
    store = el.EventStore(clock=clock)
    executor = el.CommandExecutor(store)

    @executor.handler("Add")
    def add(command: el.Command, ctx: el.CommandContext) -> Counter:
        counter = Counter.load(ctx.store, "counter-1")
        counter.add(command.payload["amount"])
        return counter

    scheduler = el.CommandScheduler(store, executor, batch_size=10, max_attempts=1)
    for amount in (1, 2, 3):
        scheduler.submit(el.Command("Add", {"amount": amount}))
    assert scheduler.run(until_idle=True) == 3
    assert el.CommandStore(store).counts() == {"succeeded": 3}
    assert _amounts(store.read_stream("counter-1")) == [1, 2, 3]
    assert Counter.load(store, "counter-1").total == 6
    store.close()
