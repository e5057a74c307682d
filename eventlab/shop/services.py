"""The shop's four services: command handlers on an executor, and reactions to events.

===============  ===============================================  ==========================
service          commands it handles                              events it reacts to
===============  ===============================================  ==========================
ProductService   CreateProduct, ChangePrice, Restock,             OrderCancelled (after
                 ReserveStock, ReleaseStock                       submit: ReleaseStock)
OrderService     PlaceOrder, AddItem, SubmitOrder, CancelOrder,   PaymentCharged,
                 MarkOrderPaid, MarkOrderShipped                  PaymentDeclined,
                                                                  ShipmentCreated
BillingService   ChargePayment, RefundPayment                     OrderSubmitted,
                                                                  OrderCancelled
ShippingService  CreateShipment, CancelShipment                   OrderPaid, OrderCancelled
===============  ===============================================  ==========================

A reaction submits a follow-up command whose id is derived from the event that
caused it, ``<CommandType>:<stream_id>@<version>`` (the event's id is in the
command's context as ``caused_by``), so delivering the event twice submits the
command once. Its correlation id is the order's stream id, as are those of the
events it causes: one order's whole causal chain shares one correlation id.

Handlers take ``(command, ctx)`` and return the aggregates to save (see
:class:`~eventlab.CommandExecutor`); a broken rule raises
:class:`~eventlab.CommandRejected`; an outside participant's failure (see
:mod:`eventlab.shop.failures`) is any other exception, which a scheduler retries.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..commands import Command
from ..executor import CommandContext, CommandExecutor, CommandRejected
from .aggregates import (
    PAID,
    SUBMITTED,
    Invoice,
    Order,
    Product,
    Shipment,
    invoice_stream,
    order_stream,
    product_stream,
    shipment_stream,
)
from .failures import Faults

if TYPE_CHECKING:
    from ..bus import EventBus
    from ..events import RecordedEvent
    from .repository import Repository

Submit = Callable[[Command], Any]

CARRIERS = ("DHL", "UPS", "DPD", "PostNL")


def reaction_id(command_type: str, event: RecordedEvent) -> str:
    """The id of the command an event causes: ``<CommandType>:<stream_id>@<version>``."""
    return f"{command_type}:{event.stream_id}@{event.version}"


def _require(command: Command, *keys: str) -> list[Any]:
    """The payload's values for ``keys``, or a rejection naming the missing ones."""
    payload = command.payload
    missing = [key for key in keys if key not in payload]
    if missing:
        raise CommandRejected(
            f"{command.type} needs {', '.join(repr(k) for k in missing)} in its payload, "
            f"e.g. {{{', '.join(f'{k!r}: ...' for k in keys)}}}"
        )
    return [payload[key] for key in keys]


def _check_id(what: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise CommandRejected(f"{what} must be a non-empty string, got {value!r}")
    return value


def _lines(value: Any) -> list[tuple[str, int]]:
    """Order lines given as ``[[sku, quantity], ...]``."""
    if not isinstance(value, list) or not value:
        raise CommandRejected(
            f"lines must be a non-empty list of [sku, quantity] pairs, got {value!r:.80}"
        )
    lines = []
    for line in value:
        if not isinstance(line, list | tuple) or len(line) != 2:
            raise CommandRejected(f"each line is a [sku, quantity] pair, got {line!r:.80}")
        lines.append((_check_id("a sku", line[0]), line[1]))
    skus = [sku for sku, _ in lines]
    if len(set(skus)) != len(skus):
        raise CommandRejected(f"a sku appears twice in {skus}; give each sku one line")
    return lines


class _Service:
    """What every service shares: the repository, a way to submit, its registration."""

    #: command type -> name of the handler method
    handlers: dict[str, str] = {}
    #: event types the service reacts to (``on_<EventType>`` methods)
    reacts_to: tuple[str, ...] = ()
    name = "service"

    def __init__(self, repository: Repository, submit: Submit | None = None):
        self.repository = repository
        self.submit = submit

    def register(self, executor: CommandExecutor) -> None:
        """Register this service's command handlers on ``executor``."""
        for command_type, method in self.handlers.items():
            executor.register(command_type, getattr(self, method))

    def subscribe(self, bus: EventBus) -> None:
        """Start reacting to committed events on ``bus`` (needs ``submit``)."""
        if self.reacts_to:
            bus.subscribe(self.react, types=self.reacts_to, name=f"shop.{self.name}")

    def react(self, event: RecordedEvent) -> None:
        """Handle one committed event (called by the bus)."""
        getattr(self, f"on_{event.type}")(event)

    def _follow_up(
        self, command_type: str, event: RecordedEvent, order_id: str, payload: dict[str, Any]
    ) -> Command:
        command = Command(
            command_type,
            payload,
            command_id=reaction_id(command_type, event),
            correlation_id=order_stream(order_id),
            context={"caused_by": event.event_id},
        )
        if self.submit is None:
            raise CommandRejected(
                f"the {self.name} service reacts to {event.type} but was given no submit "
                f"function; build it with submit=scheduler.submit (el.shop.Shop does)"
            )
        self.submit(command)
        return command

    def _order(self, order_id: str) -> Order:
        return self.repository.get(Order, order_stream(order_id))

    def _product(self, sku: str) -> Product:
        product = self.repository.get(Product, product_stream(_check_id("a sku", sku)))
        product._check_exists()
        return product


# ---------------------------------------------------------------------- products


class ProductService(_Service):
    """The catalogue and its stock (the inventory).

    ``ReserveStock`` takes stock for every line of an order or for none;
    ``ReleaseStock`` gives back what an order holds. When an order that had
    reserved stock is cancelled, the service releases it.
    """

    name = "products"
    handlers = {
        "CreateProduct": "create_product",
        "ChangePrice": "change_price",
        "Restock": "restock",
        "ReserveStock": "reserve_stock",
        "ReleaseStock": "release_stock",
    }
    reacts_to = ("OrderCancelled",)

    def create_product(self, command: Command, ctx: CommandContext) -> Product:
        """``CreateProduct {sku, name, price_cents, stock=0}`` -> ProductCreated."""
        sku, name, price = _require(command, "sku", "name", "price_cents")
        product = self.repository.get(Product, product_stream(_check_id("sku", sku)))
        product.create(sku, name, price_cents=price, stock=command.payload.get("stock", 0))
        return product

    def change_price(self, command: Command, ctx: CommandContext) -> Product:
        """``ChangePrice {sku, price_cents}`` -> PriceChanged."""
        sku, price = _require(command, "sku", "price_cents")
        product = self._product(sku)
        product.change_price(price)
        return product

    def restock(self, command: Command, ctx: CommandContext) -> Product:
        """``Restock {sku, quantity}`` -> ProductRestocked."""
        sku, quantity = _require(command, "sku", "quantity")
        product = self._product(sku)
        product.restock(quantity)
        return product

    def reserve(self, order_id: str, lines: Iterable[tuple[str, int]]) -> list[Product]:
        """Reserve every line or none: all are checked before anything is emitted."""
        products = [(self._product(sku), quantity) for sku, quantity in lines]
        for product, quantity in products:
            product.check_reservation(order_id, quantity)
        for product, quantity in products:
            product.reserve(order_id, quantity)
        return [product for product, _ in products]

    def reserve_stock(self, command: Command, ctx: CommandContext) -> list[Product]:
        """``ReserveStock {order_id, lines: [[sku, quantity], ...]}`` -> StockReserved each."""
        order_id, lines = _require(command, "order_id", "lines")
        return self.reserve(_check_id("order_id", order_id), _lines(lines))

    def release_stock(self, command: Command, ctx: CommandContext) -> list[Product]:
        """``ReleaseStock {order_id, skus}`` -> StockReleased for each sku holding some."""
        order_id, skus = _require(command, "order_id", "skus")
        if not isinstance(skus, list) or not skus:
            raise CommandRejected(f"skus must be a non-empty list, got {skus!r:.80}")
        held = [p for p in map(self._product, skus) if order_id in p.reserved]
        if not held:
            raise CommandRejected(f"none of {skus} holds stock for order {order_id}")
        for product in held:
            product.release(order_id)
        return held

    def on_OrderCancelled(self, event: RecordedEvent) -> None:
        if event.data["previous_status"] not in (SUBMITTED, PAID):
            return  # nothing was reserved before the order was submitted
        order_id = event.stream_id.removeprefix("order-")
        skus = list(self._order(order_id).lines)
        self._follow_up("ReleaseStock", event, order_id, {"order_id": order_id, "skus": skus})


# ---------------------------------------------------------------------- orders


class OrderService(_Service):
    """Orders, from the first item to shipped or cancelled.

    ``SubmitOrder`` reserves the stock of every line in the same transaction as
    the order's ``OrderSubmitted`` (through the product service), so an order
    is submitted with its stock or not at all: an out-of-stock line rejects it.
    ``CancelOrder`` is refused once a shipment exists. The order learns of its
    payment and shipment from the billing and shipping services' events.
    """

    name = "orders"
    handlers = {
        "PlaceOrder": "place_order",
        "AddItem": "add_item",
        "SubmitOrder": "submit_order",
        "CancelOrder": "cancel_order",
        "MarkOrderPaid": "mark_order_paid",
        "MarkOrderShipped": "mark_order_shipped",
    }
    reacts_to = ("PaymentCharged", "PaymentDeclined", "ShipmentCreated")

    def __init__(
        self, repository: Repository, products: ProductService, submit: Submit | None = None
    ):
        super().__init__(repository, submit)
        self.products = products

    def place_order(self, command: Command, ctx: CommandContext) -> Order:
        """``PlaceOrder {order_id, customer_id, items: [[sku, quantity], ...], channel,
        payment_method}`` -> OrderPlaced, ItemAdded per item (at the catalogue's price)."""
        order_id, customer_id, items = _require(command, "order_id", "customer_id", "items")
        order = self._order(_check_id("order_id", order_id))
        priced = [(sku, qty, self._product(sku).price_cents) for sku, qty in _lines(items)]
        payload = command.payload
        order.place(
            order_id,
            customer_id,
            priced,
            channel=payload.get("channel", "web"),
            payment_method=payload.get("payment_method", "card"),
        )
        return order

    def add_item(self, command: Command, ctx: CommandContext) -> Order:
        """``AddItem {order_id, sku, quantity}`` -> ItemAdded."""
        order_id, sku, quantity = _require(command, "order_id", "sku", "quantity")
        order = self._order(_check_id("order_id", order_id))
        order._check_exists()
        order.add_item(sku, quantity, self._product(sku).price_cents)
        return order

    def submit_order(self, command: Command, ctx: CommandContext) -> list:
        """``SubmitOrder {order_id}`` -> StockReserved per line, OrderSubmitted."""
        (order_id,) = _require(command, "order_id")
        order = self._order(_check_id("order_id", order_id))
        order.check_submit()
        lines = [(sku, line[0]) for sku, line in order.lines.items()]
        products = self.products.reserve(order_id, lines)
        order.submit()
        return [order, *products]

    def cancel_order(self, command: Command, ctx: CommandContext) -> Order:
        """``CancelOrder {order_id, reason}`` -> OrderCancelled (refused once shipped)."""
        order_id, reason = _require(command, "order_id", "reason")
        order = self._order(_check_id("order_id", order_id))
        order._check_exists()
        shipment = self.repository.get(Shipment, shipment_stream(order_id))
        if shipment.exists and not shipment.cancelled:
            raise CommandRejected(
                f"order {order_id} has left the warehouse ({shipment.carrier} "
                f"{shipment.tracking_code}), so it cannot be cancelled; return it instead"
            )
        order.cancel(reason)
        return order

    def mark_order_paid(self, command: Command, ctx: CommandContext) -> Order:
        """``MarkOrderPaid {order_id, amount_cents, charge_id}`` -> OrderPaid."""
        order_id, amount, charge_id = _require(command, "order_id", "amount_cents", "charge_id")
        order = self._order(order_id)
        order.mark_paid(amount, charge_id)
        return order

    def mark_order_shipped(self, command: Command, ctx: CommandContext) -> Order:
        """``MarkOrderShipped {order_id, carrier, tracking_code}`` -> OrderShipped."""
        order_id, carrier, code = _require(command, "order_id", "carrier", "tracking_code")
        order = self._order(order_id)
        order.mark_shipped(carrier, code)
        return order

    def on_PaymentCharged(self, event: RecordedEvent) -> None:
        order_id = event.stream_id.removeprefix("invoice-")
        data = event.data
        payload = {
            "order_id": order_id,
            "amount_cents": data["amount_cents"],
            "charge_id": data["charge_id"],
        }
        self._follow_up("MarkOrderPaid", event, order_id, payload)

    def on_PaymentDeclined(self, event: RecordedEvent) -> None:
        order_id = event.stream_id.removeprefix("invoice-")
        payload = {"order_id": order_id, "reason": "payment declined"}
        self._follow_up("CancelOrder", event, order_id, payload)

    def on_ShipmentCreated(self, event: RecordedEvent) -> None:
        data = event.data
        payload = {
            "order_id": data["order_id"],
            "carrier": data["carrier"],
            "tracking_code": data["tracking_code"],
        }
        self._follow_up("MarkOrderShipped", event, data["order_id"], payload)


# ---------------------------------------------------------------------- billing


class BillingService(_Service):
    """Invoices and payments, through an outside payment gateway.

    ``ChargePayment`` issues the order's invoice and charges it in one step;
    the gateway (a :class:`~eventlab.shop.Faults`) may fail, which fails the
    command for the scheduler to retry (a scheduler may also guard these
    commands with a circuit breaker, as :class:`~eventlab.shop.Shop` does). A
    card the bank declines is not a failure but a fact, ``PaymentDeclined``
    (probability ``decline_rate``), on which the order service cancels the
    order. A cancelled order is refunded if it was charged.

    Parameters
    ----------
    gateway : Faults, optional
        The payment gateway's behaviour; None for one that always works at once.
    decline_rate : float
        Probability that a charge is declined.
    seed : int or str
        Seeds the declines and charge ids.
    """

    name = "billing"
    handlers = {"ChargePayment": "charge_payment", "RefundPayment": "refund_payment"}
    reacts_to = ("OrderSubmitted", "OrderCancelled")

    def __init__(
        self,
        repository: Repository,
        submit: Submit | None = None,
        *,
        gateway: Faults | None = None,
        decline_rate: float = 0.0,
        seed: int | str = 0,
    ):
        super().__init__(repository, submit)
        self.gateway = gateway
        self.decline_rate = decline_rate
        self._random = random.Random(f"{seed}:billing")

    def _call_gateway(self, ctx: CommandContext) -> None:
        if self.gateway is not None:
            self.gateway.call(ctx.clock)

    def charge_payment(self, command: Command, ctx: CommandContext) -> Invoice:
        """``ChargePayment {order_id, amount_cents, method}`` -> InvoiceIssued, then
        PaymentCharged or PaymentDeclined."""
        order_id, amount, method = _require(command, "order_id", "amount_cents", "method")
        order = self._order(_check_id("order_id", order_id))
        if order.status != SUBMITTED:
            raise CommandRejected(
                f"order {order_id} is {order.status or 'unknown'}; only a submitted order is "
                f"charged"
            )
        invoice = self.repository.get(Invoice, invoice_stream(order_id))
        invoice.issue(order_id, amount)  # rejects a second charge before calling out
        self._call_gateway(ctx)
        draw = self._random.random()
        if draw < self.decline_rate:
            invoice.decline(method, "card declined by the bank")
        else:
            invoice.charge(method, f"ch_{self._random.getrandbits(48):012x}")
        return invoice

    def refund_payment(self, command: Command, ctx: CommandContext) -> Invoice:
        """``RefundPayment {order_id, reason}`` -> PaymentRefunded."""
        order_id, reason = _require(command, "order_id", "reason")
        invoice = self.repository.get(Invoice, invoice_stream(_check_id("order_id", order_id)))
        invoice.check_refundable()  # before calling out
        # Emitted only once the gateway has refunded: a failed call leaves the cached
        # invoice as the store has it, so the retry need not read it back.
        self._call_gateway(ctx)
        invoice.refund(reason)
        return invoice

    def on_OrderSubmitted(self, event: RecordedEvent) -> None:
        order_id = event.stream_id.removeprefix("order-")
        data = event.data
        payload = {
            "order_id": order_id,
            "amount_cents": data["total_cents"],
            "method": data["payment_method"],
        }
        self._follow_up("ChargePayment", event, order_id, payload)

    def on_OrderCancelled(self, event: RecordedEvent) -> None:
        order_id = event.stream_id.removeprefix("order-")
        if self.repository.get(Invoice, invoice_stream(order_id)).status == "charged":
            payload = {"order_id": order_id, "reason": event.data["reason"]}
            self._follow_up("RefundPayment", event, order_id, payload)


# ---------------------------------------------------------------------- shipping


class ShippingService(_Service):
    """Shipments, through an outside warehouse (slow now and then).

    When an order is paid the service either ships it at once or, with
    ``pickups=True``, keeps it for the next warehouse pick-up: :meth:`dispatch`
    then submits one ``CreateShipment`` per waiting order. An order cancelled
    while waiting is dropped from the pick-up.

    Parameters
    ----------
    warehouse : Faults, optional
        The warehouse system's behaviour (slow calls make timeouts).
    pickups : bool
        Wait for :meth:`dispatch` instead of shipping as soon as an order is paid.
    seed : int or str
        Seeds carriers and tracking codes.
    """

    name = "shipping"
    handlers = {"CreateShipment": "create_shipment", "CancelShipment": "cancel_shipment"}
    reacts_to = ("OrderPaid", "OrderCancelled")

    def __init__(
        self,
        repository: Repository,
        submit: Submit | None = None,
        *,
        warehouse: Faults | None = None,
        pickups: bool = False,
        seed: int | str = 0,
    ):
        super().__init__(repository, submit)
        self.warehouse = warehouse
        self.pickups = pickups
        self.waiting: dict[str, RecordedEvent] = {}  # order_id -> its OrderPaid, in pay order
        self._random = random.Random(f"{seed}:shipping")

    def create_shipment(self, command: Command, ctx: CommandContext) -> Shipment:
        """``CreateShipment {order_id}`` -> ShipmentCreated (the order must be paid)."""
        (order_id,) = _require(command, "order_id")
        order = self._order(_check_id("order_id", order_id))
        if order.status != PAID:
            raise CommandRejected(
                f"order {order_id} is {order.status or 'unknown'}; only a paid order is shipped"
            )
        shipment = self.repository.get(Shipment, shipment_stream(order_id))
        if shipment.exists:
            raise CommandRejected(f"order {order_id} already has a shipment")
        if self.warehouse is not None:
            self.warehouse.call(ctx.clock)
        rng = self._random
        carrier = rng.choice(CARRIERS)
        code = "".join(rng.choices("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", k=12))
        parcels = 1 + sum(line[0] for line in order.lines.values()) // 6
        shipment.create(order_id, carrier, code, parcels)
        return shipment

    def cancel_shipment(self, command: Command, ctx: CommandContext) -> Shipment:
        """``CancelShipment {order_id, reason}`` -> ShipmentCancelled."""
        order_id, reason = _require(command, "order_id", "reason")
        shipment = self.repository.get(Shipment, shipment_stream(_check_id("order_id", order_id)))
        shipment.cancel(reason)
        return shipment

    def on_OrderPaid(self, event: RecordedEvent) -> None:
        order_id = event.stream_id.removeprefix("order-")
        if not self.pickups:
            self._follow_up("CreateShipment", event, order_id, {"order_id": order_id})
            return
        self.waiting[order_id] = event

    def on_OrderCancelled(self, event: RecordedEvent) -> None:
        self.waiting.pop(event.stream_id.removeprefix("order-"), None)

    def dispatch(self) -> int:
        """The warehouse pick-up: submit a ``CreateShipment`` for every waiting order."""
        waiting, self.waiting = self.waiting, {}
        for order_id, event in waiting.items():
            self._follow_up("CreateShipment", event, order_id, {"order_id": order_id})
        return len(waiting)
