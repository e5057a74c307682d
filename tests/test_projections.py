"""Projections and the runner: read models, checkpoints, failures, rebuilds, time travel."""

from __future__ import annotations

import threading
import warnings
from datetime import timedelta

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventlab as el
from tests.conftest import START, make_clock

READ_AHEAD = "eventlab-read-ahead"  # the name of the read-ahead threads


def ev(type_: str, **data) -> el.Event:
    return el.Event(type_, data)


class OrdersView(el.Projection):
    name = "orders"
    schema = {"order_id": "VARCHAR", "customer": "VARCHAR", "items": "INTEGER", "total": "DOUBLE"}

    def on_OrderPlaced(self, event):
        self.upsert(event.stream_id, customer=event.data["customer"], items=0, total=0.0)

    def on_ItemAdded(self, event):
        row = self.get(event.stream_id)
        self.upsert(
            event.stream_id, items=row["items"] + 1, total=row["total"] + event.data["price"]
        )

    def on_OrderCancelled(self, event):
        self.delete(event.stream_id)


class CustomerDays(el.Projection):
    """A composite key, and counting through get()."""

    name = "customer_days"
    schema = {"customer": "VARCHAR", "day": "DATE", "orders": "INTEGER"}
    key = ("customer", "day")

    def on_OrderPlaced(self, event):
        key = (event.data["customer"], event.occurred_at.date())
        row = self.get(key)
        self.upsert(key, orders=1 if row is None else row["orders"] + 1)


ITEMS = el.SqlProjection(
    "items_per_order",
    "SELECT stream_id, count(*) AS items, sum(CAST(data->>'price' AS DOUBLE)) AS total "
    "FROM events WHERE type = 'ItemAdded' GROUP BY stream_id",
)


def place(store, order, customer, *prices, cancel=False):
    events = [ev("OrderPlaced", customer=customer)]
    events += [ev("ItemAdded", price=p) for p in prices]
    if cancel:
        events.append(ev("OrderCancelled"))
    return store.append(order, events)


def table(store, name, order="1"):
    return store.sql(f"SELECT * FROM {name} ORDER BY {order}")


def rows(store, name, order="1"):
    return [tuple(r) for r in table(store, name, order).itertuples(index=False)]


def test_projection_builds_its_read_model(store):
    place(store, "order-1", "c1", 2.5, 1.0)
    place(store, "order-2", "c2", 4.0)
    place(store, "order-3", "c1", 1.0, cancel=True)
    store.append("user-1", [ev("Registered")])
    runner = el.ProjectionRunner(store, [OrdersView])
    # 3 placed, 4 items, 1 cancel: the user event is not even read.
    assert runner.catch_up() == 8
    assert rows(store, "orders") == [("order-1", "c1", 2, 3.5), ("order-2", "c2", 1, 4.0)]
    assert runner.checkpoint("orders") == store.head == 9
    status = runner.status().iloc[0]
    assert (status["name"], status["kind"], status["checkpoint"], status["lag"]) == (
        "orders",
        "python",
        9,
        0,
    )
    assert status["state"] == "caught up"


def test_changes_within_and_across_batches_are_equivalent(store):
    place(store, "order-1", "c1", 1.0, 2.0)
    place(store, "order-2", "c1", 3.0, cancel=True)
    store.append("order-2", [ev("OrderPlaced", customer="c9"), ev("ItemAdded", price=7.0)])
    expected = [("order-1", "c1", 2, 3.0), ("order-2", "c9", 1, 7.0)]
    for batch_size in (1, 2, 3, 1000):
        with el.EventStore() as copy:
            copy.append_frame(store.events()[["stream_id", "type", "data"]])
            el.ProjectionRunner(copy, [OrdersView], batch_size=batch_size).catch_up()
            assert rows(copy, "orders") == expected, batch_size


def test_composite_keys_and_get_of_rows_from_earlier_batches():
    clock = el.SimulatedClock(START, step=timedelta(hours=7))
    with el.EventStore(clock=clock) as store:
        for i in range(6):
            store.append(f"order-{i}", [ev("OrderPlaced", customer=f"c{i % 2}")])
        el.ProjectionRunner(store, [CustomerDays], batch_size=2).catch_up()
        got = rows(store, "customer_days", "1, 2")
    day = pd.Timestamp(START.date())  # DuckDB DATEs arrive in pandas as Timestamps
    one = timedelta(days=1)
    # Placed at 00h, 07h, 14h, 21h, 04h (+1d), 11h (+1d).
    assert got == [("c0", day, 2), ("c0", day + one, 1), ("c1", day, 2), ("c1", day + one, 1)]


def test_sql_projection_is_rebuilt_when_behind(store):
    place(store, "order-1", "c1", 2.5, 1.0)
    runner = el.ProjectionRunner(store, [ITEMS])
    assert runner.catch_up() == 3
    assert rows(store, "items_per_order") == [("order-1", 2, 3.5)]
    place(store, "order-2", "c2", 4.0)
    assert runner.catch_up() == 2
    assert rows(store, "items_per_order") == [("order-1", 2, 3.5), ("order-2", 1, 4.0)]
    assert runner.catch_up() == 0
    assert runner.status()["kind"].tolist() == ["sql"]


def test_failing_projection_stops_at_the_event_and_others_go_on(store):
    class Fragile(el.Projection):
        name = "fragile"
        schema = {"order_id": "VARCHAR", "items": "INTEGER"}
        broken = True

        def on_OrderPlaced(self, event):
            self.upsert(event.stream_id, items=0)

        def on_ItemAdded(self, event):
            if Fragile.broken and event.data["price"] < 0:
                raise ValueError("negative price")
            self.upsert(event.stream_id, items=self.get(event.stream_id)["items"] + 1)

    place(store, "order-1", "c1", 1.0, 2.0)
    place(store, "order-2", "c1", 3.0, -1.0, 5.0)
    place(store, "order-3", "c2", 1.0)
    runner = el.ProjectionRunner(store, [Fragile, OrdersView], batch_size=100)
    with pytest.warns(el.ProjectionFailedWarning, match=r"'fragile' failed at position 6 \(Item"):
        runner.catch_up()
    # Everything before the failing event was applied and committed; nothing after.
    assert rows(store, "fragile") == [("order-1", 2), ("order-2", 1)]
    assert runner.checkpoint("fragile") == 5
    assert rows(store, "orders")[-1] == ("order-3", "c2", 1, 1.0)
    status = runner.status().set_index("name")
    assert status.loc[
        "fragile", ["state", "failed_position", "failed_type", "last_error"]
    ].tolist() == [
        "failed",
        6,
        "ItemAdded",
        "ValueError: negative price",
    ]
    assert status.loc["fragile", "lag"] == store.head - 5
    assert status.loc["orders", "state"] == "caught up"
    # A failed projection is skipped until retried.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert runner.catch_up() == 0
    Fragile.broken = False
    assert runner.retry("fragile") == 4
    assert rows(store, "fragile") == [("order-1", 2), ("order-2", 3), ("order-3", 1)]
    assert runner.status().set_index("name").loc["fragile", "state"] == "caught up"


class Typed(el.Projection):
    """Stores each ItemAdded's price as its order's item count: a str does not fit."""

    name = "typed"
    schema = {"order_id": "VARCHAR", "items": "INTEGER"}

    def on_ItemAdded(self, event):
        self.upsert(event.stream_id, items=event.data["price"])


def test_a_value_that_does_not_fit_the_column_is_located_exactly(store):
    place(store, "order-1", "c1", 1, 2)
    # Within a batch only each row's last value is written, so the bad value must last.
    store.append("order-2", [ev("ItemAdded", price="lots")])
    store.append("order-3", [ev("ItemAdded", price=3)])
    runner = el.ProjectionRunner(store, [Typed])
    with pytest.warns(el.ProjectionFailedWarning, match="position 4"):
        runner.catch_up()
    assert rows(store, "typed") == [("order-1", 2)]
    status = runner.status().iloc[0]
    assert status["failed_position"] == 4 and status["failed_type"] == "ItemAdded"
    assert "lots" in status["last_error"]


def test_a_write_failing_in_a_middle_batch_is_located_and_stops_there(store):
    # Batches of two: the second one fails to write while a third waits; only the
    # first is kept, and nothing from the bad event on.
    for n, price in enumerate([1, 2, "lots", 4, 5, 6], start=1):
        store.append(f"order-{n}", [ev("ItemAdded", price=price)])
    runner = el.ProjectionRunner(store, [Typed], batch_size=2)
    with pytest.warns(el.ProjectionFailedWarning, match="position 3 "):
        assert runner.catch_up() == 2
    assert rows(store, "typed") == [("order-1", 1), ("order-2", 2)]
    assert runner.checkpoint("typed") == 2
    status = runner.status().iloc[0]
    assert (status["failed_position"], status["failed_type"]) == (3, "ItemAdded")
    assert "lots" in status["last_error"]


def test_an_error_reading_the_next_batch_keeps_the_committed_one_and_its_checkpoint(
    store, monkeypatch
):
    # Reading the second batch fails: the first stays committed, and the runner's
    # checkpoint is the stored one, so the next catch-up neither repeats nor skips.
    batches = el.runner.view_batches

    def failing_after_one(reader):
        views = batches(reader)
        yield next(views)
        views.close()
        raise OSError("the disk went away")

    for n in range(1, 7):
        store.append(f"order-{n}", [ev("ItemAdded", price=n)])
    runner = el.ProjectionRunner(store, [Typed], batch_size=2)
    monkeypatch.setattr(el.runner, "view_batches", failing_after_one)
    with pytest.raises(OSError, match="the disk went away"):
        runner.catch_up()
    assert rows(store, "typed") == [("order-1", 1), ("order-2", 2)]
    stored = store.sql("SELECT position FROM checkpoints WHERE name = 'typed'")["position"][0]
    assert runner.checkpoint("typed") == stored == 2
    monkeypatch.setattr(el.runner, "view_batches", batches)
    assert runner.catch_up() == 4
    assert rows(store, "typed") == [(f"order-{n}", n) for n in range(1, 7)]


def test_upsert_of_an_unknown_column_fails_the_projection_with_the_fix(store):
    class Typo(el.Projection):
        name = "typo"
        schema = {"order_id": "VARCHAR", "items": "INTEGER"}

        def on_OrderPlaced(self, event):
            self.upsert(event.stream_id, itmes=1)

    place(store, "order-1", "c1")
    runner = el.ProjectionRunner(store, [Typo])
    with pytest.warns(el.ProjectionFailedWarning, match=r"unknown column\(s\) \['itmes'\]"):
        runner.catch_up()


def test_rebuild_equals_incremental_and_resets_failures(store):
    place(store, "order-1", "c1", 1.0)
    runner = el.ProjectionRunner(store, [OrdersView, ITEMS])
    runner.catch_up()
    place(store, "order-2", "c2", 2.0, 3.0)
    runner.catch_up()
    before = {n: table(store, n) for n in ("orders", "items_per_order")}
    assert runner.rebuild() == 5 + 5  # every event, for each of the two projections
    for name, frame in before.items():
        pd.testing.assert_frame_equal(table(store, name), frame)


def test_changed_schema_drops_the_stale_table(store_path):
    with el.EventStore(store_path) as store:
        place(store, "order-1", "c1", 1.0)
        el.ProjectionRunner(store, [OrdersView]).catch_up()

    class OrdersV2(OrdersView):
        schema = {**OrdersView.schema, "note": "VARCHAR"}

    with el.EventStore(store_path) as store:
        runner = el.ProjectionRunner(store, [OrdersV2])
        assert runner.checkpoint("orders") == 0
        runner.catch_up()
        assert rows(store, "orders") == [("order-1", "c1", 1, 1.0, None)]


def test_checkpoints_survive_reopening(store_path):
    with el.EventStore(store_path) as store:
        place(store, "order-1", "c1", 1.0)
        el.ProjectionRunner(store, [OrdersView, ITEMS]).catch_up()
    with el.EventStore(store_path) as store:
        place(store, "order-2", "c2", 2.0)
        runner = el.ProjectionRunner(store, [OrdersView, ITEMS])
        assert runner.status()["checkpoint"].tolist() == [2, 2]
        assert runner.catch_up() == 4
        assert rows(store, "orders") == [("order-1", "c1", 1, 1.0), ("order-2", "c2", 1, 2.0)]


def test_two_runners_of_one_projection_never_apply_an_event_twice(store):
    """A notebook cell run twice makes a second runner while the first lives on (say,
    following the bus): each must continue from where the other left the read model."""
    place(store, "order-1", "c1", 1.0)
    first = el.ProjectionRunner(store, [OrdersView])
    first.catch_up()
    second = el.ProjectionRunner(store, [OrdersView])
    place(store, "order-2", "c1", 1.0, 2.0)
    store.append("order-1", [ev("ItemAdded", price=5.0)])
    assert second.catch_up() == 4
    expected = [("order-1", "c1", 2, 6.0), ("order-2", "c1", 2, 3.0)]
    assert first.checkpoint("orders") == 6
    assert first.catch_up() == 0
    assert rows(store, "orders") == expected
    assert first.status()["checkpoint"].tolist() == [6]
    store.append("order-2", [ev("ItemAdded", price=1.0)])
    assert first.catch_up() == 1
    assert second.retry("orders") == 0  # not back to second's old checkpoint
    assert second.rebuild() == 7
    store.append("order-2", [ev("OrderCancelled")])
    assert first.catch_up() == 1
    assert rows(store, "orders") == [("order-1", "c1", 2, 6.0)]


def test_a_runner_whose_projection_another_runner_redefined_refuses_to_run(store):
    place(store, "order-1", "c1", 1.0)
    old = el.ProjectionRunner(store, [OrdersView])
    old.catch_up()

    class OrdersV2(OrdersView):
        schema = {**OrdersView.schema, "note": "VARCHAR"}

    new = el.ProjectionRunner(store, [OrdersV2])  # makes the table anew
    assert new.catch_up() == 2
    for call in (old.catch_up, old.rebuild, old.status, lambda: old.retry("orders")):
        with pytest.raises(
            el.ProjectionError,
            match=r"projection 'orders' was redefined by another ProjectionRunner of this "
            r"store, .* create a new el\.ProjectionRunner with this definition",
        ):
            call()
    assert rows(store, "orders") == [("order-1", "c1", 1, 1.0, None)]
    assert new.checkpoint("orders") == 2


def test_status_lists_projections_in_the_runners_order_after_a_rebuild_and_reopen(store_path):
    """A rebuild re-inserts its checkpoint row; status() must not follow the table's order."""
    with el.EventStore(store_path) as store:
        place(store, "order-1", "c1", 1.0)
        runner = el.ProjectionRunner(store, [OrdersView, ITEMS])
        runner.rebuild("orders")
        assert runner.status()["name"].tolist() == ["orders", "items_per_order"]
    with el.EventStore(store_path) as store:
        runner = el.ProjectionRunner(store, [OrdersView, ITEMS])
        assert runner.status()["name"].tolist() == ["orders", "items_per_order"]
        assert runner.lag()["name"].tolist() == ["orders", "items_per_order"]
        other = el.ProjectionRunner(store, [ITEMS, OrdersView])
        assert other.status()["name"].tolist() == ["items_per_order", "orders"]


def test_lag_in_events_and_seconds(store):
    # The clock steps one second per event; reading the lag does not move it.
    place(store, "order-1", "c1", 1.0)  # recorded at 0 s and 1 s
    runner = el.ProjectionRunner(store, [OrdersView])
    lag = runner.lag().iloc[0]
    assert (lag["checkpoint"], lag["head"], lag["lag"]) == (0, 2, 2)
    assert lag["lag_seconds"] == (lag["sampled_at"] - START).total_seconds()
    runner.catch_up()
    assert runner.lag()["lag"].tolist() == [0]
    assert runner.lag()["lag_seconds"].tolist() == [0.0]
    history = runner.lag_history()
    assert list(history.columns) == [
        "sampled_at",
        "name",
        "checkpoint",
        "head",
        "lag",
        "lag_seconds",
    ]
    assert history["lag"].iloc[0] == 2 and history["lag"].iloc[-1] == 0
    assert history["sampled_at"].is_monotonic_increasing


def test_follow_keeps_read_models_within_every_events(store):
    runner = el.ProjectionRunner(store, [OrdersView])
    runner.follow(every=3)
    place(store, "order-1", "c1")  # 1 event: not yet
    assert runner.checkpoint("orders") == 0
    place(store, "order-2", "c2", 1.0)  # events 2, 3: the third triggers a catch-up
    assert runner.checkpoint("orders") == 3
    runner.follow(every=1)
    place(store, "order-3", "c3")
    assert runner.checkpoint("orders") == 4
    runner.unfollow()
    place(store, "order-4", "c4")
    assert runner.checkpoint("orders") == 4


def test_a_runner_following_a_closed_store_lets_go_of_the_bus(store_path, clock):
    bus = el.EventBus()
    store = el.EventStore(store_path, clock=clock, bus=bus)
    old = el.ProjectionRunner(store, [OrdersView])
    old.follow()
    place(store, "order-1", "c1")
    store.close()
    store = el.EventStore(store_path, clock=clock, bus=bus)  # reopened with the same bus
    new = el.ProjectionRunner(store, [OrdersView])
    new.follow()
    place(store, "order-2", "c2")
    assert new.checkpoint("orders") == 2
    assert len(bus.failures()) == 0  # the old runner did not catch up on a closed store
    assert list(bus.subscriptions()["name"]) == [f"projection runner {id(new):x}"]
    store.close()


def test_as_of_rebuilds_every_read_model_at_a_past_time(store):
    place(store, "order-1", "c1", 1.0)  # recorded at 0 s, 1 s
    place(store, "order-2", "c2", 2.0)  # 2 s, 3 s
    # A late correction: recorded now (4 s) but it occurred at 1.5 s.
    store.append(
        "order-1",
        [el.Event("ItemAdded", {"price": 10.0}, occurred_at=START + timedelta(seconds=1.5))],
    )
    runner = el.ProjectionRunner(store, [OrdersView, ITEMS])
    runner.catch_up()
    two_s = START + timedelta(seconds=2)
    past = runner.as_of(at=two_s)
    believed = runner.as_of(at=two_s, known_at=START + timedelta(seconds=3), label="believed")
    assert past.schema == "asof_at_20240101_000002"
    assert past.sql("SELECT * FROM orders ORDER BY 1").values.tolist() == [
        ["order-1", "c1", 2, 11.0],
        ["order-2", "c2", 0, 0.0],
    ]
    assert believed.table("orders").values.tolist() == [
        ["order-1", "c1", 1, 1.0],
        ["order-2", "c2", 0, 0.0],
    ]
    assert believed.sql("SELECT * FROM items_per_order").values.tolist() == [["order-1", 1, 1.0]]
    # Today's read models are untouched.
    assert rows(store, "orders") == [("order-1", "c1", 2, 11.0), ("order-2", "c2", 1, 2.0)]
    past.drop()
    with pytest.raises(el.EventlabError, match="asof_at_20240101_000002"):
        store.sql("SELECT * FROM asof_at_20240101_000002.orders")
    with pytest.raises(el.EventlabError, match="for reading"):
        believed.sql("DROP TABLE orders")


class Daily(el.Projection):
    """Orders per day, keyed by a DATE the handler gives as ISO text (as JSON holds it)."""

    name = "daily"
    schema = {"day": "DATE", "orders": "INTEGER"}

    def on_OrderPlaced(self, event):
        row = self.get(event.data["day"])
        self.upsert(event.data["day"], orders=(row["orders"] if row else 0) + 1)


class ByNumber(el.Projection):
    """Keyed by an INTEGER the handler gives as text."""

    name = "by_number"
    schema = {"number": "INTEGER", "orders": "INTEGER"}

    def on_OrderPlaced(self, event):
        row = self.get(str(event.data["number"]))
        self.upsert(str(event.data["number"]), orders=(row["orders"] if row else 0) + 1)


def test_a_key_given_in_another_python_type_is_found_in_later_catch_ups(store):
    runner = el.ProjectionRunner(store, [Daily, ByNumber])
    for n in range(3):  # one catch-up per event: each later one must see the stored row
        store.append(f"order-{n}", [ev("OrderPlaced", day="2024-05-01", number=7)])
        runner.catch_up()
    incremental = rows(store, "daily"), rows(store, "by_number")
    assert incremental[1] == [(7, 3)]
    assert incremental[0][0][1] == 3
    runner.rebuild()
    assert (rows(store, "daily"), rows(store, "by_number")) == incremental


class Carts(el.Projection):
    name = "carts"
    schema = {"cart": "VARCHAR", "items": "INTEGER", "total": "INTEGER"}

    def on_Added(self, event):
        row = self.get(event.stream_id) or {"items": 0, "total": 0}
        self.upsert(
            event.stream_id, items=row["items"] + 1, total=row["total"] + event.data["price"]
        )


class CartsReordered(Carts):
    schema = {"cart": "VARCHAR", "total": "INTEGER", "items": "INTEGER"}


def test_stored_rows_are_read_by_column_name_when_the_schema_is_reordered(store_path):
    with el.EventStore(store_path) as store:
        store.append("cart-1", [el.Event("Added", {"price": 100})])
        el.ProjectionRunner(store, [Carts]).catch_up()
    with el.EventStore(store_path) as store:
        runner = el.ProjectionRunner(store, [CartsReordered])
        store.append("cart-1", [el.Event("Added", {"price": 100})])
        runner.catch_up()
        query = "SELECT cart, items, total FROM carts"
        assert store.sql(query).values.tolist() == [["cart-1", 2, 200]]
        runner.rebuild()
        assert store.sql(query).values.tolist() == [["cart-1", 2, 200]]


class Totals(el.Projection):
    name = "totals"
    schema = {"order_id": "VARCHAR", "total": "INTEGER"}

    def on_OrderPaid(self, event):
        self.upsert(event.stream_id, total=event.data["total"])


class Paid(el.Projection):
    name = "paid"
    schema = {"order_id": "VARCHAR"}

    def on_OrderPaid(self, event):
        self.upsert(event.stream_id)


def test_a_bad_value_before_a_failing_handler_stops_the_projection_at_the_bad_value(store):
    store.append("order-1", [ev("OrderPaid", total=5)])
    store.append("order-2", [ev("OrderPaid", total="abc")])  # does not fit INTEGER
    store.append("order-3", [ev("OrderPaid")])  # the handler raises KeyError
    runner = el.ProjectionRunner(store, [Totals, Paid])
    with pytest.warns(el.ProjectionFailedWarning, match="position 2"):
        assert runner.catch_up() == 1 + 3
    status = runner.status().set_index("name")
    assert status.loc["totals", ["state", "checkpoint", "failed_position"]].tolist() == [
        "failed",
        1,
        2,
    ]
    assert "abc" in status.loc["totals", "last_error"]
    assert status.loc["paid", ["state", "checkpoint"]].tolist() == ["caught up", 3]
    assert rows(store, "totals") == [("order-1", 5)]


class Skus(el.Projection):
    name = "skus"
    schema = {"line": "VARCHAR", "sku": "VARCHAR", "quantity": "INTEGER"}

    def on_ItemAdded(self, event):
        data = event.data
        self.upsert(f"{event.stream_id}/{event.position}", sku=data["sku"], quantity=data["q"])


def test_values_of_different_types_in_one_column_are_written_as_one_by_one(store):
    store.append(
        "cart-1",
        [
            ev("ItemAdded", sku=123, q=1),
            ev("ItemAdded", sku="A-1", q="2"),
            ev("ItemAdded", sku=None, q=3.0),
        ],
    )
    expected = [["cart-1/1", "123", 1], ["cart-1/2", "A-1", 2], ["cart-1/3", "NULL", 3]]
    query = "SELECT line, coalesce(sku, 'NULL'), quantity FROM skus ORDER BY line"
    for batch_size in (1, 50):
        runner = el.ProjectionRunner(store, [Skus], batch_size=batch_size)
        runner.rebuild()
        assert store.sql(query).values.tolist() == expected
        assert runner.status()["state"].tolist() == ["caught up"]


class Levels(el.Projection):
    name = "levels"
    schema = {"sensor": "INTEGER", "level": "INTEGER", "n": "INTEGER"}

    def on_Measured(self, event):
        row = self.get(event.data["sensor"])
        self.upsert(event.data["sensor"], level=event.data["level"], n=(row["n"] if row else 0) + 1)

    def on_Removed(self, event):
        self.delete(event.data["sensor"])


def test_a_key_given_as_5_and_as_text_in_one_batch_gives_the_event_by_event_rows(store):
    store.append(
        "sensor-5",
        [
            el.Event("Measured", {"sensor": 5, "level": 1}),
            el.Event("Measured", {"sensor": "5", "level": 2}),
            el.Event("Measured", {"sensor": 5, "level": 3}),
            el.Event("Measured", {"sensor": 6, "level": 4}),
            el.Event("Removed", {"sensor": "6"}),
        ],
    )
    results = []
    for batch_size in (1, 50):
        runner = el.ProjectionRunner(store, [Levels], batch_size=batch_size)
        runner.rebuild()
        assert runner.status()["state"].tolist() == ["caught up"]
        results.append(rows(store, "levels"))
    assert results == [[(5, 3, 3)], [(5, 3, 3)]]


def test_handlers_that_fail_differently_on_a_second_run_stop_only_their_projection(store):
    calls = []

    class Flaky(el.Projection):
        name = "flaky"
        schema = {"order_id": "VARCHAR"}

        def on_OrderPaid(self, event):
            calls.append(event.position)
            if len(calls) in (3, 4):  # the third event, then the first one again
                raise RuntimeError("depends on the time of day")
            self.upsert(event.stream_id)

    for n in range(1, 4):
        store.append(f"order-{n}", [ev("OrderPaid", total=n)])
    runner = el.ProjectionRunner(store, [Flaky, Paid])
    with pytest.warns(el.ProjectionFailedWarning, match="different results on a second run"):
        runner.catch_up()
    status = runner.status().set_index("name")
    assert status.loc["flaky", ["state", "checkpoint", "failed_position"]].tolist() == [
        "failed",
        0,
        1,
    ]
    assert status.loc["paid", "state"] == "caught up"
    assert rows(store, "flaky") == []


def test_a_table_made_anew_for_a_changed_schema_invalidates_cached_answers(store):
    place(store, "order-1", "c1")
    el.ProjectionRunner(store, [OrdersView]).catch_up()
    queries = el.QueryBus(store)

    @queries.handler("Orders")
    def orders(q):
        return q.sql("SELECT order_id FROM orders")

    assert queries.ask("Orders")["order_id"].tolist() == ["order-1"]

    class Wider(OrdersView):
        schema = {**OrdersView.schema, "note": "VARCHAR"}

    el.ProjectionRunner(store, [Wider])  # drops the old table; nothing caught up yet
    assert queries.ask("Orders")["order_id"].tolist() == []


def test_bad_runner_arguments_name_the_fix(store):
    runner = el.ProjectionRunner(store, [OrdersView])
    with pytest.raises(el.ProjectionError, match="a projection name or a list of them, got 5"):
        runner.catch_up(5)
    with pytest.raises(el.ProjectionError, match="a projection name or a list of them"):
        runner.catch_up(["orders", 5])
    with pytest.raises(el.ProjectionError, match="a projection name or a list of them"):
        runner.rebuild(name=5)
    for timeout in ("1", -1, True, float("nan")):
        with pytest.raises(el.ProjectionError, match="timeout must be a number of seconds"):
            runner.catch_up(timeout=timeout)
    assert runner.checkpoint("orders") == 0


def test_a_schema_duckdb_cannot_make_registers_no_projection(store):
    class Good(el.Projection):
        name = "good"
        schema = {"id": "VARCHAR"}

        def on_X(self, event):
            pass

    class Misspelt(Good):
        name = "misspelt"
        schema = {"id": "VARCHR"}

    tables = "SELECT table_name FROM duckdb_tables() ORDER BY 1"
    before = store.sql(tables)["table_name"].tolist()
    with pytest.raises(el.ProjectionError, match="does not make a table: .*VARCHR.* Use DuckDB"):
        el.ProjectionRunner(store, [Good, Misspelt])
    assert store.sql(tables)["table_name"].tolist() == [*sorted({*before, "checkpoints"})]
    assert store.sql("SELECT count(*) AS n FROM checkpoints")["n"].tolist() == [0]

    class Injected(Good):
        schema = {"id": "VARCHAR, x INTEGER"}

    class TwiceKeyed(Good):
        schema = {"id": "VARCHAR", "n": "INTEGER"}
        key = ("id", "id")

    with pytest.raises(el.ProjectionError, match="must be a DuckDB type name"):
        el.ProjectionRunner(store, [Injected])
    with pytest.raises(el.ProjectionError, match="names a column twice"):
        el.ProjectionRunner(store, [TwiceKeyed])

    class Rich(Good):
        name = "rich"
        schema = {"id": "VARCHAR", "amount": "DECIMAL(10, 2)", "tags": "VARCHAR[]"}

    el.ProjectionRunner(store, [Rich])  # arguments and arrays are type names too


def test_bad_projections_are_refused(store):
    class NoName(el.Projection):
        schema = {"a": "VARCHAR"}

        def on_X(self, event):
            pass

    class Reserved(NoName):
        name = "events"

    class NoHandlers(el.Projection):
        name = "nothing"
        schema = {"a": "VARCHAR"}

    class BadKey(NoName):
        name = "badkey"
        key = "b"

    cases = [
        (NoName, "must be a plain identifier"),
        (Reserved, "'events' is taken by the store"),
        (NoHandlers, "has no handlers"),
        (BadKey, r"key names \['b'\]"),
    ]
    for projection, message in cases:
        with pytest.raises(el.ProjectionError, match=message):
            el.ProjectionRunner(store, [projection])
    with pytest.raises(el.ProjectionError, match="two projections are named 'orders'"):
        el.ProjectionRunner(store, [OrdersView, OrdersView])
    with pytest.raises(el.ProjectionError, match="needs a SELECT"):
        el.SqlProjection("x", "")
    with pytest.raises(el.ProjectionError, match="expected an el.Projection"):
        el.ProjectionRunner(store, ["orders"])
    with pytest.raises(el.ProjectionError, match="while a ProjectionRunner feeds it"):
        OrdersView().upsert("k", items=1)


def test_sql_projections_fail_early_on_bad_sql_and_late_on_bad_data(store):
    with pytest.raises(el.ProjectionError, match="nope"):
        el.ProjectionRunner(store, [el.SqlProjection("bad", "SELECT nope FROM events")])
    place(store, "order-1", "c1")
    cast = el.SqlProjection("cast", "SELECT CAST(data->>'customer' AS INTEGER) AS c FROM events")
    runner = el.ProjectionRunner(store, [cast])
    with pytest.warns(el.ProjectionFailedWarning, match="Conversion Error"):
        runner.catch_up()
    assert runner.status()[["state", "checkpoint"]].values.tolist() == [["failed", 0]]


def test_read_only_store_cannot_run_projections(store_path):
    with el.EventStore(store_path) as store:
        place(store, "order-1", "c1")
    with el.EventStore(store_path, read_only=True) as store, pytest.raises(el.ReadOnlyError):
        el.ProjectionRunner(store, [OrdersView])


# ---------------------------------------------------------------------- properties

order_events = st.lists(
    st.tuples(
        st.integers(0, 4),  # which order
        st.sampled_from(["OrderPlaced", "ItemAdded", "ItemAdded", "OrderCancelled"]),
        st.integers(1, 9),  # price
    ),
    max_size=40,
)


class Tolerant(OrdersView):
    """OrdersView that also accepts items for orders not (or no longer) placed."""

    name = "orders"

    def on_ItemAdded(self, event):
        row = self.get(event.stream_id) or {"items": 0, "total": 0.0}
        self.upsert(
            event.stream_id,
            items=(row["items"] or 0) + 1,
            total=(row["total"] or 0.0) + event.data["price"],
        )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    history=order_events,
    cuts=st.lists(st.integers(0, 40), max_size=4),
    batch_size=st.integers(1, 7),
)
def test_incremental_catch_up_equals_one_rebuild(history, cuts, batch_size):
    with el.EventStore(clock=make_clock()) as store:
        runner = el.ProjectionRunner(store, [Tolerant, ITEMS, CustomerDays], batch_size=batch_size)
        cut_points = set(cuts)
        for index, (order, kind, price) in enumerate(history):
            data = {"customer": f"c{order % 2}"} if kind == "OrderPlaced" else {"price": price}
            store.append(f"order-{order}", [el.Event(kind, data)])
            if index in cut_points:
                runner.catch_up()
        runner.catch_up()
        incremental = {n: table(store, n, "ALL") for n in runner.projections}
        runner.rebuild()
        for name, frame in incremental.items():
            pd.testing.assert_frame_equal(table(store, name, "ALL"), frame)


def test_catch_up_reads_ahead_and_a_failure_mid_read_stops_the_thread(store):
    """Batches are fetched on another thread; a handler failing mid-read leaves none behind."""

    class StopsAtOrder40(el.Projection):
        name = "stops"
        schema = {"order_id": "VARCHAR", "items": "INTEGER"}
        seen_threads: set[int] = set()

        def on_OrderPlaced(self, event):
            StopsAtOrder40.seen_threads.update(
                t.ident for t in threading.enumerate() if t.name == READ_AHEAD
            )
            if event.stream_id == "order-40":
                raise RuntimeError("stop here")
            self.upsert(event.stream_id, items=0)

    for n in range(60):
        place(store, f"order-{n}", "c1", 1.0)  # two events per order
    runner = el.ProjectionRunner(store, [StopsAtOrder40], batch_size=4)
    with pytest.warns(el.ProjectionFailedWarning, match=r"'stops' failed at position 81 "):
        runner.catch_up()
    assert StopsAtOrder40.seen_threads  # the read ahead ran while handlers did
    assert [t for t in threading.enumerate() if t.name == READ_AHEAD] == []
    assert rows(store, "stops") == [(f"order-{n}", 0) for n in sorted(range(40), key=str)]
    assert runner.checkpoint("stops") == 80
