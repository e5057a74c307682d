"""Event views: what projection handlers receive is a RecordedEvent in every attribute."""

from __future__ import annotations

import pickle
from datetime import timedelta

import pytest

import eventlab as el
from tests.conftest import START


class Recorder(el.Projection):
    """Keeps every event its handlers receive (class-level, reset per test)."""

    name = "recorder"
    schema = {"stream_id": "VARCHAR", "seen": "INTEGER"}
    received: list = []

    def on_OrderPlaced(self, event):
        Recorder.received.append(event)
        self.upsert(event.stream_id, seen=1)

    def on_ItemAdded(self, event):
        Recorder.received.append(event)


@pytest.fixture(autouse=True)
def clean():
    Recorder.received = []
    el.upcasters.remove()
    yield
    el.upcasters.remove()


def fill(store):
    store.append(
        "order-1",
        [el.Event("OrderPlaced", {"customer": "c1"}, metadata={"correlation_id": "corr-1"})],
    )
    store.append("user-1", [el.Event("Registered", {"name": "Ada"})])
    store.append(
        "order-1",
        [
            el.Event(
                "ItemAdded",
                {"sku": "pen", "price": 2.5, "tags": ["a", {"b": None}]},
                metadata={"causation_id": "cause-9", "who": "clerk"},
                occurred_at=START - timedelta(days=3),
            ),
            el.Event("ItemAdded", {"sku": "ink", "price": 1}),
        ],
    )
    store.append("order-2", [el.Event("OrderPlaced", {"customer": "c2"})])


@pytest.mark.parametrize("batch_size", [1, 2, 100])
def test_handlers_see_every_field_of_the_stored_events(store, batch_size):
    fill(store)
    el.ProjectionRunner(store, [Recorder], batch_size=batch_size).catch_up()
    stored = [e for e in store.read_all() if e.type != "Registered"]
    received = Recorder.received
    assert [e.position for e in received] == [1, 3, 4, 5]
    assert all(isinstance(e, el.RecordedEvent) for e in received)
    assert [e.to_dict() for e in received] == [e.to_dict() for e in stored]
    item = received[1]
    assert (item.event_id, item.version, item.causation_id, item.schema_version) == (
        stored[1].event_id,
        2,
        "cause-9",
        1,
    )
    assert item.metadata == {"causation_id": "cause-9", "who": "clerk"}
    assert item.metadata is item.metadata  # decoded once
    assert item.occurred_at == START - timedelta(days=3)
    assert item.recorded_at == stored[1].recorded_at != item.occurred_at
    assert received[0].correlation_id == "corr-1"
    assert item.content() == stored[1].content()
    assert repr(item) == repr(stored[1])


def test_a_pickled_view_comes_back_as_the_stored_record(store):
    fill(store)
    el.ProjectionRunner(store, [Recorder]).catch_up()
    stored = [e for e in store.read_all() if e.type != "Registered"]
    for view, record in zip(Recorder.received, stored, strict=True):
        copy = pickle.loads(pickle.dumps(view))
        assert type(copy) is el.RecordedEvent
        assert copy.to_dict() == record.to_dict()


def test_handlers_see_payloads_upcast_and_the_stored_schema_version(store):
    fill(store)

    @el.upcaster("ItemAdded", from_version=1)
    def price_in_cents(data):
        return {**data, "cents": round(data["price"] * 100)}

    el.ProjectionRunner(store, [Recorder], batch_size=2).catch_up()
    items = [e for e in Recorder.received if e.type == "ItemAdded"]
    assert [(e.data["sku"], e.data["cents"], e.schema_version) for e in items] == [
        ("pen", 250, 1),
        ("ink", 100, 1),
    ]
    assert [e.data for e in items] == [e.data for e in store.read_all(types="ItemAdded")]


def test_views_cannot_be_changed(store):
    fill(store)
    el.ProjectionRunner(store, [Recorder]).catch_up()
    view = Recorder.received[0]
    with pytest.raises(AttributeError, match="immutable"):
        view.stream_id = "order-9"


def test_a_view_batch_is_a_sequence_of_views_made_on_access(store):
    from operator import length_hint

    from eventlab.event_views import ViewBatch, view_batches
    from eventlab.schema import SELECT_RECORD

    fill(store)
    expected = list(store.read_all())
    reader = store._cursor().sql(SELECT_RECORD.format(src="events")).to_arrow_reader(100)
    (batch,) = list(view_batches(reader))
    assert isinstance(batch, ViewBatch)
    assert len(batch) == len(expected) > 2

    def fields(view):
        return view.to_dict()

    assert [fields(v) for v in batch] == [r.to_dict() for r in expected]
    assert fields(batch[-1]) == expected[-1].to_dict()
    assert [fields(v) for v in batch[1:3]] == [r.to_dict() for r in expected[1:3]]
    assert [fields(v) for v in batch[::-1]] == [r.to_dict() for r in expected[::-1]]
    with pytest.raises(IndexError):
        batch[len(expected)]
    views, counted = batch.counted_views()
    assert length_hint(counted) == len(expected)
    first = next(views)
    assert (fields(first), length_hint(counted)) == (expected[0].to_dict(), len(expected) - 1)
