"""The shop's aggregates: Product, Order, Invoice and Shipment.

Each is an :class:`~eventlab.Aggregate` in a stream of its own:

=============  =========================  ==============================================
aggregate      stream                     events
=============  =========================  ==============================================
Product        ``product-<sku>``          ProductCreated, PriceChanged, ProductRestocked,
                                          StockReserved, StockReleased
Order          ``order-<order_id>``       OrderPlaced, ItemAdded, OrderSubmitted,
                                          OrderPaid, OrderShipped, OrderCancelled
Invoice        ``invoice-<order_id>``     InvoiceIssued, PaymentCharged, PaymentDeclined,
                                          PaymentRefunded
Shipment       ``shipment-<order_id>``    ShipmentCreated, ShipmentCancelled
=============  =========================  ==============================================

Amounts are whole cents (``price_cents``, ``amount_cents``), so totals add up
exactly. A command method checks the rules and raises
:class:`~eventlab.CommandRejected` (the message says what is wrong) before
emitting anything, so a refused command changes nothing.
"""

from __future__ import annotations

from typing import Any

from ..aggregate import Aggregate
from ..events import RecordedEvent
from ..executor import CommandRejected

# Order statuses, in the order an order normally goes through them.
PLACED, SUBMITTED, PAID, SHIPPED, CANCELLED = "placed", "submitted", "paid", "shipped", "cancelled"
ORDER_STATUSES = (PLACED, SUBMITTED, PAID, SHIPPED, CANCELLED)
MAX_QUANTITY = 99  # per order line: more is a typo, not an order


def product_stream(sku: str) -> str:
    """The stream of a product: ``product-<sku>``."""
    return f"product-{sku}"


def order_stream(order_id: str) -> str:
    """The stream of an order: ``order-<order_id>`` (also the order's correlation id)."""
    return f"order-{order_id}"


def invoice_stream(order_id: str) -> str:
    """The stream of an order's invoice and its payment: ``invoice-<order_id>``."""
    return f"invoice-{order_id}"


def shipment_stream(order_id: str) -> str:
    """The stream of an order's shipment: ``shipment-<order_id>``."""
    return f"shipment-{order_id}"


def _check_cents(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CommandRejected(
            f"{what} must be a whole number of cents greater than 0, e.g. 1250 for 12.50, "
            f"got {value!r}"
        )
    return value


def _check_quantity(value: Any, *, limit: int | None = MAX_QUANTITY) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CommandRejected(f"a quantity must be a whole number of 1 or more, got {value!r}")
    if limit is not None and value > limit:
        raise CommandRejected(f"a quantity of {value} is more than {limit}; split the order")
    return value


class Product(Aggregate):
    """A product of the catalogue and its stock.

    ``stock`` counts the units that can still be sold: a reservation for an
    order takes units out of it at once, a release puts them back, a restock
    adds new ones. ``reserved`` maps each order with a reservation to its
    quantity. Stock never goes below zero: a reservation that would take more
    than is there is refused.

    Examples
    --------
    >>> mug = Product("product-MUG-001")
    >>> mug.create("MUG-001", "Enamel mug", price_cents=1250, stock=3)
    >>> mug.reserve("000001", 2)
    >>> mug.stock, mug.reserved
    (1, {'000001': 2})
    >>> mug.reserve("000002", 2)
    Traceback (most recent call last):
    ...
    eventlab.executor.CommandRejected: out of stock: MUG-001 has 1 left, order 000002 wants 2
    """

    def __init__(self, id: str):
        super().__init__(id)
        self.sku: str | None = None
        self.name = ""
        self.price_cents = 0
        self.stock = 0
        self.reserved: dict[str, int] = {}

    @property
    def exists(self) -> bool:
        return self.sku is not None

    def _check_exists(self) -> None:
        if self.sku is None:
            sku = self.id.removeprefix("product-")
            raise CommandRejected(
                f"there is no product {sku!r} in the catalogue; create it first (CreateProduct)"
            )

    # ---------------------------------------------------------------- commands

    def create(self, sku: str, name: str, *, price_cents: int, stock: int = 0) -> None:
        if self.sku is not None:
            raise CommandRejected(f"product {sku!r} already exists; change it instead")
        if not isinstance(sku, str) or not sku or self.id != product_stream(sku):
            raise CommandRejected(f"the sku must be a non-empty string naming {self.id!r}")
        if not isinstance(name, str) or not name.strip():
            raise CommandRejected(f"product {sku!r} needs a name, got {name!r}")
        _check_cents("price_cents", price_cents)
        if isinstance(stock, bool) or not isinstance(stock, int) or stock < 0:
            raise CommandRejected(f"the initial stock must be 0 or more, got {stock!r}")
        self.emit(
            "ProductCreated",
            {"sku": sku, "name": name, "price_cents": price_cents, "stock": stock},
        )

    def change_price(self, price_cents: int) -> None:
        self._check_exists()
        _check_cents("price_cents", price_cents)
        if price_cents == self.price_cents:
            raise CommandRejected(f"{self.sku} already costs {price_cents} cents")
        self.emit("PriceChanged", {"price_cents": price_cents, "previous_cents": self.price_cents})

    def restock(self, quantity: int) -> None:
        self._check_exists()
        _check_quantity(quantity, limit=None)
        self.emit("ProductRestocked", {"quantity": quantity})

    def check_reservation(self, order_id: str, quantity: int) -> None:
        """Raise :class:`~eventlab.CommandRejected` unless :meth:`reserve` would succeed."""
        self._check_exists()
        _check_quantity(quantity)
        if order_id in self.reserved:
            raise CommandRejected(f"order {order_id} already has {self.sku} reserved")
        if quantity > self.stock:
            raise CommandRejected(
                f"out of stock: {self.sku} has {self.stock} left, order {order_id} wants {quantity}"
            )

    def reserve(self, order_id: str, quantity: int) -> None:
        self.check_reservation(order_id, quantity)
        self.emit("StockReserved", {"order_id": order_id, "quantity": quantity})

    def release(self, order_id: str) -> None:
        self._check_exists()
        quantity = self.reserved.get(order_id)
        if quantity is None:
            raise CommandRejected(f"{self.sku} holds no reservation for order {order_id}")
        self.emit("StockReleased", {"order_id": order_id, "quantity": quantity})

    # ---------------------------------------------------------------- events

    def apply_ProductCreated(self, event: RecordedEvent) -> None:
        data = event.data
        self.sku, self.name = data["sku"], data["name"]
        self.price_cents, self.stock = data["price_cents"], data["stock"]

    def apply_PriceChanged(self, event: RecordedEvent) -> None:
        self.price_cents = event.data["price_cents"]

    def apply_ProductRestocked(self, event: RecordedEvent) -> None:
        self.stock += event.data["quantity"]

    def apply_StockReserved(self, event: RecordedEvent) -> None:
        data = event.data
        self.stock -= data["quantity"]
        self.reserved[data["order_id"]] = data["quantity"]

    def apply_StockReleased(self, event: RecordedEvent) -> None:
        data = event.data
        self.stock += data["quantity"]
        del self.reserved[data["order_id"]]


class Order(Aggregate):
    """A customer's order: lines added while ``placed``, then submitted, paid, shipped.

    ``lines`` maps each sku to ``[quantity, price_cents]`` (the price when the
    item was added); adding a sku again adds to its quantity. An order can be
    cancelled until it is shipped.

    Examples
    --------
    >>> order = Order("order-000001")
    >>> order.place("000001", "c-0001", [("MUG-001", 2, 1250)])
    >>> order.add_item("TEE-010", 1, 1990)
    >>> order.submit()
    >>> order.status, order.total_cents
    ('submitted', 4490)
    >>> order.add_item("PEN-060", 1, 3400)
    Traceback (most recent call last):
    ...
    eventlab.executor.CommandRejected: order 000001 is submitted; add items before submitting it
    """

    def __init__(self, id: str):
        super().__init__(id)
        self.order_id: str | None = None
        self.customer_id: str | None = None
        self.payment_method = "card"
        self.status: str | None = None
        self.lines: dict[str, list[int]] = {}
        self.cancel_reason: str | None = None

    @property
    def exists(self) -> bool:
        return self.status is not None

    @property
    def total_cents(self) -> int:
        return sum(quantity * price for quantity, price in self.lines.values())

    def _check_exists(self) -> None:
        if self.status is None:
            order_id = self.id.removeprefix("order-")
            raise CommandRejected(f"there is no order {order_id!r}; place it first (PlaceOrder)")

    # ---------------------------------------------------------------- commands

    def place(
        self,
        order_id: str,
        customer_id: str,
        items: list[tuple[str, int, int]],
        *,
        channel: str = "web",
        payment_method: str = "card",
    ) -> None:
        """Open the order with its first items, each ``(sku, quantity, price_cents)``."""
        if self.status is not None:
            raise CommandRejected(f"order {order_id} already exists (it is {self.status})")
        if not isinstance(customer_id, str) or not customer_id:
            raise CommandRejected(f"an order needs a customer_id, got {customer_id!r}")
        if not items:
            raise CommandRejected(f"order {order_id} needs at least one item")
        for _, quantity, _ in items:
            _check_quantity(quantity)
        self.emit(
            "OrderPlaced",
            {
                "order_id": order_id,
                "customer_id": customer_id,
                "channel": channel,
                "payment_method": payment_method,
            },
        )
        for sku, quantity, price_cents in items:
            self.emit("ItemAdded", {"sku": sku, "quantity": quantity, "price_cents": price_cents})

    def add_item(self, sku: str, quantity: int, price_cents: int) -> None:
        self._check_exists()
        if self.status != PLACED:
            raise CommandRejected(
                f"order {self.order_id} is {self.status}; add items before submitting it"
            )
        _check_quantity(quantity)
        _check_cents("price_cents", price_cents)
        if quantity + self.lines.get(sku, [0])[0] > MAX_QUANTITY:
            raise CommandRejected(f"more than {MAX_QUANTITY} of {sku} in one order; split it")
        self.emit("ItemAdded", {"sku": sku, "quantity": quantity, "price_cents": price_cents})

    def check_submit(self) -> None:
        """Raise :class:`~eventlab.CommandRejected` unless :meth:`submit` would succeed."""
        self._check_exists()
        if self.status != PLACED:
            raise CommandRejected(f"order {self.order_id} is already {self.status}")
        if not self.lines:
            raise CommandRejected(f"order {self.order_id} has no items to submit")

    def submit(self) -> None:
        self.check_submit()
        self.emit(
            "OrderSubmitted",
            {
                "total_cents": self.total_cents,
                "payment_method": self.payment_method,
                "lines": [[sku, line[0]] for sku, line in self.lines.items()],
            },
        )

    def mark_paid(self, amount_cents: int, charge_id: str) -> None:
        self._check_exists()
        if self.status != SUBMITTED:
            raise CommandRejected(
                f"order {self.order_id} is {self.status}; only a submitted order can be paid"
            )
        if amount_cents != self.total_cents:
            raise CommandRejected(
                f"order {self.order_id} totals {self.total_cents} cents, the payment was "
                f"{amount_cents}"
            )
        self.emit("OrderPaid", {"amount_cents": amount_cents, "charge_id": charge_id})

    def mark_shipped(self, carrier: str, tracking_code: str) -> None:
        self._check_exists()
        if self.status != PAID:
            raise CommandRejected(
                f"order {self.order_id} is {self.status}; only a paid order can be shipped"
            )
        self.emit("OrderShipped", {"carrier": carrier, "tracking_code": tracking_code})

    def cancel(self, reason: str) -> None:
        self._check_exists()
        if self.status in (SHIPPED, CANCELLED):
            raise CommandRejected(
                f"order {self.order_id} is already {self.status}, so it cannot be cancelled"
            )
        if not isinstance(reason, str) or not reason:
            raise CommandRejected("a cancellation needs a reason, e.g. 'customer request'")
        self.emit("OrderCancelled", {"reason": reason, "previous_status": self.status})

    # ---------------------------------------------------------------- events

    def apply_OrderPlaced(self, event: RecordedEvent) -> None:
        data = event.data
        self.order_id, self.customer_id = data["order_id"], data["customer_id"]
        self.payment_method = data["payment_method"]
        self.status = PLACED

    def apply_ItemAdded(self, event: RecordedEvent) -> None:
        data = event.data
        line = self.lines.get(data["sku"])
        if line is None:
            self.lines[data["sku"]] = [data["quantity"], data["price_cents"]]
        else:
            line[0] += data["quantity"]

    def apply_OrderSubmitted(self, event: RecordedEvent) -> None:
        self.status = SUBMITTED

    def apply_OrderPaid(self, event: RecordedEvent) -> None:
        self.status = PAID

    def apply_OrderShipped(self, event: RecordedEvent) -> None:
        self.status = SHIPPED

    def apply_OrderCancelled(self, event: RecordedEvent) -> None:
        self.status = CANCELLED
        self.cancel_reason = event.data["reason"]


class Invoice(Aggregate):
    """The bill of one order and what happened to its payment.

    ``status`` is ``None`` (no invoice yet), ``"charged"``, ``"declined"`` or
    ``"refunded"``.
    """

    def __init__(self, id: str):
        super().__init__(id)
        self.order_id: str | None = None
        self.amount_cents = 0
        self.status: str | None = None
        self.charge_id: str | None = None

    def _check_issued(self) -> None:
        if self.order_id is None:
            order_id = self.id.removeprefix("invoice-")
            raise CommandRejected(f"order {order_id} has no invoice yet; charge it first")

    def issue(self, order_id: str, amount_cents: int) -> None:
        if self.order_id is not None:
            raise CommandRejected(f"order {order_id} already has an invoice ({self.status})")
        _check_cents("amount_cents", amount_cents)
        self.emit("InvoiceIssued", {"order_id": order_id, "amount_cents": amount_cents})

    def charge(self, method: str, charge_id: str) -> None:
        self._check_issued()
        if self.status is not None:
            raise CommandRejected(f"the invoice of order {self.order_id} is already {self.status}")
        self.emit(
            "PaymentCharged",
            {"amount_cents": self.amount_cents, "method": method, "charge_id": charge_id},
        )

    def decline(self, method: str, reason: str) -> None:
        self._check_issued()
        if self.status is not None:
            raise CommandRejected(f"the invoice of order {self.order_id} is already {self.status}")
        self.emit("PaymentDeclined", {"method": method, "reason": reason})

    def check_refundable(self) -> None:
        """Raise :class:`~eventlab.CommandRejected` unless the payment can be refunded."""
        self._check_issued()
        if self.status != "charged":
            raise CommandRejected(
                f"the payment of order {self.order_id} is {self.status}; only a charged payment "
                f"can be refunded"
            )

    def refund(self, reason: str) -> None:
        self.check_refundable()
        self.emit("PaymentRefunded", {"amount_cents": self.amount_cents, "reason": reason})

    def apply_InvoiceIssued(self, event: RecordedEvent) -> None:
        self.order_id = event.data["order_id"]
        self.amount_cents = event.data["amount_cents"]

    def apply_PaymentCharged(self, event: RecordedEvent) -> None:
        self.status = "charged"
        self.charge_id = event.data["charge_id"]

    def apply_PaymentDeclined(self, event: RecordedEvent) -> None:
        self.status = "declined"

    def apply_PaymentRefunded(self, event: RecordedEvent) -> None:
        self.status = "refunded"


class Shipment(Aggregate):
    """The parcel of one order: created with a carrier and tracking code, or cancelled."""

    def __init__(self, id: str):
        super().__init__(id)
        self.order_id: str | None = None
        self.carrier: str | None = None
        self.tracking_code: str | None = None
        self.cancelled = False

    @property
    def exists(self) -> bool:
        return self.order_id is not None

    def create(self, order_id: str, carrier: str, tracking_code: str, parcels: int) -> None:
        if self.order_id is not None:
            raise CommandRejected(f"order {order_id} already has a shipment")
        self.emit(
            "ShipmentCreated",
            {
                "order_id": order_id,
                "carrier": carrier,
                "tracking_code": tracking_code,
                "parcels": parcels,
            },
        )

    def cancel(self, reason: str) -> None:
        if self.order_id is None:
            order_id = self.id.removeprefix("shipment-")
            raise CommandRejected(f"order {order_id} has no shipment to cancel")
        if self.cancelled:
            raise CommandRejected(f"the shipment of order {self.order_id} is already cancelled")
        self.emit("ShipmentCancelled", {"reason": reason})

    def apply_ShipmentCreated(self, event: RecordedEvent) -> None:
        data = event.data
        self.order_id, self.carrier = data["order_id"], data["carrier"]
        self.tracking_code = data["tracking_code"]

    def apply_ShipmentCancelled(self, event: RecordedEvent) -> None:
        self.cancelled = True
