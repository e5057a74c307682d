"""The shop example: aggregates' rules, each service's commands, reactions, failure injection."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import eventlab as el
from eventlab.shop import (
    Faults,
    Invoice,
    Order,
    ParticipantDown,
    ParticipantFailed,
    Product,
    Repository,
    Shipment,
    Shop,
)

START = datetime(2024, 3, 4, 9, 0, tzinfo=UTC)  # a Monday


def rejected(fn, *args, **kwargs) -> str:
    with pytest.raises(el.CommandRejected) as caught:
        fn(*args, **kwargs)
    return str(caught.value)


def emitted(aggregate) -> list[tuple[str, dict]]:
    return [(event.type, event.data) for event in aggregate.pending_events]


# ---------------------------------------------------------------------- aggregates


def new_product(stock: int = 5) -> Product:
    product = Product("product-MUG-001")
    product.create("MUG-001", "Enamel mug", price_cents=1250, stock=stock)
    return product


def test_product_lifecycle_and_events():
    product = new_product(stock=5)
    product.change_price(1400)
    product.restock(10)
    product.reserve("000001", 4)
    product.reserve("000002", 11)
    product.release("000001")
    assert emitted(product) == [
        (
            "ProductCreated",
            {"sku": "MUG-001", "name": "Enamel mug", "price_cents": 1250, "stock": 5},
        ),
        ("PriceChanged", {"price_cents": 1400, "previous_cents": 1250}),
        ("ProductRestocked", {"quantity": 10}),
        ("StockReserved", {"order_id": "000001", "quantity": 4}),
        ("StockReserved", {"order_id": "000002", "quantity": 11}),
        ("StockReleased", {"order_id": "000001", "quantity": 4}),
    ]
    assert (product.stock, product.price_cents, product.reserved) == (4, 1400, {"000002": 11})


def test_product_rules():
    blank = Product("product-MUG-001")
    assert rejected(blank.restock, 3) == (
        "there is no product 'MUG-001' in the catalogue; create it first (CreateProduct)"
    )
    assert "whole number of cents greater than 0" in rejected(
        blank.create, "MUG-001", "Mug", price_cents=12.5
    )
    assert rejected(blank.create, "MUG-002", "Mug", price_cents=100) == (
        "the sku must be a non-empty string naming 'product-MUG-001'"
    )
    assert rejected(blank.create, "MUG-001", " ", price_cents=100) == (
        "product 'MUG-001' needs a name, got ' '"
    )
    assert rejected(blank.create, "MUG-001", "Mug", price_cents=100, stock=-1) == (
        "the initial stock must be 0 or more, got -1"
    )
    product = new_product(stock=2)
    assert rejected(product.create, "MUG-001", "Mug", price_cents=100) == (
        "product 'MUG-001' already exists; change it instead"
    )
    assert rejected(product.change_price, 1250) == "MUG-001 already costs 1250 cents"
    assert rejected(product.restock, 0) == "a quantity must be a whole number of 1 or more, got 0"
    assert rejected(product.reserve, "000001", 3) == (
        "out of stock: MUG-001 has 2 left, order 000001 wants 3"
    )
    product.reserve("000001", 2)
    assert rejected(product.reserve, "000001", 1) == "order 000001 already has MUG-001 reserved"
    assert rejected(product.release, "000009") == "MUG-001 holds no reservation for order 000009"
    assert product.stock == 0  # never below zero: the refused reservations changed nothing
    assert len(product.pending_events) == 2


def placed_order() -> Order:
    order = Order("order-000001")
    order.place("000001", "c-0001", [("MUG-001", 2, 1250)], channel="app", payment_method="paypal")
    return order


def test_order_lifecycle_and_events():
    order = placed_order()
    order.add_item("TEE-010", 1, 1990)
    order.add_item("MUG-001", 1, 1250)  # the same sku again adds to its line
    order.submit()
    order.mark_paid(5740, "ch_1")
    order.mark_shipped("DHL", "ABC")
    assert emitted(order) == [
        (
            "OrderPlaced",
            {
                "order_id": "000001",
                "customer_id": "c-0001",
                "channel": "app",
                "payment_method": "paypal",
            },
        ),
        ("ItemAdded", {"sku": "MUG-001", "quantity": 2, "price_cents": 1250}),
        ("ItemAdded", {"sku": "TEE-010", "quantity": 1, "price_cents": 1990}),
        ("ItemAdded", {"sku": "MUG-001", "quantity": 1, "price_cents": 1250}),
        (
            "OrderSubmitted",
            {
                "total_cents": 5740,
                "payment_method": "paypal",
                "lines": [["MUG-001", 3], ["TEE-010", 1]],
            },
        ),
        ("OrderPaid", {"amount_cents": 5740, "charge_id": "ch_1"}),
        ("OrderShipped", {"carrier": "DHL", "tracking_code": "ABC"}),
    ]
    assert order.status == "shipped"
    assert rejected(order.cancel, "too late") == (
        "order 000001 is already shipped, so it cannot be cancelled"
    )


def test_order_rules():
    blank = Order("order-000001")
    assert rejected(blank.add_item, "MUG-001", 1, 100) == (
        "there is no order '000001'; place it first (PlaceOrder)"
    )
    assert rejected(blank.place, "000001", "c-1", []) == "order 000001 needs at least one item"
    assert rejected(blank.place, "000001", "", [("MUG-001", 1, 100)]) == (
        "an order needs a customer_id, got ''"
    )
    assert rejected(blank.place, "000001", "c-1", [("MUG-001", 100, 100)]) == (
        "a quantity of 100 is more than 99; split the order"
    )
    order = placed_order()
    assert rejected(order.place, "000001", "c-1", [("MUG-001", 1, 100)]) == (
        "order 000001 already exists (it is placed)"
    )
    assert rejected(order.add_item, "MUG-001", 98, 1250) == (
        "more than 99 of MUG-001 in one order; split it"
    )
    assert rejected(order.mark_paid, 2500, "ch") == (
        "order 000001 is placed; only a submitted order can be paid"
    )
    order.submit()
    assert rejected(order.add_item, "TEE-010", 1, 1990) == (
        "order 000001 is submitted; add items before submitting it"
    )
    assert rejected(order.submit) == "order 000001 is already submitted"
    assert rejected(order.mark_paid, 2400, "ch") == (
        "order 000001 totals 2500 cents, the payment was 2400"
    )
    assert rejected(order.mark_shipped, "DHL", "X") == (
        "order 000001 is submitted; only a paid order can be shipped"
    )
    assert rejected(order.cancel, "") == "a cancellation needs a reason, e.g. 'customer request'"
    order.cancel("customer request")
    assert emitted(order)[-1] == (
        "OrderCancelled",
        {"reason": "customer request", "previous_status": "submitted"},
    )
    assert rejected(order.cancel, "again") == (
        "order 000001 is already cancelled, so it cannot be cancelled"
    )


def test_invoice_and_shipment_rules():
    invoice = Invoice("invoice-000001")
    assert rejected(invoice.charge, "card", "ch") == (
        "order 000001 has no invoice yet; charge it first"
    )
    invoice.issue("000001", 2500)
    assert rejected(invoice.refund, "r") == (
        "the payment of order 000001 is None; only a charged payment can be refunded"
    )
    invoice.charge("card", "ch_1")
    assert rejected(invoice.decline, "card", "no") == (
        "the invoice of order 000001 is already charged"
    )
    invoice.refund("customer request")
    assert invoice.status == "refunded"
    assert emitted(invoice)[-1] == (
        "PaymentRefunded",
        {"amount_cents": 2500, "reason": "customer request"},
    )
    shipment = Shipment("shipment-000001")
    assert rejected(shipment.cancel, "r") == "order 000001 has no shipment to cancel"
    shipment.create("000001", "UPS", "T1", 1)
    assert rejected(shipment.create, "000001", "UPS", "T2", 1) == (
        "order 000001 already has a shipment"
    )
    shipment.cancel("address undeliverable")
    assert rejected(shipment.cancel, "again") == (
        "the shipment of order 000001 is already cancelled"
    )


def test_aggregates_replay_to_the_same_state():
    store = el.EventStore(clock=el.SimulatedClock(START))
    order = placed_order()
    order.add_item("TEE-010", 2, 1990)
    order.submit()
    order.save(store)
    product = new_product()
    product.reserve("000001", 2)
    product.save(store)
    again = Order.load(store, "order-000001")
    assert (again.status, again.lines, again.total_cents, again.version) == (
        "submitted",
        {"MUG-001": [2, 1250], "TEE-010": [2, 1990]},
        6480,
        4,
    )
    loaded = Product.load(store, "product-MUG-001")
    assert (loaded.stock, loaded.reserved, loaded.price_cents, loaded.version) == (
        3,
        {"000001": 2},
        1250,
        2,
    )


# ---------------------------------------------------------------------- failure injection


def test_faults_latency_outage_and_failures_on_the_clock():
    clock = el.SimulatedClock(START, step=timedelta(0))
    gateway = Faults(
        "payments",
        latency=0.5,
        outages=[("2024-03-04T09:10", "2024-03-04T09:20")],
        failure_rate=0.0,
    )
    gateway.call(clock)
    assert clock.current == START + timedelta(seconds=0.5)
    clock.advance(timedelta(minutes=10))
    with pytest.raises(ParticipantDown, match=r"payments is down \(outage 2024-03-04 09:10 to"):
        gateway.call(clock)
    assert clock.current == START + timedelta(minutes=10, seconds=0.5)  # no latency when down
    clock.advance(timedelta(minutes=10))  # 09:20:00.5, the window's end is excluded
    gateway.call(clock)
    assert clock.current == START + timedelta(minutes=20, seconds=1)
    assert gateway.stats == {"calls": 3, "failed": 0, "down": 1, "slow": 0}
    always = Faults("warehouse", failure_rate=1.0, slow_rate=1.0, slow_latency=45)
    with pytest.raises(ParticipantFailed):
        always.call(clock)
    assert clock.current == START + timedelta(minutes=20, seconds=46)
    assert isinstance(ParticipantFailed("x"), ConnectionError)  # a failure, never a rejection


def failure_pattern(seed, calls=200):
    clock = el.SimulatedClock(START, step=timedelta(0))
    faults = Faults("payments", failure_rate=0.3, slow_rate=0.2, slow_latency=45, seed=seed)
    pattern = []
    for _ in range(calls):
        before = clock.current
        try:
            faults.call(clock)
            pattern.append(("ok", clock.current - before))
        except ParticipantFailed:
            pattern.append(("failed", clock.current - before))
    return pattern, faults.stats


def test_faults_are_deterministic_per_seed():
    first, stats = failure_pattern(seed=4)
    assert failure_pattern(seed=4) == (first, stats)
    assert failure_pattern(seed=5)[0] != first
    assert 40 <= stats["failed"] <= 80 and 20 <= stats["slow"] <= 60  # ~30% and ~20% of 200


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failure_rate": 1.5}, "failure_rate must be a probability from 0 to 1"),
        ({"latency": -1}, "latency must be a number of seconds, 0 or more"),
        ({"outages": [("2024-03-04T10:00",)]}, "an outage is a (start, end) pair of UTC times"),
        (
            {"outages": [("2024-03-04T10:00", "2024-03-04T09:00")]},
            "an outage must end after it starts",
        ),
    ],
)
def test_faults_refuse_bad_settings(kwargs, message):
    with pytest.raises(el.EventlabError) as caught:
        Faults("payments", **kwargs)
    assert str(caught.value).startswith(message)


# ---------------------------------------------------------------------- the repository


def test_repository_caches_until_the_store_moves_on():
    store = el.EventStore(clock=el.SimulatedClock(START))
    repository = Repository(store, capacity=2)
    order = repository.get(Order, "order-000001")
    assert order.version == 0 and repository.loads == 0  # a new stream is not read
    order.place("000001", "c-1", [("MUG-001", 1, 1250)])
    order.save(store)
    assert repository.get(Order, "order-000001") is order
    # An aggregate that emitted without saving (a failed handler) is replayed afresh.
    order.submit()
    fresh = repository.get(Order, "order-000001")
    assert fresh is not order and fresh.status == "placed" and repository.loads == 1
    # A rolled-back save leaves the aggregate ahead of the store: replayed afresh too.
    with pytest.raises(RuntimeError), store.transaction():
        fresh.submit()
        fresh.save(store)
        raise RuntimeError("the command failed after saving")
    again = repository.get(Order, "order-000001")
    assert again is not fresh and again.status == "placed" and again.version == 2
    # Someone else appends: the cached object is replaced, and a stale one cannot save.
    store.append("order-000001", el.Event("OrderSubmitted", {}))
    assert repository.get(Order, "order-000001").status == "submitted"
    again.submit()
    with pytest.raises(el.ConcurrencyError):
        again.save(store)
    # The least recently used aggregate goes first.
    repository.get(Product, "product-A")
    repository.get(Product, "product-B")
    assert len(repository) == 2 and repository.get(Product, "product-A") is not None


# ---------------------------------------------------------------------- services


@pytest.fixture
def store():
    with el.EventStore(clock=el.SimulatedClock(START, step=timedelta(0))) as store:
        yield store


def stock_shop(shop, *products):
    for sku, price, stock in products:
        shop.submit(
            el.Command(
                "CreateProduct",
                {"sku": sku, "name": sku.title(), "price_cents": price, "stock": stock},
                command_id=f"create-{sku}",
            )
        )
    shop.run()


def order_command(kind, payload, command_id):
    """A command about an order, correlated with it as the shop's own commands are."""
    return el.Command(
        kind, payload, command_id=command_id, correlation_id=f"order-{payload['order_id']}"
    )


def place(shop, order_id, items, *, submit=True, **extra):
    payload = {"order_id": order_id, "customer_id": "c-1", "items": items, **extra}
    shop.submit(order_command("PlaceOrder", payload, f"place-{order_id}"))
    if submit:
        shop.submit(order_command("SubmitOrder", {"order_id": order_id}, f"submit-{order_id}"))


def status(shop, command_id):
    row = shop.commands.get(command_id)
    return row["status"], row["error"]


def stream(store, stream_id):
    return [(e.type, e.data) for e in store.read_stream(stream_id)]


def test_product_service_commands_and_rejections(store):
    shop = Shop(store)
    stock_shop(shop, ("MUG-001", 1250, 5))
    for command_id, kind, payload in [
        ("price", "ChangePrice", {"sku": "MUG-001", "price_cents": 1400}),
        ("restock", "Restock", {"sku": "MUG-001", "quantity": 7}),
        ("unknown", "Restock", {"sku": "NOPE", "quantity": 7}),
        ("missing", "ChangePrice", {"sku": "MUG-001"}),
        ("again", "CreateProduct", {"sku": "MUG-001", "name": "Mug", "price_cents": 1}),
    ]:
        shop.submit(el.Command(kind, payload, command_id=command_id))
    assert shop.run() == 5
    assert stream(store, "product-MUG-001") == [
        ("ProductCreated", {"sku": "MUG-001", "name": "Mug-001", "price_cents": 1250, "stock": 5}),
        ("PriceChanged", {"price_cents": 1400, "previous_cents": 1250}),
        ("ProductRestocked", {"quantity": 7}),
    ]
    assert status(shop, "unknown") == (
        "rejected",
        "there is no product 'NOPE' in the catalogue; create it first (CreateProduct)",
    )
    assert status(shop, "missing") == (
        "rejected",
        "ChangePrice needs 'price_cents' in its payload, e.g. {'sku': ..., 'price_cents': ...}",
    )
    assert status(shop, "again") == (
        "rejected",
        "product 'MUG-001' already exists; change it instead",
    )
    assert shop.product("MUG-001").stock == 12


def test_reserve_and_release_stock_commands_all_or_nothing(store):
    shop = Shop(store)
    stock_shop(shop, ("MUG-001", 1250, 5), ("TEE-010", 1990, 1))
    shop.submit(
        el.Command(
            "ReserveStock",
            {"order_id": "000007", "lines": [["MUG-001", 2], ["TEE-010", 2]]},
            command_id="too-many",
        )
    )
    shop.submit(
        el.Command(
            "ReserveStock",
            {"order_id": "000007", "lines": [["MUG-001", 2], ["TEE-010", 1]]},
            command_id="reserve",
        )
    )
    shop.submit(
        el.Command("ReleaseStock", {"order_id": "000008", "skus": ["MUG-001"]}, command_id="none")
    )
    shop.submit(
        el.Command(
            "ReleaseStock", {"order_id": "000007", "skus": ["MUG-001", "TEE-010"]}, command_id="rel"
        )
    )
    shop.run()
    assert status(shop, "too-many") == (
        "rejected",
        "out of stock: TEE-010 has 1 left, order 000007 wants 2",
    )
    assert status(shop, "none") == (
        "rejected",
        "none of ['MUG-001'] holds stock for order 000008",
    )
    assert [status(shop, c)[0] for c in ("reserve", "rel")] == ["succeeded", "succeeded"]
    assert stream(store, "product-TEE-010")[1:] == [
        ("StockReserved", {"order_id": "000007", "quantity": 1}),
        ("StockReleased", {"order_id": "000007", "quantity": 1}),
    ]
    assert (shop.product("MUG-001").stock, shop.product("TEE-010").stock) == (5, 1)


def test_an_order_goes_from_placed_to_shipped_through_reactions(store):
    shop = Shop(store)
    stock_shop(shop, ("MUG-001", 1250, 5), ("TEE-010", 1990, 3))
    place(shop, "000001", [["MUG-001", 2]], submit=False, payment_method="paypal")
    add = {"order_id": "000001", "sku": "TEE-010", "quantity": 1}
    shop.submit(order_command("AddItem", add, "add-000001"))
    shop.submit(order_command("SubmitOrder", {"order_id": "000001"}, "submit-000001"))
    assert shop.run() == 7
    assert shop.order("000001").status == "shipped"
    commands = shop.commands.df()
    assert list(commands["command_id"])[2:] == [
        "place-000001",
        "add-000001",
        "submit-000001",
        "ChargePayment:order-000001@4",
        "MarkOrderPaid:invoice-000001@2",
        "CreateShipment:order-000001@5",
        "MarkOrderShipped:shipment-000001@1",
    ]
    assert set(commands["status"]) == {"succeeded"}
    events = store.events()
    assert [(e.stream_id, e.type) for e in events.iloc[2:].itertuples()] == [
        ("order-000001", "OrderPlaced"),
        ("order-000001", "ItemAdded"),
        ("order-000001", "ItemAdded"),
        ("order-000001", "OrderSubmitted"),
        ("product-MUG-001", "StockReserved"),
        ("product-TEE-010", "StockReserved"),
        ("invoice-000001", "InvoiceIssued"),
        ("invoice-000001", "PaymentCharged"),
        ("order-000001", "OrderPaid"),
        ("shipment-000001", "ShipmentCreated"),
        ("order-000001", "OrderShipped"),
    ]
    # The causal chain: each event names the command that caused it, and each
    # follow-up command names the event that caused it.
    by_id = events.set_index("event_id")
    for row in commands.iloc[5:].itertuples():
        cause = by_id.loc[row.context["caused_by"]]
        assert row.command_id == f"{row.type}:{cause.stream_id}@{cause.version}"
        assert (events["causation_id"] == row.command_id).any()
    assert set(events["causation_id"]) == set(commands["command_id"])
    assert set(events["correlation_id"].iloc[2:]) == {"order-000001"}
    charge = shop.commands.get("ChargePayment:order-000001@4")
    assert charge["payload"] == {"order_id": "000001", "amount_cents": 4490, "method": "paypal"}
    assert charge["correlation_id"] == "order-000001"
    assert (shop.product("MUG-001").stock, shop.product("TEE-010").stock) == (3, 2)


def test_order_service_rejections(store):
    shop = Shop(store)
    stock_shop(shop, ("MUG-001", 1250, 2))
    place(shop, "000001", [["NOPE", 1]], submit=False)
    place(shop, "000002", [["MUG-001", 3]])  # more than in stock
    place(shop, "000003", [["MUG-001", 1], ["MUG-001", 1]], submit=False)
    shop.submit(
        el.Command(
            "AddItem", {"order_id": "000009", "sku": "MUG-001", "quantity": 1}, command_id="add-9"
        )
    )
    shop.submit(el.Command("CancelOrder", {"order_id": "000002"}, command_id="cancel-no-reason"))
    shop.run()
    assert status(shop, "place-000001") == (
        "rejected",
        "there is no product 'NOPE' in the catalogue; create it first (CreateProduct)",
    )
    assert status(shop, "submit-000002") == (
        "rejected",
        "out of stock: MUG-001 has 2 left, order 000002 wants 3",
    )
    assert status(shop, "place-000003") == (
        "rejected",
        "a sku appears twice in ['MUG-001', 'MUG-001']; give each sku one line",
    )
    assert status(shop, "add-9") == (
        "rejected",
        "there is no order '000009'; place it first (PlaceOrder)",
    )
    assert status(shop, "cancel-no-reason")[1].startswith("CancelOrder needs 'reason'")
    # The rejected submit wrote nothing: the order is still placed, the stock untouched.
    assert shop.order("000002").status == "placed"
    assert shop.product("MUG-001").stock == 2 and store.version("product-MUG-001") == 1


def test_cancelling_a_paid_order_refunds_it_and_releases_its_stock(store):
    shop = Shop(store, pickups=True)  # paid orders wait for the warehouse's pick-up
    stock_shop(shop, ("MUG-001", 1250, 5))
    place(shop, "000001", [["MUG-001", 2]])
    shop.run()
    assert shop.order("000001").status == "paid" and shop.product("MUG-001").stock == 3
    shop.submit(
        el.Command(
            "CancelOrder", {"order_id": "000001", "reason": "customer request"}, command_id="cancel"
        )
    )
    shop.run()
    assert shop.dispatch() == 0  # dropped from the pick-up
    assert shop.order("000001").status == "cancelled"
    assert shop.product("MUG-001").stock == 5
    assert stream(store, "invoice-000001")[-1] == (
        "PaymentRefunded",
        {"amount_cents": 2500, "reason": "customer request"},
    )
    refund = shop.commands.get("RefundPayment:order-000001@5")
    release = shop.commands.get("ReleaseStock:order-000001@5")
    assert (refund["status"], release["status"]) == ("succeeded", "succeeded")
    assert release["payload"] == {"order_id": "000001", "skus": ["MUG-001"]}


def test_a_shipped_order_cannot_be_cancelled(store):
    shop = Shop(store, pickups=True)
    stock_shop(shop, ("MUG-001", 1250, 5))
    place(shop, "000001", [["MUG-001", 1]])
    shop.run()
    assert shop.dispatch() == 1
    # The shipment exists before the order hears of it: the cancel must still be refused.
    shop.submit(
        el.Command(
            "CancelOrder", {"order_id": "000001", "reason": "changed my mind"}, command_id="c"
        )
    )
    shop.run()
    shipment = shop.repository.get(Shipment, "shipment-000001")
    assert status(shop, "c") == (
        "rejected",
        f"order 000001 has left the warehouse ({shipment.carrier} {shipment.tracking_code}), "
        "so it cannot be cancelled; return it instead",
    )
    assert shop.order("000001").status == "shipped"
    shop.submit(
        el.Command(
            "CancelShipment",
            {"order_id": "000001", "reason": "address undeliverable"},
            command_id="cs",
        )
    )
    shop.run()
    assert stream(store, "shipment-000001")[-1] == (
        "ShipmentCancelled",
        {"reason": "address undeliverable"},
    )


def test_a_declined_card_cancels_the_order_and_releases_the_stock(store):
    shop = Shop(store, decline_rate=1.0)
    stock_shop(shop, ("MUG-001", 1250, 5))
    place(shop, "000001", [["MUG-001", 2]])
    shop.run()
    assert stream(store, "invoice-000001") == [
        ("InvoiceIssued", {"order_id": "000001", "amount_cents": 2500}),
        ("PaymentDeclined", {"method": "card", "reason": "card declined by the bank"}),
    ]
    order = shop.order("000001")
    assert (order.status, order.cancel_reason) == ("cancelled", "payment declined")
    assert shop.product("MUG-001").stock == 5
    assert status(shop, "CancelOrder:invoice-000001@2") == ("succeeded", None)


def test_a_payment_failing_every_time_is_dead_lettered_and_charges_nothing(store):
    gateway = Faults("payments", failure_rate=1.0)
    breaker = el.CircuitBreaker(
        failure_threshold=2, cool_down=3, clock=store.clock, name="payments"
    )
    shop = Shop(store, payments=gateway, breaker=breaker, max_attempts=4)
    stock_shop(shop, ("MUG-001", 1250, 5))
    place(shop, "000001", [["MUG-001", 1]])
    shop.run()
    history = shop.commands.history("ChargePayment:order-000001@3")
    assert list(history["status"]) == [
        "queued", "running", "failed", "queued", "running", "failed", "queued",
        "queued", "running", "failed", "queued", "running", "failed", "dead",
    ]  # fmt: skip
    assert history["error"].iloc[2] == (
        "ParticipantFailed: payments failed to answer (injected failure)"
    )
    # The breaker opened at the second failure (1 s): the retry due at 3 s was held,
    # without using an attempt, until it half-opened (4 s); that trial failed and
    # reopened it, and the last attempt (backoff 4 s) was the next trial, at 8 s.
    assert history["error"].iloc[7] == (
        "circuit 'payments' open; waits until 2024-03-04T09:00:04+00:00"
    )
    failed = history[history["status"] == "failed"]
    assert [t - START for t in failed["at"]] == [timedelta(seconds=s) for s in (0, 1, 4, 8)]
    assert gateway.stats["calls"] == 4
    assert list(breaker.events()["kind"]) == [
        "CircuitOpened", "CircuitHalfOpened", "CircuitOpened", "CircuitHalfOpened",
        "CircuitOpened",
    ]  # fmt: skip
    assert store.version("invoice-000001") == 0
    assert shop.order("000001").status == "submitted"  # waits for someone to requeue


def test_a_payment_outage_is_retried_until_the_gateway_is_back(store):
    outage = (START, START + timedelta(seconds=5))
    shop = Shop(store, payments=Faults("payments", outages=[outage]))
    stock_shop(shop, ("MUG-001", 1250, 5))
    place(shop, "000001", [["MUG-001", 1]])
    shop.run()
    history = shop.commands.history("ChargePayment:order-000001@3")
    ends = history[history["status"].isin(["failed", "succeeded"])]
    assert list(ends["status"]) == ["failed", "failed", "failed", "succeeded"]
    # Attempts at 0, 1, 3 s (down) and 7 s (back): backoff 1, 2, 4 s.
    assert [t - START for t in ends["at"]] == [timedelta(seconds=s) for s in (0, 1, 3, 7)]
    assert shop.order("000001").status == "shipped"


def test_a_slow_warehouse_times_out_and_its_shipment_is_undone(store):
    warehouse = Faults("warehouse", slow_rate=1.0, slow_latency=45)
    shop = Shop(store, warehouse=warehouse, max_attempts=2)
    stock_shop(shop, ("MUG-001", 1250, 5))
    place(shop, "000001", [["MUG-001", 1]])
    shop.run()
    history = shop.commands.history("CreateShipment:order-000001@4")
    assert list(history["status"]) == [
        "queued", "running", "timed_out", "queued", "running", "timed_out", "dead",
    ]  # fmt: skip
    assert history["error"].iloc[2].startswith("ran 0:00:45, longer than the timeout 0:00:30")
    assert store.version("shipment-000001") == 0  # both attempts were undone
    assert shop.order("000001").status == "paid"


def test_reactions_are_idempotent(store):
    shop = Shop(store)
    stock_shop(shop, ("MUG-001", 1250, 5))
    place(shop, "000001", [["MUG-001", 1]])
    shop.run()
    submitted = [e for e in store.read_all() if e.type == "OrderSubmitted"][0]
    before = len(shop.commands.df())
    shop.billing.react(submitted)  # the bus delivers it a second time
    assert len(shop.commands.df()) == before
    assert status(shop, "ChargePayment:order-000001@3") == ("succeeded", None)


def test_a_reaction_needs_a_way_to_submit(store):
    from eventlab.shop import BillingService

    billing = BillingService(Repository(store))
    event = store.append(
        "order-000001", el.Event("OrderSubmitted", {"total_cents": 1, "payment_method": "card"})
    )[0]
    with pytest.raises(el.CommandRejected, match="was given no submit function"):
        billing.react(event)


def test_one_shop_per_store(store):
    Shop(store)
    with pytest.raises(el.EventlabError, match="a subscription named 'shop.products' already"):
        Shop(store)
