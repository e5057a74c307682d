"""The checkout saga: reserve the stock, charge the payment, create the shipment.

Three local transactions at three services, no transaction around them. When
one fails for good, the ones that finished are undone in reverse order: the
payment refunded, the stock released. Two ways to run it on the shop's
services:

- :class:`Checkout`, orchestrated: an :class:`~eventlab.SagaCoordinator`
  sends each step and keeps the saga's state in ``saga-<order id>``.
- :class:`ChoreographedCheckout`: no coordinator; each service reacts to the
  previous one's events (and to the failures the others announce).

In a checkout the saga *is* the order's process, so the participants here are
the shop's services without the order aggregate: :class:`CheckoutInventory`
(the product service), :class:`CheckoutBilling` (a declined card is a refusal,
which the saga compensates without retrying) and :class:`CheckoutShipping`.
Each can be given :class:`~eventlab.shop.Faults` (failure rate, latency,
outages) on the simulated clock. :func:`check_checkout` verifies the
invariants after a run.

>>> import eventlab as el
>>> store = el.EventStore(clock=el.SimulatedClock("2024-03-04T09:00"))
>>> shop = el.shop.Checkout(store)
>>> shop.stock({"MUG-001": 5})
>>> shop.start("000001", [["MUG-001", 2]])
'000001'
>>> shop.run()
1
>>> [e.type for e in store.read_stream("saga-000001")][-2:]
['StepSucceeded', 'SagaCompleted']
>>> check_checkout(store)["violations"]
[]
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..commands import Command
from ..executor import CommandContext, CommandExecutor, CommandRejected
from ..resilience import RetryPolicy
from ..saga import Choreography, Saga, SagaCoordinator, Step, saga_status
from ..scheduler import CommandScheduler
from .aggregates import Invoice, Product, Shipment, invoice_stream, shipment_stream
from .failures import Faults
from .repository import Repository
from .services import BillingService, ProductService, ShippingService, _check_id, _require
from .simulate import CATALOGUE

if TYPE_CHECKING:
    from ..breaker import CircuitBreaker
    from ..events import RecordedEvent
    from ..store import EventStore

CHECKOUT = "checkout"
PRICES = {sku: price for sku, _, price in CATALOGUE}
NAMES = {sku: name for sku, name, _ in CATALOGUE}


# ---------------------------------------------------------------------- the saga


def _reserve(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "ReserveStock", {"order_id": data["order_id"], "lines": data["lines"]}


def _release(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "ReleaseStock", {"order_id": data["order_id"], "skus": [s for s, _ in data["lines"]]}


def _charge(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    payload = {k: data[k] for k in ("order_id", "amount_cents", "method")}
    return "ChargePayment", payload


def _refund(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "RefundPayment", {"order_id": data["order_id"], "reason": "checkout aborted"}


def _ship(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "CreateShipment", {"order_id": data["order_id"], "lines": data["lines"]}


def checkout_saga(
    *,
    retry: RetryPolicy | None = None,
    compensation_retry: RetryPolicy | None = None,
    timeout: timedelta | float | None = None,
) -> Saga:
    """The checkout saga: reserve -> charge -> ship; release and refund undo the first two.

    Its data is ``{order_id, lines: [[sku, quantity], ...], amount_cents, method}``.
    ``retry`` defaults to 4 attempts, 2 s apart then doubling; compensations
    (``compensation_retry``) to 6 attempts from 5 s, doubling up to a minute;
    ``timeout`` bounds each attempt (default: the scheduler's).
    """
    retry = retry or RetryPolicy.exponential(2, max_attempts=4, name="checkout")
    undo = compensation_retry or RetryPolicy.exponential(
        5, max_delay=60, max_attempts=6, name="checkout-undo"
    )
    options = {"retry": retry, "compensation_retry": undo, "timeout": timeout}
    return Saga(
        CHECKOUT,
        [
            Step("reserve", _reserve, _release, **options),
            Step("charge", _charge, _refund, **options),
            Step("ship", _ship, **options),  # the last step: nothing after it can fail
        ],
    )


# ---------------------------------------------------------------------- participants


class CheckoutInventory(ProductService):
    """The product service, reached through a network that may fail (``faults``)."""

    def __init__(self, repository: Repository, *, faults: Faults | None = None):
        super().__init__(repository)
        self.faults = faults

    def reserve_stock(self, command: Command, ctx: CommandContext) -> list[Product]:
        if self.faults is not None:
            self.faults.call(ctx.clock)
        return super().reserve_stock(command, ctx)

    def release_stock(self, command: Command, ctx: CommandContext) -> list[Product]:
        if self.faults is not None:
            self.faults.call(ctx.clock)
        return super().release_stock(command, ctx)


class CheckoutBilling(BillingService):
    """Billing for a checkout: no order aggregate to consult, and a declined card is a
    refusal (:class:`~eventlab.CommandRejected`) rather than an event."""

    def charge_payment(self, command: Command, ctx: CommandContext) -> Invoice:
        """``ChargePayment {order_id, amount_cents, method}`` -> InvoiceIssued, PaymentCharged."""
        order_id, amount, method = _require(command, "order_id", "amount_cents", "method")
        invoice = self.repository.get(Invoice, invoice_stream(_check_id("order_id", order_id)))
        invoice.issue(order_id, amount)  # refuses a second charge before calling out
        self._call_gateway(ctx)
        if self._random.random() < self.decline_rate:
            raise CommandRejected(f"card declined by the bank for order {order_id}")
        invoice.charge(method, f"ch_{self._random.getrandbits(48):012x}")
        return invoice


class CheckoutShipping(ShippingService):
    """Shipping for a checkout: the saga ships once the payment step succeeded."""

    def create_shipment(self, command: Command, ctx: CommandContext) -> Shipment:
        """``CreateShipment {order_id, lines}`` -> ShipmentCreated."""
        order_id, lines = _require(command, "order_id", "lines")
        shipment = self.repository.get(Shipment, shipment_stream(_check_id("order_id", order_id)))
        if shipment.exists:
            raise CommandRejected(f"order {order_id} already has a shipment")
        if self.warehouse is not None:
            self.warehouse.call(ctx.clock)
        rng = self._random
        carrier = rng.choice(("DHL", "UPS", "DPD", "PostNL"))
        code = "".join(rng.choices("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", k=12))
        shipment.create(order_id, carrier, code, 1 + sum(q for _, q in lines) // 6)
        return shipment


# ---------------------------------------------------------------------- the two set-ups


class _CheckoutWorld:
    """What both set-ups share: the participants on one executor and scheduler."""

    def __init__(
        self,
        store: EventStore,
        *,
        inventory: Faults | None,
        payments: Faults | None,
        warehouse: Faults | None,
        decline_rate: float,
        seed: int | str,
        timeout: timedelta | float,
        batch_size: int,
        breaker: CircuitBreaker | None,
        max_attempts: int,
    ):
        self.store = store
        self.repository = Repository(store)
        self.executor = CommandExecutor(store)
        self.scheduler = CommandScheduler(
            store,
            self.executor,
            timeout=timeout,
            max_attempts=max_attempts,
            backoff=RetryPolicy.exponential(2, max_delay=60, max_attempts=max_attempts),
            batch_size=batch_size,
            breakers={"ChargePayment": breaker, "RefundPayment": breaker} if breaker else None,
        )
        self.inventory = CheckoutInventory(self.repository, faults=inventory)
        self.billing = CheckoutBilling(
            self.repository, gateway=payments, decline_rate=decline_rate, seed=seed
        )
        self.shipping = CheckoutShipping(self.repository, warehouse=warehouse, seed=seed)
        for service in (self.inventory, self.billing, self.shipping):
            service.register(self.executor)

    def stock(self, stock: Mapping[str, int] | int = 100) -> None:
        """Create products with this stock: ``{sku: units}``, or every catalogue product
        with the same number of units. Runs at once (no saga: setting up the shop)."""
        items = {sku: stock for sku in PRICES} if isinstance(stock, int) else dict(stock)
        with self.store.transaction():
            for sku, units in items.items():
                payload = {
                    "sku": sku,
                    "name": NAMES.get(sku, sku),
                    "price_cents": PRICES.get(sku, 1000),
                    "stock": units,
                }
                self.scheduler.submit(Command("CreateProduct", payload, command_id=f"stock-{sku}"))
        self.scheduler.run()

    def order(
        self, order_id: str, lines: Iterable[Iterable[Any]], method: str = "card"
    ) -> dict[str, Any]:
        """The checkout's data: its lines priced from the catalogue."""
        lines = [[str(sku), int(quantity)] for sku, quantity in lines]
        amount = sum(
            self.repository.get(Product, f"product-{sku}").price_cents * q for sku, q in lines
        )
        return {"order_id": order_id, "lines": lines, "amount_cents": amount, "method": method}

    def check(self) -> dict[str, Any]:
        """The invariants of :func:`check_checkout` on this store."""
        return check_checkout(self.store)


class Checkout(_CheckoutWorld):
    """The checkout saga, orchestrated by a :class:`~eventlab.SagaCoordinator`.

    Parameters
    ----------
    store : EventStore
        Where everything goes (use a :class:`~eventlab.SimulatedClock`).
    inventory, payments, warehouse : Faults, optional
        How each participant misbehaves (failure rate, latency, outages).
    decline_rate : float
        Probability that the bank declines a card (the saga compensates).
    seed : int or str
        Seeds the declines, charge ids, carriers and tracking codes.
    retry, compensation_retry, step_timeout
        The saga's policies (see :func:`checkout_saga`).
    timeout : timedelta or float
        The scheduler's timeout for one run (seconds).
    batch_size : int
        Commands per scheduler commit.
    breaker : CircuitBreaker, optional
        Guards the payment gateway (the scheduler holds its commands while open).
    """

    def __init__(
        self,
        store: EventStore,
        *,
        inventory: Faults | None = None,
        payments: Faults | None = None,
        warehouse: Faults | None = None,
        decline_rate: float = 0.0,
        seed: int | str = 0,
        retry: RetryPolicy | None = None,
        compensation_retry: RetryPolicy | None = None,
        step_timeout: timedelta | float | None = None,
        timeout: timedelta | float = 30.0,
        batch_size: int = 100,
        breaker: CircuitBreaker | None = None,
    ):
        super().__init__(
            store,
            inventory=inventory,
            payments=payments,
            warehouse=warehouse,
            decline_rate=decline_rate,
            seed=seed,
            timeout=timeout,
            batch_size=batch_size,
            breaker=breaker,
            max_attempts=1,  # every saga command says so anyway; the saga retries
        )
        self.saga = checkout_saga(
            retry=retry, compensation_retry=compensation_retry, timeout=step_timeout
        )
        self.coordinator = SagaCoordinator(store, self.scheduler, sagas=[self.saga])

    def start(self, order_id: str, lines: Iterable[Iterable[Any]], method: str = "card") -> str:
        """Start the checkout of order ``order_id``; its transaction id is the order id."""
        data = self.order(order_id, lines, method)
        return self.coordinator.start(self.saga, data, transaction_id=order_id)

    def run(self, until_idle: bool = True, *, max_commands: int | None = None) -> int:
        """Advance the sagas (see :meth:`SagaCoordinator.run`); returns how many settled."""
        return self.coordinator.run(until_idle, max_commands=max_commands)

    def status(self) -> pd.DataFrame:
        """Every checkout saga and where it stands."""
        return self.coordinator.status()


class ChoreographedCheckout(_CheckoutWorld):
    """The same checkout with no coordinator: services react to each other's events.

    ======================  =================================  =================
    when this commits       this service                       sends
    ======================  =================================  =================
    ``CheckoutRequested``   inventory                          ``ReserveStock``
    ``StockReserved``       billing (once per reservation)     ``ChargePayment``
    ``PaymentCharged``      shipping                           ``CreateShipment``
    ``PaymentFailed``       inventory                          ``ReleaseStock``
    ``ShipmentFailed``      billing, inventory                 ``RefundPayment``,
                                                               ``ReleaseStock``
    ======================  =================================  =================

    A service that gives up announces it (``StockFailed``, ``PaymentFailed``,
    ``ShipmentFailed``, ``ReleaseFailed``, ``RefundFailed`` in its own stream,
    ``<service>-<order id>``). Nobody keeps the checkout's state: where an order
    stands is read from all the services' streams by its correlation id. The
    scheduler retries failed commands with backoff (``max_attempts``).
    """

    def __init__(
        self,
        store: EventStore,
        *,
        inventory: Faults | None = None,
        payments: Faults | None = None,
        warehouse: Faults | None = None,
        decline_rate: float = 0.0,
        seed: int | str = 0,
        timeout: timedelta | float = 30.0,
        batch_size: int = 100,
        breaker: CircuitBreaker | None = None,
        max_attempts: int = 4,
    ):
        super().__init__(
            store,
            inventory=inventory,
            payments=payments,
            warehouse=warehouse,
            decline_rate=decline_rate,
            seed=seed,
            timeout=timeout,
            batch_size=batch_size,
            breaker=breaker,
            max_attempts=max_attempts,
        )
        self._requests: dict[str, dict[str, Any]] = {}  # what the services heard, by order
        flow = self.choreography = Choreography(store, self.scheduler, name=CHECKOUT)
        flow.on("CheckoutRequested", self._requested, service="inventory")
        flow.on(
            "StockReserved",
            lambda e: _charge(self._request(e)),
            service="billing",
            once_per=lambda e: e.causation_id,  # one charge for all the lines
        )
        flow.on("PaymentCharged", lambda e: _ship(self._request(e)), service="shipping")
        flow.on("PaymentFailed", lambda e: _release(self._request(e)), service="inventory")
        flow.on(
            "ShipmentFailed",
            lambda e: [_refund(self._request(e)), _release(self._request(e))],
            service="billing",
        )
        for command_type, event_type, service in (
            ("ReserveStock", "StockFailed", "inventory"),
            ("ChargePayment", "PaymentFailed", "billing"),
            ("CreateShipment", "ShipmentFailed", "shipping"),
            ("ReleaseStock", "ReleaseFailed", "inventory"),
            ("RefundPayment", "RefundFailed", "billing"),
        ):
            flow.on_failure(command_type, event_type, service=service)

    def _requested(self, event: RecordedEvent) -> tuple[str, dict[str, Any]]:
        self._requests[event.correlation_id] = event.data
        return _reserve(event.data)

    def _request(self, event: RecordedEvent) -> dict[str, Any]:
        """The checkout request an event belongs to (what the services heard of it)."""
        request = self._requests.get(event.correlation_id)
        if request is None:  # heard before this object existed: read it back
            stream = f"{CHECKOUT}-{event.correlation_id}"
            request = self._requests[event.correlation_id] = self.store.read_stream(stream)[0].data
        return request

    def start(self, order_id: str, lines: Iterable[Iterable[Any]], method: str = "card") -> str:
        """Ask for the checkout of order ``order_id`` (a ``CheckoutRequested`` event)."""
        data = self.order(order_id, lines, method)
        return self.choreography.start("CheckoutRequested", data, transaction_id=order_id)

    def run(self, until_idle: bool = True) -> int:
        """Run the commands the reactions sent, and theirs; returns how many ran."""
        return self.choreography.run(until_idle)


# ---------------------------------------------------------------------- invariants


def check_checkout(store: EventStore) -> dict[str, Any]:
    """Check the checkout invariants on a store; returns counts and the violations found.

    - Stock is conserved: for every product, units available plus units held by
      reservations equal the units created and restocked.
    - An order that was shipped holds its reservation and its payment; one
      that was not holds neither (no reservation, no charge without a refund),
      unless its saga is stuck (a compensation gave up: an operator's case).
      A stuck saga the operator abandoned (``SagaCoordinator.abandon``) is
      aborted: what it left undone is reported, until set right.
    - Every saga ended completed, aborted or stuck; completed ones shipped.
    - No step ran twice: at most one succeeded command per saga step, one
      reservation per order and product, one invoice and one shipment per order.

    Returns
    -------
    dict
        ``orders`` and their ``outcomes`` (``{"completed": n, ...}``; for a
        choreography: shipped, undone or stuck), and ``violations`` (a list of
        sentences; empty when every invariant holds).
    """
    events = store.sql(
        "SELECT stream_id, type, CAST(data AS VARCHAR) AS data, causation_id FROM events "
        "WHERE starts_with(stream_id, 'product-') OR starts_with(stream_id, 'invoice-') "
        "OR starts_with(stream_id, 'shipment-') OR list_contains($1, type) ORDER BY position",
        [["SagaStarted", "CheckoutRequested", "ReleaseFailed", "RefundFailed"]],
    )
    events["data"] = events["data"].map(json.loads)
    violations: list[str] = []
    orders: dict[str, dict[str, int]] = {}
    stuck: set[str] = set()
    created: dict[str, int] = {}
    held: dict[str, dict[str, int]] = {}
    reservations: dict[tuple[str, str], int] = {}
    invoices: dict[str, str] = {}
    issued: dict[str, int] = {}
    shipments: dict[str, int] = {}
    for stream, kind, data in events[["stream_id", "type", "data"]].itertuples(index=False):
        if kind in ("SagaStarted", "CheckoutRequested"):
            order = data.get("data", data) if kind == "SagaStarted" else data
            if kind == "SagaStarted" and data.get("saga") != CHECKOUT:
                continue
            orders[order["order_id"]] = {sku: q for sku, q in order["lines"]}
        elif kind in ("ReleaseFailed", "RefundFailed"):
            stuck.add(stream.split("-", 1)[1])
        elif kind == "ProductCreated":
            created[stream] = data["stock"]
            held[stream] = {}
        elif kind == "ProductRestocked":
            created[stream] += data["quantity"]
        elif kind == "StockReserved":
            held[stream][data["order_id"]] = data["quantity"]
            key = (data["order_id"], stream)
            reservations[key] = reservations.get(key, 0) + 1
        elif kind == "StockReleased":
            held[stream].pop(data["order_id"], None)
        elif kind == "InvoiceIssued":
            issued[data["order_id"]] = issued.get(data["order_id"], 0) + 1
        elif kind in ("PaymentCharged", "PaymentRefunded", "PaymentDeclined"):
            invoices[stream.removeprefix("invoice-")] = kind
        elif kind == "ShipmentCreated":
            shipments[data["order_id"]] = shipments.get(data["order_id"], 0) + 1
    # Stock: what the products' own state says, against what was created.
    for stream in created:
        product = Product.load(store, stream)
        if product.stock + sum(product.reserved.values()) != created[stream]:
            violations.append(
                f"{product.sku}: {product.stock} available + {sum(product.reserved.values())} "
                f"held != {created[stream]} created and restocked"
            )
    states = saga_status(store)
    saga_state = dict(zip(states["transaction_id"], states["state"], strict=True))
    stuck |= {tx for tx, state in saga_state.items() if state == "stuck"}
    outcomes: dict[str, int] = {}
    for order_id, lines in orders.items():
        holding = {
            stream.removeprefix("product-"): quantities[order_id]
            for stream, quantities in held.items()
            if order_id in quantities
        }
        payment = invoices.get(order_id)
        shipped = shipments.get(order_id, 0) > 0
        state = saga_state.get(order_id)
        if state is None:  # choreographed: read the outcome off the services' streams
            state = "stuck" if order_id in stuck else ("shipped" if shipped else "undone")
        outcomes[state] = outcomes.get(state, 0) + 1
        if state in ("running", "compensating"):
            violations.append(f"order {order_id}: its saga is still {state}")
        if shipped:
            if holding != lines:
                violations.append(f"order {order_id} shipped holding {holding}, not {lines}")
            if payment != "PaymentCharged":
                violations.append(f"order {order_id} shipped but its payment is {payment}")
            if state not in ("completed", "shipped"):
                violations.append(f"order {order_id} shipped but its saga is {state}")
        elif order_id not in stuck:
            if holding:
                violations.append(f"order {order_id} was not shipped but holds {holding}")
            if payment == "PaymentCharged":
                violations.append(f"order {order_id} was charged without a shipment or refund")
            if state == "completed":
                violations.append(f"order {order_id}: its saga completed without a shipment")
        for what, count in (
            ("invoice", issued.get(order_id, 0)),
            ("shipment", shipments.get(order_id, 0)),
        ):
            if count > 1:
                violations.append(f"order {order_id} has {count} {what}s")
    violations += [
        f"order {order_id} reserved {stream.removeprefix('product-')} {count} times"
        for (order_id, stream), count in reservations.items()
        if count > 1
    ]
    commands = (
        store.sql(
            "SELECT correlation_id, json_extract_string(context, '$.step') AS step, "
            "json_extract_string(context, '$.kind') AS kind, count(*) AS n FROM commands "
            "WHERE status = 'succeeded' AND json_extract_string(context, '$.saga') = $1 "
            "GROUP BY ALL HAVING count(*) > 1",
            [CHECKOUT],
        )
        if _has_commands(store)
        else pd.DataFrame()
    )
    violations += [
        f"saga {row.correlation_id}: the {row.kind} of step {row.step} succeeded {row.n} times"
        for row in commands.itertuples()
    ]
    return {"orders": len(orders), "outcomes": outcomes, "violations": violations}


def _has_commands(store: EventStore) -> bool:
    tables = store.sql("SELECT table_name FROM duckdb_tables() WHERE table_name = 'commands'")
    return not tables.empty
