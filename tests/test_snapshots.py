"""Snapshots: same states as a full replay, on every axis of time travel, only faster."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eventlab as el

START = datetime(2024, 1, 1, tzinfo=UTC)


def add(total, event):
    return total + event.data["n"]


class Counter(el.Aggregate):
    snapshot_every = 3

    def __init__(self, id):
        super().__init__(id)
        self.total = 0
        self.seen: list[int] = []

    def add(self, n, **when):
        self.emit("Added", {"n": n}, **when)

    def apply_Added(self, event):
        self.total += event.data["n"]
        self.seen.append(event.data["n"])


def new_store():
    return el.EventStore(clock=el.SimulatedClock(START, step=timedelta(minutes=1)))


def tamper(store, reducer_name, version, state):
    """Overwrite a stored snapshot, to prove whether a load used it."""
    store._cursor().execute(
        "UPDATE snapshots SET state = $1 WHERE reducer = $2 AND version = $3",
        [json.dumps(state), reducer_name, version],
    )


COUNTER = f"{__name__}.Counter"


def save_counter(store, values):
    counter = Counter.load(store, "c-1")
    for n in values:
        counter.add(n)
        counter.save(store)
    return counter


def test_save_snapshots_when_the_stream_crosses_a_multiple():
    store = new_store()
    save_counter(store, [1, 2, 3, 4, 5, 6, 7])
    rows = store.sql("SELECT stream_id, reducer, version, state FROM snapshots ORDER BY version")
    assert rows["version"].tolist() == [3, 6]
    assert rows["reducer"].tolist() == [COUNTER, COUNTER]
    assert json.loads(rows["state"][1]) == {"id": "c-1", "total": 21, "seen": [1, 2, 3, 4, 5, 6]}
    # A save of several events that jumps over a multiple snapshots at its end.
    counter = Counter.load(store, "c-1")
    for n in (8, 9, 10):
        counter.add(n)
    counter.save(store)
    assert store.sql("SELECT max(version) AS v FROM snapshots")["v"][0] == 10


def test_load_starts_from_the_latest_snapshot_and_replays_the_rest():
    store = new_store()
    save_counter(store, [1, 2, 3, 4, 5, 6, 7])
    tamper(store, COUNTER, 6, {"id": "c-1", "total": 1000, "seen": []})
    counter = Counter.load(store, "c-1")
    assert (counter.total, counter.seen, counter.version) == (1007, [7], 7)
    # Asking for version 5 uses the snapshot at 3, which is untouched.
    assert Counter.load(store, "c-1", version=5).total == 15


def test_a_snapshot_of_another_schema_version_is_ignored():
    store = new_store()
    save_counter(store, [1, 2, 3])
    tamper(store, COUNTER, 3, {"id": "c-1", "total": 1000, "seen": []})

    class CounterV2(Counter):
        schema_version = 2

    CounterV2.__qualname__ = "Counter"  # same reducer name, newer state shape
    assert CounterV2.load(store, "c-1").total == 6
    assert Counter.load(store, "c-1").total == 1000


def test_time_travel_uses_a_snapshot_only_when_all_its_events_are_inside_the_window():
    store = new_store()
    save_counter(store, [1, 2, 3, 4])  # recorded at minutes 0..3
    tamper(store, COUNTER, 3, {"id": "c-1", "total": 1000, "seen": []})
    assert Counter.load(store, "c-1", known_at=START + timedelta(minutes=1)).total == 3
    assert Counter.load(store, "c-1", at=START + timedelta(minutes=1)).total == 3
    assert Counter.load(store, "c-1", known_at=START + timedelta(minutes=2)).total == 1000
    assert Counter.load(store, "c-1", at=START + timedelta(minutes=2)).total == 1000
    # A late correction that occurred before the snapshot's events keeps it usable for
    # today's state, but business time before its last event cannot use it.
    counter = Counter.load(store, "c-1")
    counter.add(10, occurred_at=START - timedelta(days=1))
    counter.save(store)
    assert Counter.load(store, "c-1").total == 1014
    assert Counter.load(store, "c-1", at=START).total == 11


def test_a_revert_after_the_snapshot_replays_from_the_start():
    store = new_store()
    save_counter(store, [1, 2, 3, 4])
    store.revert("c-1", to_version=1)
    tamper(store, COUNTER, 3, {"id": "c-1", "total": 1000, "seen": []})
    counter = Counter.load(store, "c-1")
    assert (counter.total, counter.seen, counter.version) == (1, [1], 5)


def test_function_reducers_opt_in_with_snapshots_and_rebuild():
    store = new_store()
    store.append("a", [el.Event("Added", {"n": n}) for n in range(1, 8)])
    store.append("b", [el.Event("Added", {"n": 100})])
    every_two = el.Snapshots(add, every=2, name="totals")
    assert store.rebuild_snapshots(every_two, initial=0) == 3
    rows = store.sql("SELECT stream_id, version, state FROM snapshots ORDER BY version")
    assert rows.values.tolist() == [["a", 2, "3"], ["a", 4, "10"], ["a", 6, "21"]]
    tamper(store, "totals", 6, 500)
    assert store.state_at("a", every_two, initial=0) == 507
    assert store.state_at("a", add, initial=0) == 28  # the plain reducer shares nothing
    # Rebuilding replaces the reducer's snapshots (the tampered one included).
    assert store.rebuild_snapshots(every_two, initial=0) == 3
    assert store.state_at("a", every_two, initial=0) == 28


def test_snapshots_as_a_decorator():
    @el.Snapshots(every=1, schema_version=3)
    def total(state, event):
        return state + event.data["n"]

    store = new_store()
    store.append("a", [el.Event("Added", {"n": 2}), el.Event("Added", {"n": 5})])
    assert store.rebuild_snapshots(total, initial=0) == 2
    assert store.sql("SELECT DISTINCT schema_version FROM snapshots")["schema_version"][0] == 3
    assert store.state_at("a", total, initial=0) == 7


def test_a_state_that_is_not_json_writes_nothing():
    class Bag(el.Aggregate):
        snapshot_every = 1

        def __init__(self, id):
            super().__init__(id)
            self.things = set()

        def apply_Put(self, event):
            self.things.add(event.data["x"])

    store = new_store()
    bag = Bag.load(store, "bag-1")
    bag.emit("Put", {"x": 1})
    with pytest.raises(el.EventlabError, match="cannot snapshot .*JSON"):
        bag.save(store)
    assert store.head == 0


def test_rebuild_needs_a_snapshotting_reducer():
    with pytest.raises(el.EventlabError, match="takes no snapshots"):
        new_store().rebuild_snapshots(add)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(-9, 9), st.integers(-3, 0)),
        st.tuples(st.just("revert"), st.integers(0, 100), st.just(0)),
    ),
    max_size=14,
)


@settings(max_examples=40, deadline=None)
@given(history=operations, every=st.integers(1, 4), probes=st.lists(st.integers(0, 30), max_size=4))
def test_snapshots_never_change_a_state(history, every, probes):
    store = new_store()
    for kind, value, days in history:
        if kind == "add":
            when = START + timedelta(minutes=store.head, days=days)
            store.append("s", [el.Event("Added", {"n": value}, occurred_at=when)])
        elif store.version("s"):
            store.revert("s", to_version=value * store.version("s") // 100)
    snapshotted = el.Snapshots(add, every=every, name="snap")
    if store.version("s"):
        store.rebuild_snapshots(snapshotted, initial=0)
    current = store.version("s")
    for probe in probes:
        version = probe % (current + 1)
        moment = START + timedelta(minutes=probe - 5)
        for target in (
            {"version": version},
            {"at": moment},
            {"known_at": moment},
            {"at": moment, "known_at": moment + timedelta(minutes=3)},
            {},
        ):
            expected = store.state_at("s", add, initial=0, **target)
            assert store.state_at("s", snapshotted, initial=0, **target) == expected, target


def test_rebuild_snapshots_with_a_progress_bar_counts_the_events(capsys):
    store = new_store()
    store.append("a", [el.Event("Added", {"n": n}) for n in range(1, 8)])
    store.append("b", [el.Event("Added", {"n": 100})])
    every_two = el.Snapshots(add, every=2, name="totals")
    assert store.rebuild_snapshots(every_two, initial=0, progress=True) == 3
    assert "8/8" in capsys.readouterr().err
    rows = store.sql("SELECT stream_id, version, state FROM snapshots ORDER BY version")
    assert rows.values.tolist() == [["a", 2, "3"], ["a", 4, "10"], ["a", 6, "21"]]
    # With a category, the bar counts only that category's events.
    assert store.rebuild_snapshots(every_two, initial=0, category="b", progress=True) == 0
    assert "1/1" in capsys.readouterr().err
