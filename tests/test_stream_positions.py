"""The stream position map: reads bounded by it return exactly what a full scan does."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eventlab as el
import eventlab.store as store_module
from eventlab.stream_positions import StreamPositions


@pytest.fixture
def always_map(monkeypatch):
    """Build the map for any store size, so small test stores use it."""
    monkeypatch.setattr(store_module, "should_map", lambda head: head >= 1)
    monkeypatch.setattr(store_module, "MIN_EVENTS", 1)


def test_bounds_of_each_stream(store):
    store.append("b-1", [el.Event("X", {})] * 2)
    store.append("a-1", [el.Event("X", {})])
    store.append("b-1", [el.Event("X", {})])
    store.append("é-1", [el.Event("X", {})])  # non-ASCII sorts after ASCII in both orders
    positions = StreamPositions(store._cursor(), store.head)
    assert len(positions) == 3
    assert positions.bounds("a-1") == (3, 3)
    assert positions.bounds("b-1") == (1, 4)
    assert positions.bounds("é-1") == (5, 5)
    assert positions.bounds("c-1") is None
    assert positions.bounds("") is None


def test_reads_after_the_map_see_later_events_and_new_streams(store, always_map):
    store.append("order-1", [el.Event("Placed", {"n": 1})])
    store.append("order-2", [el.Event("Placed", {"n": 2})])
    assert [e.data["n"] for e in store.read_stream("order-1")] == [1]
    assert store._positions is not None and store._positions.head == 2
    store.append("order-1", [el.Event("Paid", {"n": 3})])
    store.append("order-3", [el.Event("Placed", {"n": 4})])
    assert store._positions.head == 2  # not rebuilt: later events are found by position
    assert [e.data["n"] for e in store.read_stream("order-1")] == [1, 3]
    assert [e.data["n"] for e in store.read_stream("order-3")] == [4]
    assert store.read_stream("order-9") == []


def test_state_at_and_load_use_the_map(store, always_map):
    for i in range(3):
        store.append(f"acct-{i}", [el.Event("Deposited", {"amount": 10 * (i + 1)})] * 3)

    def balance(state, event):
        return state + event.data["amount"]

    assert store.state_at("acct-1", balance, initial=0) == 60
    assert store.state_at("acct-2", balance, initial=0, version=2) == 60
    assert store._positions is not None


def test_the_map_is_rebuilt_when_much_was_added(store, monkeypatch):
    monkeypatch.setattr(store_module, "should_map", lambda head: head >= 1)
    monkeypatch.setattr(store_module, "MIN_EVENTS", 2)
    store.append("s-1", [el.Event("X", {})])
    store.read_stream("s-1")
    first = store._positions
    store.append("s-2", [el.Event("X", {})] * 2)
    store.read_stream("s-1")
    assert store._positions is first  # 2 added: within MIN_EVENTS
    store.append("s-2", [el.Event("X", {})])
    store.read_stream("s-2")
    assert store._positions is not first and store._positions.head == 4


@settings(max_examples=30, deadline=None)
@given(
    plan=st.lists(
        st.tuples(st.sampled_from(["a-1", "b-2", "a-10", "c"]), st.integers(1, 3)),
        min_size=1,
        max_size=15,
    ),
    map_after=st.integers(0, 15),
)
def test_bounded_reads_equal_full_scans(plan, map_after):
    with el.EventStore() as store:
        for step, (stream, count) in enumerate(plan):
            if step == map_after:
                store._positions = StreamPositions(store._cursor(), store.head)
            store.append(stream, [el.Event("E", {"step": step})] * count)
        mapped = store._positions
        for stream in ["a-1", "b-2", "a-10", "c", "zz"]:
            store._positions = None
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(store_module, "should_map", lambda head: False)
                expected = store.read_stream(stream)
            if mapped is not None:
                store._positions = mapped
                with pytest.MonkeyPatch.context() as patch:
                    patch.setattr(store_module, "should_map", lambda head: True)
                    patch.setattr(store_module, "MIN_EVENTS", 10**9)
                    assert store.read_stream(stream) == expected, stream
            frame = store.events(stream) if expected else pd.DataFrame()
            assert len(frame) == len(expected)
