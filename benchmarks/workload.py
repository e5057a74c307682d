"""The benchmark workload: orders of six events each, with small realistic payloads.

Every order has the same shape (OrderPlaced, three ItemAdded, OrderPaid,
OrderShipped); the values come from a seeded random generator, so both stores
receive exactly the same data in every run.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

EVENTS_PER_ORDER = 6

_CATALOGUE: list[tuple[str, str, float]] = [
    ("SKU-1001", "Espresso beans 1kg", 18.90),
    ("SKU-1002", "Milk frother", 34.50),
    ("SKU-1003", "Ceramic cup", 7.25),
    ("SKU-1004", "Paper filters x100", 3.99),
    ("SKU-1005", "Hand grinder", 59.00),
    ("SKU-1006", "Kettle, gooseneck", 42.00),
    ("SKU-1007", "Decaf beans 500g", 11.40),
    ("SKU-1008", "Cleaning tablets", 9.95),
]
_CITIES: list[tuple[str, str]] = [
    ("Lyon", "FR"),
    ("Leipzig", "DE"),
    ("Porto", "PT"),
    ("Utrecht", "NL"),
    ("Bologna", "IT"),
    ("Gdansk", "PL"),
]
_CARRIERS = ["DHL", "UPS", "DPD", "GLS", "PostNL"]
_METHODS = ["card", "paypal", "sepa", "voucher"]


@dataclass(frozen=True)
class Order:
    """One order's facts, in the order its events happen."""

    order_id: str
    placed: dict[str, Any]
    items: tuple[dict[str, Any], ...]
    paid: dict[str, Any]
    shipped: dict[str, Any]

    def events(self) -> list[dict[str, Any]]:
        """The order's six events as plain ``{"type": ..., "data": ...}`` dicts."""
        return [
            {"type": "OrderPlaced", "data": self.placed},
            *({"type": "ItemAdded", "data": item} for item in self.items),
            {"type": "OrderPaid", "data": self.paid},
            {"type": "OrderShipped", "data": self.shipped},
        ]


def make_order(number: int, rng: random.Random) -> Order:
    """Generate order ``order-<number>`` with values drawn from ``rng``."""
    order_id = f"order-{number}"
    items = []
    for sku, name, price in rng.sample(_CATALOGUE, 3):
        items.append({"sku": sku, "name": name, "quantity": rng.randint(1, 4), "unit_price": price})
    total = round(sum(i["quantity"] * i["unit_price"] for i in items), 2)
    city, country = rng.choice(_CITIES)
    return Order(
        order_id=order_id,
        placed={
            "order_id": order_id,
            "customer_id": f"cust-{rng.randint(1, 50_000):05d}",
            "currency": "EUR",
            "channel": rng.choice(["web", "app", "phone"]),
        },
        items=tuple(items),
        paid={"amount": total, "method": rng.choice(_METHODS), "payment_id": f"pay-{number:08d}"},
        shipped={
            "carrier": rng.choice(_CARRIERS),
            "tracking_number": f"{rng.getrandbits(40):010x}".upper(),
            "address": {
                "city": city,
                "country": country,
                "postcode": f"{rng.randint(1000, 99999)}",
            },
        },
    )


def iter_orders(count: int, *, start: int = 0, seed: int = 42) -> Iterator[Order]:
    """Yield ``count`` orders numbered from ``start``, reproducibly for a given seed."""
    rng = random.Random(seed + start)
    for number in range(start, start + count):
        yield make_order(number, rng)


def orders(count: int, *, start: int = 0, seed: int = 42) -> list[Order]:
    """The list of ``count`` orders numbered from ``start``."""
    return list(iter_orders(count, start=start, seed=seed))


def event_frame(n_events: int, *, seed: int = 7) -> pa.Table:
    """An Arrow table of ``n_events`` events (columns stream_id, type, data as JSON text).

    Orders are laid out one after another, six rows each, so every stream's rows
    are in version order; the last order is cut short when ``n_events`` is not a
    multiple of six.
    """
    stream_ids: list[str] = []
    types: list[str] = []
    payloads: list[str] = []
    n_orders = -(-n_events // EVENTS_PER_ORDER)
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    for order in iter_orders(n_orders, seed=seed):
        for ev in order.events():
            stream_ids.append(order.order_id)
            types.append(ev["type"])
            payloads.append(dumps(ev["data"]))
    return pa.table(
        {
            "stream_id": pa.array(stream_ids[:n_events], pa.string()),
            "type": pa.array(types[:n_events], pa.string()),
            "data": pa.array(payloads[:n_events], pa.string()),
        }
    )
