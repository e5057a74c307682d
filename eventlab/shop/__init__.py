"""The shop: the course's worked example of commands, events and reactions.

``ProductService`` and ``OrderService`` handle the customer's and the
back office's commands; ``BillingService`` and ``ShippingService`` react to
their events with payments and shipments. :class:`Shop` wires the four on one
store, and :func:`simulate` drives days of orders through it, with failures
injected at the payment gateway and the warehouse.

>>> import eventlab as el
>>> store = el.EventStore(clock=el.SimulatedClock("2024-03-04"))
>>> summary = el.shop.simulate(store, orders=20, seed=1)
>>> summary["orders"], sorted(summary["order_states"])
(20, ['cancelled', 'shipped'])
"""

from .aggregates import (
    ORDER_STATUSES,
    Invoice,
    Order,
    Product,
    Shipment,
    invoice_stream,
    order_stream,
    product_stream,
    shipment_stream,
)
from .app import Shop
from .checkout import (
    Checkout,
    CheckoutBilling,
    CheckoutInventory,
    CheckoutShipping,
    ChoreographedCheckout,
    check_checkout,
    checkout_saga,
)
from .failures import Faults, ParticipantDown, ParticipantError, ParticipantFailed
from .repository import Repository
from .services import (
    BillingService,
    OrderService,
    ProductService,
    ShippingService,
    reaction_id,
)
from .simulate import CATALOGUE, order_states, simulate, summary_lines

__all__ = [
    "CATALOGUE",
    "ORDER_STATUSES",
    "BillingService",
    "Checkout",
    "CheckoutBilling",
    "CheckoutInventory",
    "CheckoutShipping",
    "ChoreographedCheckout",
    "Faults",
    "Invoice",
    "Order",
    "OrderService",
    "ParticipantDown",
    "ParticipantError",
    "ParticipantFailed",
    "Product",
    "ProductService",
    "Repository",
    "Shipment",
    "ShippingService",
    "Shop",
    "check_checkout",
    "checkout_saga",
    "invoice_stream",
    "order_states",
    "order_stream",
    "product_stream",
    "reaction_id",
    "shipment_stream",
    "simulate",
    "summary_lines",
]
