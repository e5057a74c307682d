"""el.shop.simulate: a deterministic, realistic shop history through the real command side."""

from __future__ import annotations

import gc
import importlib
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

import eventlab as el

START = datetime(2024, 3, 4, tzinfo=UTC)  # a Monday


def simulated(orders=15, seed=1, **kwargs):
    store = el.EventStore(clock=el.SimulatedClock(START, step=timedelta(0)))
    summary = el.shop.simulate(store, orders=orders, seed=seed, **kwargs)
    return store, summary


# ---------------------------------------------------------------------- determinism


def test_same_seed_same_history_different_seed_different_history(capsys):
    first, summary = simulated(seed=5, failure_rate=0.3, days=1)
    again, _ = simulated(seed=5, failure_rate=0.3, days=1, progress=True)
    assert "simulate" in capsys.readouterr().err  # the progress bar changed nothing
    events = first.events()
    pd.testing.assert_frame_equal(events, again.events())  # every column, ids included
    commands = first.sql("SELECT * FROM commands ORDER BY seq")
    pd.testing.assert_frame_equal(commands, again.sql("SELECT * FROM commands ORDER BY seq"))
    history = "SELECT * FROM command_history ORDER BY seq"
    pd.testing.assert_frame_equal(first.sql(history), again.sql(history))
    other, _ = simulated(seed=6, failure_rate=0.3, days=1)
    assert not set(other.events()["event_id"]) & set(events["event_id"])
    different = other.events()[["stream_id", "type", "data"]].astype(str)
    assert not different.equals(events[["stream_id", "type", "data"]].astype(str))
    assert summary["events"] == events["type"].value_counts().to_dict()


def test_event_ids_follow_the_seed_not_the_store():
    store = el.EventStore(clock=el.SimulatedClock(START))
    store.seed_event_ids("x")
    [first] = store.append("a", el.Event("Created", {}))
    other = el.EventStore(clock=el.SimulatedClock(START))
    other.seed_event_ids("x")
    assert other.append("a", el.Event("Created", {}))[0].event_id == first.event_id
    # A later seeding at another head never repeats an id of the store.
    store.seed_event_ids("x")
    [second] = store.append("b", el.Event("Created", {}))
    assert second.event_id != first.event_id
    assert second.event_id[:24] != first.event_id[:24]
    with pytest.raises(el.EventlabError, match="seed must be an int or a str"):
        store.seed_event_ids(1.5)
    with pytest.raises(el.EventlabError, match="call it before store.transaction"):
        with store.transaction():
            store.seed_event_ids(1)


# ---------------------------------------------------------------------- a realistic history


@pytest.fixture(scope="module")
def history():
    """One busy day with many faults: seed 2 shows retries, timeouts and dead letters."""
    store, summary = simulated(orders=40, seed=2, failure_rate=0.3, days=1)
    events = store.events()
    commands = el.CommandStore(store).df()
    yield store, summary, events, commands
    store.close()


def order_events(events, order_id):
    return events[events["stream_id"].str.endswith(f"-{order_id}")]


def test_every_order_ends_in_a_known_state(history):
    store, summary, events, commands = history
    statuses = commands.set_index("command_id")["status"]
    orders = events[events["type"] == "OrderPlaced"]["data"].map(lambda d: d["order_id"])
    assert len(orders) == 40
    states = {}
    for order_id in orders:
        mine = order_events(events, order_id)
        kinds = list(mine[mine["stream_id"] == f"order-{order_id}"]["type"])
        invoice = list(mine[mine["stream_id"] == f"invoice-{order_id}"]["type"])
        state = el.shop.Order.load(store, f"order-{order_id}").status
        states[order_id] = state
        if state == "shipped":  # paid, then shipped, and never refunded
            assert invoice == ["InvoiceIssued", "PaymentCharged"]
            assert kinds[-3:] == ["OrderSubmitted", "OrderPaid", "OrderShipped"]
            shipment = list(mine[mine["stream_id"] == f"shipment-{order_id}"]["type"])
            assert shipment == ["ShipmentCreated"]
            paid = mine[mine["type"] == "OrderPaid"]["data"].iloc[0]["amount_cents"]
            charged = mine[mine["type"] == "PaymentCharged"]["data"].iloc[0]["amount_cents"]
            assert paid == charged
        elif state == "cancelled":  # a charge was refunded, reserved stock released
            assert invoice in (
                [],  # cancelled before it was charged
                ["InvoiceIssued", "PaymentCharged", "PaymentRefunded"],
                ["InvoiceIssued", "PaymentDeclined"],
            )
            reserved = mine[mine["type"] == "StockReserved"]
            released = mine[mine["type"] == "StockReleased"]
            assert sorted(reserved["stream_id"]) == sorted(released["stream_id"])
            assert "OrderShipped" not in kinds
        elif state == "submitted":  # its payment ran out of attempts: a dead letter
            assert statuses[f"ChargePayment:order-{order_id}@{len(kinds)}"] == "dead"
            assert invoice == []
        else:
            raise AssertionError(f"order {order_id} ended {state}")
    assert summary["order_states"] == pd.Series(states).value_counts().to_dict()


def test_the_history_shows_retries_timeouts_dead_letters_and_rejections(history):
    store, summary, events, commands = history
    seen = set(store.sql("SELECT DISTINCT status FROM command_history")["status"])
    assert {"failed", "timed_out", "dead", "succeeded"} <= seen
    assert summary["commands"] == commands["status"].value_counts().to_dict()
    assert summary["faults"]["payments"]["down"] > 0 and summary["faults"]["breaker_opened"] > 0
    assert summary["faults"]["warehouse"]["slow"] > 0
    # Every timed-out shipment was undone: one ShipmentCreated per shipment stream.
    shipments = events[events["type"] == "ShipmentCreated"]
    assert shipments["stream_id"].is_unique
    assert set(events["type"]) >= {
        "ProductCreated", "ProductRestocked", "StockReserved", "OrderPlaced", "ItemAdded",
        "OrderSubmitted", "InvoiceIssued", "PaymentCharged", "OrderPaid", "ShipmentCreated",
        "OrderShipped", "OrderCancelled",
    }  # fmt: skip


def test_stock_never_goes_negative(history):
    store, _, events, _ = history
    products = events[events["stream_id"].str.startswith("product-")]
    delta = {
        "ProductCreated": lambda d: d["stock"],
        "ProductRestocked": lambda d: d["quantity"],
        "StockReserved": lambda d: -d["quantity"],
        "StockReleased": lambda d: d["quantity"],
    }
    for stream_id, stream in products.groupby("stream_id"):
        levels = stream.apply(lambda e: delta[e["type"]](e["data"]), axis=1).cumsum()
        assert levels.min() >= 0, stream_id
        assert levels.iloc[-1] == el.shop.Product.load(store, stream_id).stock
    assert len(products["stream_id"].unique()) == len(el.shop.CATALOGUE)
    restocks = products[products["type"] == "ProductRestocked"]
    assert set(restocks["recorded_at"].dt.strftime("%H:%M")) == {"06:00"}


def test_every_event_traces_back_to_the_command_that_caused_it(history):
    _, _, events, commands = history
    by_id = commands.set_index("command_id")
    assert set(by_id.loc[events["causation_id"].unique(), "status"]) == {"succeeded"}
    for stream_id, correlation_id in zip(
        events["stream_id"], events["correlation_id"], strict=True
    ):
        kind, _, key = stream_id.partition("-")
        expected = stream_id if kind == "product" else f"order-{key}"
        if kind == "product" and correlation_id.startswith("order-"):
            continue  # stock reserved or released for an order
        assert correlation_id == expected, stream_id
    follow_ups = commands[commands["context"].map(lambda c: "caused_by" in c)]
    assert len(follow_ups) > 100
    cause = events.set_index("event_id")
    for row in follow_ups.itertuples():
        event = cause.loc[row.context["caused_by"]]
        assert row.command_id == f"{row.type}:{event.stream_id}@{event.version}"


def test_orders_arrive_over_the_days_and_time_runs_forward(history):
    _, summary, events, _ = history
    assert events["recorded_at"].is_monotonic_increasing
    assert (events["recorded_at"] == events["occurred_at"]).all()  # a clock with step 0
    placed = events[events["type"] == "OrderPlaced"]["recorded_at"]
    assert placed.min() >= pd.Timestamp(START) and placed.max() < pd.Timestamp(
        START + timedelta(days=1)
    )
    assert summary["start"] == START and summary["end"] > START + timedelta(days=1, hours=16)
    by_hour = placed.dt.hour
    assert (by_hour.between(8, 21)).sum() > (~by_hour.between(8, 21)).sum()


def test_orders_arrive_over_several_days_by_default():
    store, summary = simulated(orders=12, seed=3, start="2024-03-08T12:00")
    placed = store.events(types="OrderPlaced")["recorded_at"]
    assert summary["days"] == 3 and summary["start"] == datetime(2024, 3, 8, 12, tzinfo=UTC)
    assert placed.min() >= pd.Timestamp("2024-03-08T12:00Z")
    assert placed.dt.date.nunique() >= 2 and placed.max() < pd.Timestamp("2024-03-11T00:00Z")
    assert summary["orders"] == 12 and summary["seed"] == 3


def test_no_failure_rate_no_technical_failures():
    store, summary = simulated(orders=25, seed=9, failure_rate=0, days=1)
    seen = set(store.sql("SELECT DISTINCT status FROM command_history")["status"])
    assert seen <= {"queued", "running", "succeeded", "rejected"}
    assert summary["faults"] == {
        "payments": {
            "calls": summary["faults"]["payments"]["calls"],
            "failed": 0,
            "down": 0,
            "slow": 0,
        },
        "warehouse": {
            "calls": summary["faults"]["warehouse"]["calls"],
            "failed": 0,
            "down": 0,
            "slow": 0,
        },
        "breaker_opened": 0,
    }
    assert el.shop.summary_lines(summary)[0].startswith("Simulated 25 orders over 1 day (seed 9)")


def test_the_cyclic_collector_is_paused_while_simulating_and_resumes_after():
    store = el.EventStore(clock=el.SimulatedClock(START, step=timedelta(0)))
    collector_on = set()
    store.bus.subscribe(lambda event: collector_on.add(gc.isenabled()), name="probe")
    assert gc.isenabled()
    el.shop.simulate(store, orders=5, seed=2)
    assert collector_on == {False}  # every event was published with the collector paused
    assert gc.isenabled()


def test_a_simulation_that_raises_turns_the_collector_back_on(monkeypatch):
    # (``eventlab.shop.simulate`` is the function; the module is in sys.modules.)
    simulation = importlib.import_module("eventlab.shop.simulate")

    def broken(self, number):
        assert not gc.isenabled()
        raise RuntimeError("a customer broke the shop")

    monkeypatch.setattr(simulation._Simulation, "_place", broken)
    store = el.EventStore(clock=el.SimulatedClock(START, step=timedelta(0)))
    with pytest.raises(RuntimeError, match="a customer broke the shop"):
        el.shop.simulate(store, orders=3, seed=2)
    assert gc.isenabled()


def test_a_clock_that_steps_per_event_works_too():
    store = el.EventStore(clock=el.SimulatedClock(START))  # one second per event
    summary = el.shop.simulate(store, orders=10, seed=8, batch_size=4)
    recorded = store.events()["recorded_at"]
    assert (recorded.diff().dropna() == pd.Timedelta(seconds=1)).mean() > 0.5
    assert recorded.is_monotonic_increasing and recorded.is_unique
    assert sum(summary["order_states"].values()) == 10
    assert set(summary["order_states"]) <= {"shipped", "cancelled", "submitted"}


# ---------------------------------------------------------------------- refusals


def test_simulate_needs_a_simulated_clock_and_an_empty_store():
    with el.EventStore() as store:
        with pytest.raises(el.EventlabError, match="needs a store on a simulated clock"):
            el.shop.simulate(store, orders=1)
        assert store.head == 0
    store = el.EventStore(clock=el.SimulatedClock(START))
    store.append("x-1", el.Event("Happened", {}))
    with pytest.raises(el.EventlabError, match="needs an empty store; this one holds 1 events"):
        el.shop.simulate(store, orders=1)
    queued = el.EventStore(clock=el.SimulatedClock(START))
    el.CommandStore(queued).add(el.Command("Ping", {}))
    with pytest.raises(el.EventlabError, match="needs a store without commands"):
        el.shop.simulate(queued, orders=1, start="2024-05-01")
    assert queued.clock.current == START  # refused before moving anything
    late = el.EventStore(clock=el.SimulatedClock(START))
    with pytest.raises(el.EventlabError) as caught:
        el.shop.simulate(late, orders=1, start="2024-03-03")
    assert str(caught.value).startswith(
        "the store's clock is at 2024-03-04T00:00:00+00:00, after start 2024-03-03T00:00:00+00:00"
    )
    assert late.head == 0 and late.clock.current == START


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"orders": 0}, "orders must be a whole number of 1 or more, got 0"),
        ({"seed": 1.5}, "seed must be an int or a str, got 1.5"),
        ({"failure_rate": 2}, "failure_rate must be from 0 to 1"),
        ({"days": 0}, "days must be a whole number of 1 or more, got 0"),
        ({"batch_size": 0}, "batch_size must be a whole number of 1 or more, got 0"),
    ],
)
def test_simulate_refuses_bad_arguments(kwargs, message):
    store = el.EventStore(clock=el.SimulatedClock(START))
    with pytest.raises(el.EventlabError) as caught:
        el.shop.simulate(store, **{"orders": 1, **kwargs})
    assert str(caught.value).startswith(message)
    assert store.head == 0
