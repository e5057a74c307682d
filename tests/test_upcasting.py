"""Upcasting: old event shapes reach reducers in today's shape; stored rows never change."""

from __future__ import annotations

import pandas as pd
import pytest

import eventlab as el


@pytest.fixture(autouse=True)
def clean_registry():
    el.upcasters.remove()
    yield
    el.upcasters.remove()


def price_in_cents(state, event):
    return state + event.data["cents"]


def store_old_events(store):
    # Written before any upcaster existed: schema version 1, price in euros.
    store.append(
        "cart-1", [el.Event("ItemAdded", {"euros": 2.5}), el.Event("ItemAdded", {"euros": 1})]
    )


def test_new_events_get_schema_version_1_without_upcasters(store):
    [recorded] = store.append("s", [el.Event("ItemAdded", {"euros": 1})])
    assert recorded.schema_version == 1
    assert el.upcasters.current_version("ItemAdded") == 1


def test_reads_apply_the_chain_and_rows_stay_as_stored(store):
    store_old_events(store)
    stored_before = store.sql("SELECT data, schema_version FROM events ORDER BY position")

    @el.upcaster("ItemAdded", from_version=1)
    def euros_to_cents(data):
        return {"cents": round(data["euros"] * 100)}

    @el.upcaster("ItemAdded", from_version=2)
    def add_currency(data):
        return {**data, "currency": "EUR"}

    assert el.upcasters.current_version("ItemAdded") == 3
    assert el.upcasters.chain("ItemAdded") == [(1, 2, "euros_to_cents"), (2, 3, "add_currency")]
    events = store.read_stream("cart-1")
    assert [e.data for e in events] == [
        {"cents": 250, "currency": "EUR"},
        {"cents": 100, "currency": "EUR"},
    ]
    assert [e.schema_version for e in events] == [1, 1]
    assert store.state_at("cart-1", price_in_cents, initial=0) == 350
    assert el.replay_all(store, price_in_cents, initial=0) == {"cart-1": 350}
    # New events are stored in today's shape with the version at the end of the chain.
    [new] = store.append("cart-1", [el.Event("ItemAdded", {"cents": 5, "currency": "EUR"})])
    assert new.schema_version == 3
    assert store.read_stream("cart-1")[-1].data == {"cents": 5, "currency": "EUR"}
    assert store.state_at("cart-1", price_in_cents, initial=0) == 355
    after = store.sql("SELECT data, schema_version FROM events ORDER BY position LIMIT 2")
    pd.testing.assert_frame_equal(after, stored_before)


def test_bulk_appends_store_the_current_schema_version(store):
    @el.upcaster("ItemAdded", from_version=1)
    def euros_to_cents(data):
        return {"cents": round(data["euros"] * 100)}

    frame = pd.DataFrame(
        {"stream_id": ["a", "a"], "type": ["ItemAdded", "Other"], "data": [{"cents": 1}, {}]}
    )
    store.append_frame(frame)
    assert [e.schema_version for e in store.read_all()] == [2, 1]
    assert [e.data for e in store.read_all()] == [{"cents": 1}, {}]


def test_registering_a_step_again_replaces_it(store):
    store_old_events(store)
    el.upcaster("ItemAdded", 1)(lambda data: {"cents": 0})

    @el.upcaster("ItemAdded", 1)
    def euros_to_cents(data):
        return {"cents": round(data["euros"] * 100)}

    assert el.upcasters.chain("ItemAdded") == [(1, 2, "euros_to_cents")]
    assert store.state_at("cart-1", price_in_cents, initial=0) == 350


def test_a_missing_step_raises_upcast_error_naming_type_and_versions(store):
    store_old_events(store)

    @el.upcaster("ItemAdded", from_version=2)
    def add_currency(data):
        return {**data, "currency": "EUR"}

    with pytest.raises(el.UpcastError) as raised:
        store.state_at("cart-1", price_in_cents, initial=0)
    message = str(raised.value)
    assert "ItemAdded" in message
    assert "from schema version 1 to 3" in message
    assert "no step from version 1 to 2" in message
    assert "@el.upcaster('ItemAdded', from_version=1)" in message
    with pytest.raises(el.UpcastError):
        el.replay_all(store, price_in_cents, initial=0)


@pytest.mark.parametrize(
    ("event_type", "from_version", "step"),
    [("", 1, lambda d: d), ("T", 0, lambda d: d), ("T", True, lambda d: d), ("T", 1, "nope")],
)
def test_bad_registrations_are_refused(event_type, from_version, step):
    with pytest.raises(el.EventlabError):
        el.upcaster(event_type, from_version)(step)
    assert not el.upcasters


class Items(el.Aggregate):
    def __init__(self, id):
        super().__init__(id)
        self.cents = 0

    def apply_ItemAdded(self, event):
        self.cents += event.data["cents"]


@pytest.mark.parametrize(
    "read",
    [
        lambda store: store.state_at("cart-1", price_in_cents, initial=0),
        lambda store: Items.load(store, "cart-1"),
        lambda store: el.replay_all(store, price_in_cents, initial=0),
        lambda store: el.replay_all(store, Items),
        lambda store: el.history(store, "cart-1", price_in_cents, initial=0),
        lambda store: store.rebuild_snapshots(el.Snapshots(price_in_cents, every=1), initial=0),
        lambda store: [event.data for event in store.read_stream("cart-1")],
        lambda store: [event.data for event in store.read_all()],
    ],
    ids=[
        "state_at",
        "load",
        "replay_all",
        "replay_all_aggregate",
        "history",
        "rebuild",
        "read_stream",
        "read_all",
    ],
)
def test_an_upcaster_that_raises_gives_upcast_error_whichever_read_meets_it(store, read):
    store_old_events(store)

    @el.upcaster("ItemAdded", from_version=1)
    def euros_to_cents(data):
        return {"cents": data["amount"]}  # a bug: the key is "euros"

    with pytest.raises(el.UpcastError) as raised:
        read(store)
    message = str(raised.value)
    assert "upcaster " in message and "euros_to_cents" in message
    assert "ItemAdded from schema version 1 to 2" in message
    assert "raised KeyError: 'amount'" in message
    assert "Fix the upcaster" in message
    assert isinstance(raised.value.__cause__, KeyError)


def test_an_upcaster_that_returns_no_dict_gives_upcast_error(store):
    store_old_events(store)

    @el.upcaster("ItemAdded", from_version=1)
    def forgot_to_return(data):
        data["cents"] = 1

    with pytest.raises(el.UpcastError, match=r"forgot_to_return .*returned NoneType None, not"):
        store.state_at("cart-1", price_in_cents, initial=0)
