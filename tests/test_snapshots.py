"""Snapshots: same states as a full replay, on every axis of time travel, only faster."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime, timedelta

import pandas as pd
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
    @el.Snapshots(every=1, schema_version=3, name="total")
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


# ---------------------------------------------------------------- snapshots and transactions


def snapshot_rows(store):
    return store.sql(
        "SELECT stream_id, version, state, last_occurred_at, last_recorded_at FROM snapshots "
        "ORDER BY stream_id, version"
    )


def test_a_snapshot_taken_in_a_transaction_that_rolls_back_is_not_kept():
    store = new_store()
    save_counter(store, [1])
    with pytest.raises(RuntimeError, match="abort"), store.transaction():
        save_counter(store, [100, 200])  # crosses version 3: a snapshot is staged
        raise RuntimeError("abort")
    assert store.version("c-1") == 1
    assert snapshot_rows(store).empty
    counter = Counter.load(store, "c-1")
    assert (counter.total, counter.seen, counter.version) == (1, [1], 1)
    # The stream goes on as if the block never ran, snapshots included.
    save_counter(store, [2, 3])
    assert snapshot_rows(store)[["version", "state"]].values.tolist() == [
        [3, json.dumps({"id": "c-1", "total": 6, "seen": [1, 2, 3]}, separators=(",", ":"))]
    ]


def test_a_snapshot_in_a_savepoint_that_rolls_back_goes_with_it_and_others_stay():
    store = new_store()
    with store.transaction():
        save_counter(store, [1, 2, 3])  # snapshot of c-1 at 3
        with pytest.raises(RuntimeError), store.transaction():
            other = Counter.load(store, "c-2")
            for n in (4, 5, 6):
                other.add(n)
            other.save(store)  # snapshot of c-2 at 3, in the savepoint
            raise RuntimeError("undo this block only")
    rows = snapshot_rows(store)
    assert rows[["stream_id", "version"]].values.tolist() == [["c-1", 3]]
    assert store.version("c-2") == 0


def test_a_snapshot_committed_in_a_transaction_has_the_time_bounds_of_its_events():
    store = el.EventStore(clock=el.SimulatedClock(START, step=timedelta(days=1)))
    save_counter(store, [1])  # recorded on day 0
    with store.transaction():
        counter = Counter.load(store, "c-1")
        counter.add(10)  # day 1
        counter.add(100, occurred_at=START + timedelta(days=5))  # day 2, occurred on day 5
        counter.save(store)
    [row] = snapshot_rows(store).to_dict("records")
    assert row["version"] == 3
    assert row["last_recorded_at"] == pd.Timestamp(START + timedelta(days=2))
    assert row["last_occurred_at"] == pd.Timestamp(START + timedelta(days=5))
    # Time travel before the snapshot's last event does not use it.
    for when in ({"known_at": START + timedelta(hours=12)}, {"at": START + timedelta(hours=12)}):
        assert Counter.load(store, "c-1", **when).total == 1, when
    assert Counter.load(store, "c-1", known_at=START + timedelta(days=1)).total == 11
    assert Counter.load(store, "c-1", at=START + timedelta(days=4)).total == 11
    assert Counter.load(store, "c-1").total == 111


def test_a_command_that_fails_after_saving_leaves_no_snapshot():
    store = new_store()
    executor = el.CommandExecutor(store)

    @executor.handler("Add")
    def add_command(command, ctx):
        counter = Counter.load(ctx.store, "c-1")
        for n in command.payload["values"]:
            counter.add(n)
        counter.save(ctx.store)
        if command.payload.get("fail"):
            raise RuntimeError("payment gateway down")  # after the save

    assert executor.execute(el.Command("Add", {"values": [1]})).status == "succeeded"
    failed = executor.execute(el.Command("Add", {"values": [10, 100], "fail": True}))
    assert failed.status == "failed"
    assert snapshot_rows(store).empty
    assert Counter.load(store, "c-1").total == 1
    # The next command builds on the committed state, not on the rolled-back one.
    assert executor.execute(el.Command("Add", {"values": [2, 3]})).status == "succeeded"
    assert snapshot_rows(store)["version"].tolist() == [3]
    assert Counter.load(store, "c-1").total == 6


def test_a_snapshot_is_journalled_with_its_events_and_recovered_after_a_crash(tmp_path):
    from eventlab.connection import release_file

    path = tmp_path / "store.duckdb"
    store = el.EventStore(path, clock=el.SimulatedClock(START, step=timedelta(minutes=1)))
    save_counter(store, [1, 2, 3, 4])
    # Crash: no absorb, no close; the journal holds the events and the snapshot.
    store._absorber.abandon()
    store._pending.journal.close()
    store._con.close()
    store._con = None
    release_file(store)
    with el.EventStore(path) as reopened:
        rows = snapshot_rows(reopened).to_dict("records")
        assert [(r["stream_id"], r["version"]) for r in rows] == [("c-1", 3)]
        assert rows[0]["last_recorded_at"] == pd.Timestamp(START + timedelta(minutes=2))
        tamper(reopened, COUNTER, 3, {"id": "c-1", "total": 1000, "seen": []})
        assert Counter.load(reopened, "c-1").total == 1004  # the recovered snapshot is used


# ---------------------------------------------------------------- naming reducers


def make_scaled(factor):
    def scaled(total, event):
        return total + factor * event.data["n"]

    return scaled


@pytest.mark.parametrize(
    ("reducer", "kind"),
    [
        (lambda total, event: total + 1, "is a lambda"),
        (make_scaled(2), "is a function defined inside another"),
        (functools.partial(add), "has no __qualname__"),
    ],
)
def test_a_reducer_without_a_unique_name_needs_one(reducer, kind):
    with pytest.raises(el.EventlabError, match=f"{kind}.*name='order-totals'"):
        el.Snapshots(reducer, every=2)
    assert el.Snapshots(reducer, every=2, name="mine").name == "mine"


def test_a_decorated_local_function_needs_a_name_too():
    with pytest.raises(el.EventlabError, match="function defined inside another.*name="):

        @el.Snapshots(every=2)
        def total(state, event):
            return state + event.data["n"]


def test_two_named_lambdas_keep_their_own_snapshots():
    store = new_store()
    store.append("a", [el.Event("Added", {"n": n}) for n in (10, 20, 30, 40)])
    total = el.Snapshots(lambda s, e: s + e.data["n"], every=2, name="total")
    count = el.Snapshots(lambda s, e: s + 1, every=2, name="count")
    store.rebuild_snapshots(total, initial=0)
    assert store.state_at("a", count, initial=0) == 4
    assert store.state_at("a", total, initial=0) == 100


@pytest.mark.parametrize("name", ["", "  ", 5])
def test_a_bad_snapshot_name_is_refused(name):
    with pytest.raises(el.EventlabError, match="name must be a non-empty str"):
        el.Snapshots(add, every=2, name=name)


def test_snapshots_without_a_reducer_is_a_decorator_not_a_reducer():
    store = new_store()
    store.append("a", [el.Event("Added", {"n": 1})])
    with pytest.raises(el.EventlabError, match=r"has no reducer yet: it is a decorator"):
        store.state_at("a", el.Snapshots(every=2), initial=0)


# ---------------------------------------------------------------- states JSON changes


class Cart(el.Aggregate):
    snapshot_every = 2

    def __init__(self, id):
        super().__init__(id)
        self.lines = {}
        self.last = None

    def apply_Added(self, event):
        sku = event.data["sku"]
        self.lines[sku] = self.lines.get(sku, 0) + event.data["qty"]
        self.last = [sku, event.data["qty"]]


class TupleCart(Cart):
    def apply_Added(self, event):
        super().apply_Added(event)
        self.last = tuple(self.last)


@pytest.mark.parametrize(
    ("cls", "sku", "problem"),
    [
        (Cart, 7, r"\['lines'\] has the int key 7, which comes back from JSON as the str '7'"),
        (TupleCart, "a", r"\['last'\] is a tuple .*comes back from JSON as a list"),
    ],
)
def test_a_state_that_json_would_change_is_refused_and_nothing_is_written(cls, sku, problem):
    store = new_store()
    cart = cls.load(store, "cart-1")
    cart.emit("Added", {"sku": sku, "qty": 1})
    cart.emit("Added", {"sku": sku, "qty": 2})
    with pytest.raises(el.EventlabError, match=f"cannot snapshot .*{problem}.*would differ"):
        cart.save(store)
    assert store.head == 0
    assert snapshot_rows(store).empty


def test_a_plain_json_state_round_trips_through_a_snapshot():
    store = new_store()
    cart = Cart.load(store, "cart-1")
    cart.emit("Added", {"sku": "a", "qty": 1})
    cart.emit("Added", {"sku": "a", "qty": 2})
    cart.save(store)
    tamper_free = Cart.load(store, "cart-1")
    assert (tamper_free.lines, tamper_free.last) == ({"a": 3}, ["a", 2])
    assert snapshot_rows(store)["version"].tolist() == [2]


def test_rebuild_refuses_a_state_that_json_would_change_and_keeps_the_old_snapshots():
    store = new_store()
    store.append("a", [el.Event("Added", {"n": n}) for n in (1, 2)])
    totals = el.Snapshots(add, every=1, name="totals")
    assert store.rebuild_snapshots(totals, initial=0) == 2
    keyed = el.Snapshots(lambda s, e: {**s, e.data["n"]: True}, every=1, name="totals")
    with pytest.raises(el.EventlabError, match="has the int key 1"):
        store.rebuild_snapshots(keyed, initial={})
    assert snapshot_rows(store)["state"].tolist() == ["1", "3"]


@pytest.mark.parametrize("category", [1, ["a"]])
def test_rebuild_refuses_a_category_that_is_not_a_str(category):
    store = new_store()
    store.append("a", [el.Event("Added", {"n": 1})])
    with pytest.raises(el.InvalidEventError, match="category is the start of the stream ids"):
        store.rebuild_snapshots(el.Snapshots(add, every=1, name="t"), initial=0, category=category)
