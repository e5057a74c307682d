"""el.history (one stream, state after every event) and el.replay_all (every stream)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

import eventlab as el

START = datetime(2024, 1, 1, tzinfo=UTC)


class Cart(el.Aggregate):
    def __init__(self, id):
        super().__init__(id)
        self.items: list[str] = []
        self.owner = {"name": None, "city": None}

    def apply_Opened(self, event):
        self.owner = dict(event.data)

    def apply_Added(self, event):
        self.items.append(event.data["sku"])


@dataclass
class Total:
    amount: int = 0
    lines: list[int] = field(default_factory=list)


def add_to_total(state: Total, event) -> Total:
    return Total(state.amount + event.data["n"], [*state.lines, event.data["n"]])


@pytest.fixture
def carts():
    store = el.EventStore(clock=el.SimulatedClock(START, step=timedelta(minutes=1)))
    store.append("cart-1", [el.Event("Opened", {"name": "Ada", "city": "Lyon"})])
    store.append("cart-2", [el.Event("Opened", {"name": "Bo", "city": "Porto"})])
    store.append("cart-1", [el.Event("Added", {"sku": "a"}), el.Event("Added", {"sku": "b"})])
    store.append("other-1", [el.Event("Added", {"sku": "x"})])
    return store


def test_history_has_one_row_per_event_with_the_flattened_state(carts):
    frame = el.history(carts, "cart-1", Cart)
    expected = pd.DataFrame(
        {
            "version": [1, 2, 3],
            "type": ["Opened", "Added", "Added"],
            "recorded_at": pd.to_datetime(
                [START, START + timedelta(minutes=2), START + timedelta(minutes=3)], utc=True
            ),
            "occurred_at": pd.to_datetime(
                [START, START + timedelta(minutes=2), START + timedelta(minutes=3)], utc=True
            ),
            "items": [[], ["a"], ["a", "b"]],
            "owner.name": ["Ada"] * 3,
            "owner.city": ["Lyon"] * 3,
        }
    )
    pd.testing.assert_frame_equal(frame, expected, check_dtype=False)


def test_history_rows_keep_the_state_of_their_time_not_the_final_one(carts):
    # The aggregate's list is mutated in place; each row must hold a copy.
    frame = el.history(carts, "cart-1", Cart)
    assert frame["items"].tolist() == [[], ["a"], ["a", "b"]]


def test_history_with_a_dataclass_reducer_and_a_revert():
    store = el.EventStore(clock=el.SimulatedClock(START))
    store.append("t", [el.Event("Added", {"n": n}) for n in (5, 7, 9)])
    store.revert("t", to_version=1, reason="wrong amounts")
    store.append("t", [el.Event("Added", {"n": 1})])
    frame = el.history(store, "t", add_to_total, initial=Total())
    assert frame["type"].tolist() == ["Added", "Added", "Added", "Reverted", "Added"]
    assert frame["amount"].tolist() == [5, 12, 21, 5, 6]
    assert frame["lines"].tolist() == [[5], [5, 7], [5, 7, 9], [5], [5, 1]]


def test_history_of_a_missing_stream_is_an_empty_frame(carts):
    frame = el.history(carts, "cart-404", Cart)
    assert list(frame.columns) == ["version", "type", "recorded_at", "occurred_at"]
    assert frame.empty


def test_history_of_a_scalar_state():
    store = el.EventStore(clock=el.SimulatedClock(START))
    store.append("c", [el.Event("Added", {"n": 2}), el.Event("Added", {"n": 3})])
    frame = el.history(store, "c", lambda total, e: total + e.data["n"], initial=0)
    assert frame["state"].tolist() == [2, 5]


def test_replay_all_folds_every_stream_in_one_pass(carts):
    states = el.replay_all(carts, Cart)
    assert list(states) == ["cart-1", "cart-2", "other-1"]
    assert states["cart-1"].items == ["a", "b"]
    assert states["cart-1"].version == 3
    assert states["cart-2"].owner == {"name": "Bo", "city": "Porto"}
    for stream_id, state in states.items():
        loaded = Cart.load(carts, stream_id)
        assert (state.items, state.owner, state.version) == (
            loaded.items,
            loaded.owner,
            loaded.version,
        )


def test_replay_all_by_category_and_as_of_a_time(carts):
    states = el.replay_all(carts, Cart, category="cart-")
    assert list(states) == ["cart-1", "cart-2"]
    # Business time: only what occurred by the second minute (cart-1's first item).
    early = el.replay_all(carts, Cart, at=START + timedelta(minutes=2))
    assert early["cart-1"].items == ["a"]
    assert "other-1" not in early
    known = el.replay_all(carts, Cart, known_at=START + timedelta(minutes=1))
    assert set(known) == {"cart-1", "cart-2"}
    assert known["cart-1"].items == []


def test_replay_all_with_a_function_reducer_and_reverts():
    store = el.EventStore(clock=el.SimulatedClock(START))
    store.append("a", [el.Event("Added", {"n": n}) for n in (1, 2, 3)])
    store.append("b", [el.Event("Added", {"n": 10})])
    store.revert("a", to_version=1)
    store.append("a", [el.Event("Added", {"n": 100})])
    store.revert("a", to_version=4)  # back to the state the first revert produced
    states = el.replay_all(store, lambda total, e: total + e.data["n"], initial=0)
    assert states == {"a": 1, "b": 10}
    assert states["a"] == store.state_at("a", lambda t, e: t + e.data["n"], initial=0)


def test_replay_all_matches_state_at_for_every_stream_after_bulk_appends():
    store = el.EventStore(clock=el.SimulatedClock(START))
    frame = pd.DataFrame(
        {
            "stream_id": [f"s-{i % 7}" for i in range(200)],
            "type": ["Added"] * 200,
            "data": [{"n": i} for i in range(200)],
        }
    )
    store.append_frame(frame)
    total = lambda state, e: state + e.data["n"]  # noqa: E731
    states = el.replay_all(store, total, initial=0, progress=False)
    assert states == {s: store.state_at(s, total, initial=0) for s in store.streams()}
    assert sum(states.values()) == sum(range(200))


def test_replay_all_wraps_reducer_failures():
    store = el.EventStore(clock=el.SimulatedClock(START))
    store.append("a", [el.Event("Added", {"n": 1}), el.Event("Added", {})])
    with pytest.raises(el.ReplayError) as raised:
        el.replay_all(store, lambda total, e: total + e.data["n"], initial=0)
    assert (raised.value.stream_id, raised.value.version, raised.value.event_type) == (
        "a",
        2,
        "Added",
    )
    assert isinstance(raised.value.__cause__, KeyError)


def test_replay_all_hands_reducers_records_like_any_read(carts):
    import pickle

    seen = []
    el.replay_all(carts, lambda state, event: seen.append(event) or state, initial=None)
    stored = list(carts.read_all())
    assert [e.to_dict() for e in seen] == [e.to_dict() for e in stored]
    assert all(isinstance(e, el.RecordedEvent) for e in seen)
    assert [pickle.loads(pickle.dumps(e)) for e in seen] == stored
    with pytest.raises(AttributeError):
        seen[0].data = {}


def test_replay_all_gives_every_stream_its_own_copy_of_the_initial_state():
    store = el.EventStore(clock=el.SimulatedClock(START))
    store.append("a", [el.Event("Added", {"n": 1}), el.Event("Added", {"n": 2})])
    store.append("b", [el.Event("Added", {"n": 3})])

    def collect(state, event):
        state["seen"].append(event.data["n"])
        state["count"] += 1
        return state

    initial = {"seen": [], "count": 0}
    states = el.replay_all(store, collect, initial=initial)
    assert states == {"a": {"seen": [1, 2], "count": 2}, "b": {"seen": [3], "count": 1}}
    assert initial == {"seen": [], "count": 0}

    def count(state, event):
        state["count"] += 1  # mutates a flat dict: each stream still needs its own
        return state

    flat = {"count": 0, "label": ("x", 1)}
    assert el.replay_all(store, count, initial=flat) == {
        "a": {"count": 2, "label": ("x", 1)},
        "b": {"count": 1, "label": ("x", 1)},
    }
    assert flat == {"count": 0, "label": ("x", 1)}


def test_replay_all_of_aggregates_wraps_handler_failures_and_names_unknown_events():
    class Strict(el.Aggregate):
        def apply_Added(self, event):
            self.n = event.data["n"]

    class Lenient(Strict):
        ignore_unknown = True

    store = el.EventStore(clock=el.SimulatedClock(START))
    store.append("a", [el.Event("Added", {"n": 1}), el.Event("Renamed", {})])
    with pytest.raises(el.UnknownEventError, match="Strict has no handler for Renamed"):
        el.replay_all(store, Strict)
    states = el.replay_all(store, Lenient)
    assert (states["a"].n, states["a"].version) == (1, 2)
    store.append("b", [el.Event("Added", {})])
    with pytest.raises(el.ReplayError) as raised:
        el.replay_all(store, Lenient)
    assert (raised.value.stream_id, raised.value.version) == ("b", 1)
    assert isinstance(raised.value.__cause__, KeyError)


def test_replay_all_with_a_progress_bar_gives_the_same_states(carts):
    plain = el.replay_all(carts, Cart)
    shown = el.replay_all(carts, Cart, progress=True)
    assert {k: (v.items, v.version) for k, v in shown.items()} == {
        k: (v.items, v.version) for k, v in plain.items()
    }


def test_replay_all_leaves_the_garbage_collector_as_it_found_it(carts):
    import gc

    assert gc.isenabled()
    el.replay_all(carts, Cart)
    assert gc.isenabled()
    with pytest.raises(el.ReplayError):
        el.replay_all(carts, lambda state, event: 1 / 0, initial=0)
    assert gc.isenabled()
    gc.disable()
    try:
        el.replay_all(carts, Cart)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_history_rows_keep_nested_values_of_their_time():
    class Order(el.Aggregate):
        def __init__(self, id):
            super().__init__(id)
            self.lines = []
            self.tags = {"notes": [["first"]]}

        def apply_ItemAdded(self, event):
            self.lines.append({"sku": event.data["sku"], "qty": event.data["qty"]})

        def apply_QtyChanged(self, event):
            self.lines[0]["qty"] = event.data["qty"]  # changes a dict inside the list
            self.tags["notes"][0].append("changed")

    store = el.EventStore(clock=el.SimulatedClock(START))
    store.append(
        "o-1", [el.Event("ItemAdded", {"sku": "A", "qty": 1}), el.Event("QtyChanged", {"qty": 5})]
    )
    frame = el.history(store, "o-1", Order)
    assert frame["lines"].tolist() == [[{"sku": "A", "qty": 1}], [{"sku": "A", "qty": 5}]]
    assert frame["tags.notes"].tolist() == [[["first"]], [["first", "changed"]]]


def test_a_state_field_named_like_an_event_column_is_prefixed_with_state():
    store = el.EventStore(clock=el.SimulatedClock(START))
    store.append(
        "acct-1", [el.Event("Opened", {"type": "savings"}), el.Event("Deposited", {"amount": 5})]
    )

    def account(state, event):
        if event.type == "Opened":
            return {"type": event.data["type"], "version": 7, "balance": 0}
        return {**state, "balance": state["balance"] + event.data["amount"]}

    frame = el.history(store, "acct-1", account, initial={})
    assert list(frame.columns) == [
        "version",
        "type",
        "recorded_at",
        "occurred_at",
        "state.type",
        "state.version",
        "balance",
    ]
    assert frame["type"].tolist() == ["Opened", "Deposited"]
    assert frame["version"].tolist() == [1, 2]
    assert frame["state.type"].tolist() == ["savings", "savings"]
    assert frame["state.version"].tolist() == [7, 7]
    assert frame["balance"].tolist() == [0, 5]


def test_aggregates_replayed_as_of_a_time_refuse_to_save():
    class Account(el.Aggregate):
        def __init__(self, id):
            super().__init__(id)
            self.balance = 0

        def apply_Deposited(self, event):
            self.balance += event.data["n"]

        def apply_Withdrawn(self, event):
            self.balance -= event.data["n"]

    store = el.EventStore(clock=el.SimulatedClock("2024-05-10"))
    store.append(
        "acct-1",
        [
            el.Event("Deposited", {"n": 100}, occurred_at="2024-05-01"),
            el.Event("Withdrawn", {"n": 100}, occurred_at="2024-05-09"),
            el.Event("Deposited", {"n": 5}, occurred_at="2024-05-02"),  # backdated
        ],
    )
    for when in ({"at": "2024-05-03"}, {"known_at": "2024-05-10"}):
        past = el.replay_all(store, Account, **when)["acct-1"]
        past.emit("Withdrawn", {"n": 105})
        with pytest.raises(el.EventlabError, match="loaded as of the past"):
            past.save(store)
    assert store.version("acct-1") == 3
    today = el.replay_all(store, Account)["acct-1"]
    today.emit("Withdrawn", {"n": 5})
    today.save(store)
    assert Account.load(store, "acct-1").balance == 0


@pytest.mark.parametrize("category", [1, ["cart-"], b"cart-"])
def test_replay_all_refuses_a_category_that_is_not_a_str(carts, category):
    with pytest.raises(el.InvalidEventError, match="category is the start of the stream ids"):
        el.replay_all(carts, Cart, category=category)
