"""The checkout saga on the shop's services, orchestrated and choreographed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import eventlab as el
from eventlab.shop import Checkout, ChoreographedCheckout, Faults, check_checkout

START = datetime(2024, 3, 4, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


@pytest.fixture
def store():
    with el.EventStore(clock=el.SimulatedClock(START, step=timedelta(milliseconds=10))) as store:
        yield store


def saga_types(store, order_id):
    return [e.type for e in store.read_stream(f"saga-{order_id}")]


def steps(store, order_id):
    return [
        (e.type, e.data.get("step"), e.data.get("attempt"))
        for e in store.read_stream(f"saga-{order_id}")
        if e.data.get("step")
    ]


def stream_types(store, stream):
    return [e.type for e in store.read_stream(stream)]


def test_a_checkout_reserves_charges_and_ships(store):
    shop = Checkout(store)
    shop.stock({"MUG-001": 5, "BAG-020": 3})
    assert shop.start("000001", [["MUG-001", 2], ["BAG-020", 1]]) == "000001"
    assert shop.run() == 1
    assert saga_types(store, "000001") == [
        "SagaStarted",
        "StepRequested", "StepSucceeded",
        "StepRequested", "StepSucceeded",
        "StepRequested", "StepSucceeded",
        "SagaCompleted",
    ]  # fmt: skip
    started = store.read_stream("saga-000001")[0].data["data"]
    assert started == {
        "order_id": "000001",
        "lines": [["MUG-001", 2], ["BAG-020", 1]],
        "amount_cents": 2 * 1250 + el.shop.checkout.PRICES["BAG-020"],
        "method": "card",
    }
    assert shop.repository.get(el.shop.Product, "product-MUG-001").stock == 3
    assert stream_types(store, "invoice-000001") == ["InvoiceIssued", "PaymentCharged"]
    assert stream_types(store, "shipment-000001") == ["ShipmentCreated"]
    # The saga's commands and the participants' events share its correlation id.
    charged = store.read_stream("invoice-000001")[-1]
    assert (charged.correlation_id, charged.causation_id) == ("000001", "000001:charge:action:1")
    assert check_checkout(store) == {
        "orders": 1,
        "outcomes": {"completed": 1},
        "violations": [],
    }


def test_out_of_stock_aborts_at_the_first_step_with_nothing_to_undo(store):
    shop = Checkout(store)
    shop.stock({"MUG-001": 1})
    shop.start("000001", [["MUG-001", 2]])
    shop.run()
    assert steps(store, "000001") == [("StepRequested", "reserve", 1), ("StepFailed", "reserve", 1)]
    assert saga_types(store, "000001")[-1] == "SagaAborted"
    failed = store.read_stream("saga-000001")[2].data
    assert failed["declined"] is True
    assert failed["error"] == "out of stock: MUG-001 has 1 left, order 000001 wants 2"
    assert check_checkout(store)["violations"] == []


def test_a_declined_card_releases_the_stock_without_a_retry(store):
    shop = Checkout(store, decline_rate=1.0)
    shop.stock({"MUG-001": 5})
    shop.start("000001", [["MUG-001", 2]])
    shop.run()
    assert steps(store, "000001")[2:] == [
        ("StepRequested", "charge", 1),
        ("StepFailed", "charge", 1),
        ("CompensationRequested", "reserve", 1),
        ("StepCompensated", "reserve", 1),
    ]
    assert store.version("invoice-000001") == 0  # the refused charge left nothing
    assert stream_types(store, "product-MUG-001")[-2:] == ["StockReserved", "StockReleased"]
    assert shop.repository.get(el.shop.Product, "product-MUG-001").stock == 5
    assert check_checkout(store) == {"orders": 1, "outcomes": {"aborted": 1}, "violations": []}


def test_a_warehouse_outage_refunds_the_payment_then_releases_the_stock(store):
    warehouse = Faults("warehouse", outages=[(START, START + HOUR)])
    shop = Checkout(store, warehouse=warehouse)
    shop.stock({"MUG-001": 5})
    shop.start("000001", [["MUG-001", 2]])
    shop.run()
    assert [s for s in steps(store, "000001") if s[1] == "ship"] == [
        ("StepRequested", "ship", 1), ("StepFailed", "ship", 1), ("StepRetried", "ship", 2),
        ("StepRequested", "ship", 2), ("StepFailed", "ship", 2), ("StepRetried", "ship", 3),
        ("StepRequested", "ship", 3), ("StepFailed", "ship", 3), ("StepRetried", "ship", 4),
        ("StepRequested", "ship", 4), ("StepFailed", "ship", 4),
    ]  # fmt: skip
    assert steps(store, "000001")[-4:] == [
        ("CompensationRequested", "charge", 1),
        ("StepCompensated", "charge", 1),
        ("CompensationRequested", "reserve", 1),
        ("StepCompensated", "reserve", 1),
    ]
    assert warehouse.stats["down"] == 4
    assert stream_types(store, "invoice-000001") == [
        "InvoiceIssued",
        "PaymentCharged",
        "PaymentRefunded",
    ]
    assert check_checkout(store)["violations"] == []


def test_draining_the_dead_letters_does_not_ship_an_aborted_checkout(store):
    # Every failed attempt of a step is a dead command; requeued once the warehouse is
    # back, it used to ship an order whose payment was refunded and stock released.
    warehouse = Faults("warehouse", outages=[(START, START + 10 * timedelta(minutes=1))])
    shop = Checkout(store, warehouse=warehouse, retry=el.RetryPolicy.fixed(1, max_attempts=2))
    shop.stock({"MUG-001": 5})
    shop.start("000001", [["MUG-001", 1]])
    shop.run()
    assert shop.status()["state"].tolist() == ["aborted"]
    dead = shop.scheduler.commands.by_status("dead")["command_id"].tolist()
    assert dead == ["000001:ship:action:1", "000001:ship:action:2"]
    store.clock.advance(HOUR)
    head = store.head
    for command_id in dead:
        with pytest.raises(el.CommandError, match=r"its saga decides whether the step runs"):
            shop.scheduler.requeue(command_id)
    shop.run()
    assert store.head == head and store.version("shipment-000001") == 0
    assert check_checkout(store) == {"orders": 1, "outcomes": {"aborted": 1}, "violations": []}


def test_a_flaky_gateway_is_retried_on_the_policy(store):
    payments = Faults("payments", failure_rate=0.5, seed=3)
    shop = Checkout(store, payments=payments, retry=el.RetryPolicy.fixed(1, max_attempts=10))
    shop.stock({"MUG-001": 50})
    for n in range(8):
        shop.start(f"{n:06d}", [["MUG-001", 1]])
    assert shop.run() == 8
    retried = store.sql(
        "SELECT count(*) AS n FROM events WHERE type = 'StepRetried' "
        "AND json_extract_string(data, '$.step') = 'charge'"
    )["n"].iloc[0]
    assert payments.stats["failed"] > 0 and retried == payments.stats["failed"]
    assert payments.stats["calls"] == 8 + retried  # each failed attempt was tried again once
    assert check_checkout(store) == {"orders": 8, "outcomes": {"completed": 8}, "violations": []}


def test_a_release_that_keeps_failing_is_stuck_until_an_operator_retries(store):
    inventory = Faults("inventory", outages=[(at(5), START + HOUR)])
    warehouse = Faults("warehouse", failure_rate=1.0)
    shop = Checkout(store, inventory=inventory, warehouse=warehouse)
    shop.stock({"MUG-001": 5})
    shop.start("000001", [["MUG-001", 2]])
    shop.run()
    status = shop.status()
    assert status[["transaction_id", "state", "step", "kind", "attempt"]].values.tolist() == [
        ["000001", "stuck", "reserve", "compensation", 6]
    ]
    assert status["error"].iloc[0].startswith("ParticipantDown: inventory is down (outage")
    # Refunded but still holding stock: the operator's case, not a broken invariant.
    assert check_checkout(store) == {"orders": 1, "outcomes": {"stuck": 1}, "violations": []}
    store.clock.advance(HOUR)
    shop.coordinator.retry("000001")
    shop.run()
    assert saga_types(store, "000001")[-1] == "SagaAborted"
    assert check_checkout(store) == {"orders": 1, "outcomes": {"aborted": 1}, "violations": []}


def test_an_abandoned_checkout_leaves_what_it_did_not_undo_to_the_operator(store):
    inventory = Faults("inventory", outages=[(at(5), START + HOUR)])
    shop = Checkout(store, inventory=inventory, warehouse=Faults("warehouse", failure_rate=1.0))
    shop.stock({"MUG-001": 5})
    shop.start("000001", [["MUG-001", 2]])
    shop.run()
    assert shop.status()["state"].tolist() == ["stuck"]
    shop.coordinator.abandon("000001", "the warehouse releases the stock by hand")
    assert shop.status()["state"].tolist() == ["aborted"]
    assert store.read_stream("saga-000001")[-1].data["uncompensated"] == ["reserve"]
    assert check_checkout(store) == {
        "orders": 1,
        "outcomes": {"aborted": 1},
        "violations": ["order 000001 was not shipped but holds {'MUG-001': 2}"],
    }


def test_the_invariant_check_finds_broken_checkouts(store):
    shop = Checkout(store)
    shop.stock({"MUG-001": 5})
    shop.start("000001", [["MUG-001", 2]])
    shop.start("000002", [["MUG-001", 1]])
    shop.run()
    assert check_checkout(store)["violations"] == []
    # Histories no saga would write: an aborted order that holds stock and was
    # charged, and a second shipment for an order.
    fake = {"order_id": "000003", "lines": [["MUG-001", 1]], "amount_cents": 1, "method": "card"}
    E = el.Event
    store.append(
        "saga-000003",
        [E("SagaStarted", {"saga": "checkout", "steps": [], "data": fake}), E("SagaAborted", {})],
    )
    store.append(
        "invoice-000003",
        [
            E("InvoiceIssued", {"order_id": "000003", "amount_cents": 1}),
            E("PaymentCharged", {"amount_cents": 1}),
        ],
    )
    store.append("product-MUG-001", [E("StockReserved", {"order_id": "000003", "quantity": 1})])
    store.append("shipment-x", [E("ShipmentCreated", {"order_id": "000002"})])
    assert check_checkout(store) == {
        "orders": 3,
        "outcomes": {"completed": 2, "aborted": 1},
        "violations": [
            "order 000002 has 2 shipments",
            "order 000003 was not shipped but holds {'MUG-001': 1}",
            "order 000003 was charged without a shipment or refund",
        ],
    }


# ---------------------------------------------------------------------- choreography


def outcome(store, order_id):
    return {
        stream: stream_types(store, f"{stream}-{order_id}") for stream in ("invoice", "shipment")
    }


@pytest.mark.parametrize("world", [Checkout, ChoreographedCheckout])
def test_both_ways_reach_the_same_ends(world, store):
    warehouse = Faults("warehouse", outages=[(START, START + HOUR)])
    shop = world(store, warehouse=warehouse, decline_rate=0.0)
    shop.stock({"MUG-001": 5, "BAG-020": 1})
    shop.start("000001", [["MUG-001", 2]])  # ships fail: refund and release
    shop.start("000002", [["BAG-020", 2]])  # out of stock
    shop.run()
    assert outcome(store, "000001") == {
        "invoice": ["InvoiceIssued", "PaymentCharged", "PaymentRefunded"],
        "shipment": [],
    }
    assert outcome(store, "000002") == {"invoice": [], "shipment": []}
    assert stream_types(store, "product-MUG-001")[-2:] == ["StockReserved", "StockReleased"]
    report = check_checkout(store)
    assert report["violations"] == [] and report["orders"] == 2
    ends = {Checkout: {"aborted": 2}, ChoreographedCheckout: {"undone": 2}}[world]
    assert report["outcomes"] == ends


def test_the_choreography_spreads_the_state_over_the_services_streams(store):
    shop = ChoreographedCheckout(store, decline_rate=1.0)
    shop.stock({"MUG-001": 5})
    shop.start("000001", [["MUG-001", 2]])
    shop.run()
    chain = [(e.stream_id, e.type) for e in store.read_all() if e.correlation_id == "000001"]
    assert chain == [
        ("checkout-000001", "CheckoutRequested"),
        ("product-MUG-001", "StockReserved"),
        ("billing-000001", "PaymentFailed"),
        ("product-MUG-001", "StockReleased"),
    ]
    assert store.version("saga-000001") == 0  # nobody kept the saga's state
    assert check_checkout(store) == {"orders": 1, "outcomes": {"undone": 1}, "violations": []}
