"""The benchmark workload: orders of six events each, with small realistic payloads.

Every order has the same shape (OrderPlaced, three ItemAdded, OrderPaid,
OrderShipped); the values come from a seeded random generator, so both stores
receive exactly the same data in every run.
"""

from __future__ import annotations

import gc
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

EVENTS_PER_ORDER = 6
FRAME_SEED = 7  # the seed of every bulk-built store's orders

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


def event_frame(n_events: int, *, seed: int = FRAME_SEED, occurred_at: bool = False) -> pa.Table:
    """An Arrow table of ``n_events`` events (columns stream_id, type, data as JSON text).

    Orders are laid out one after another, six rows each, so every stream's rows
    are in version order; the last order is cut short when ``n_events`` is not a
    multiple of six. With ``occurred_at``, an ``occurred_at`` column spreads the
    events over business time (see :func:`occurred_micros`).
    """
    n_orders = -(-n_events // EVENTS_PER_ORDER)
    return _frame(0, n_orders, n_events, seed=seed, occurred_at=occurred_at)


def event_frames(
    n_events: int,
    *,
    chunk_events: int = 1_000_000,
    seed: int = FRAME_SEED,
    occurred_at: bool = False,
) -> Iterator[pa.Table]:
    """``n_events`` events as consecutive tables of whole orders, about ``chunk_events`` rows each.

    Together they hold orders ``order-0``, ``order-1``, ... like one big
    :func:`event_frame` (with different random values after the first chunk),
    without ever holding more than one chunk in memory.
    """
    n_orders = -(-n_events // EVENTS_PER_ORDER)
    per_chunk = max(1, chunk_events // EVENTS_PER_ORDER)
    for first in range(0, n_orders, per_chunk):
        count = min(per_chunk, n_orders - first)
        rows = min(count * EVENTS_PER_ORDER, n_events - first * EVENTS_PER_ORDER)
        yield _frame(first, count, rows, seed=seed, occurred_at=occurred_at)


def _frame(first: int, n_orders: int, n_rows: int, *, seed: int, occurred_at: bool) -> pa.Table:
    """Orders ``first`` to ``first + n_orders - 1`` as the first ``n_rows`` event rows."""
    stream_ids: list[str] = []
    types: list[str] = []
    payloads: list[str] = []
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    for order in iter_orders(n_orders, start=first, seed=seed):
        for ev in order.events():
            stream_ids.append(order.order_id)
            types.append(ev["type"])
            payloads.append(dumps(ev["data"]))
    columns = {
        "stream_id": pa.array(stream_ids[:n_rows], pa.string()),
        "type": pa.array(types[:n_rows], pa.string()),
        "data": pa.array(payloads[:n_rows], pa.string()),
    }
    if occurred_at:
        row = np.arange(n_rows, dtype=np.int64)
        micros = occurred_micros(first + row // EVENTS_PER_ORDER, row % EVENTS_PER_ORDER)
        columns["occurred_at"] = pa.array(micros, pa.timestamp("us", tz="UTC"))
    return pa.table(columns)


# ---------------------------------------------------------------------- business time

BUSINESS_START_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z in epoch microseconds
ORDER_EVERY_US = 1_000_000  # one order placed per second
STEP_US = 60_000_000  # an order's events happen one minute apart


def occurred_micros(order_number: Any, event_index: Any) -> Any:
    """When event ``event_index`` (0-5) of order ``order-<order_number>`` happened.

    Order n is placed ``n`` seconds after 2024-01-01 UTC and each later event of
    it follows a minute after the one before, so at any moment about 300 orders
    are in flight. Works on ints and on NumPy arrays alike.
    """
    return BUSINESS_START_US + order_number * ORDER_EVERY_US + event_index * STEP_US


def events_occurred(order_number: int, at_us: int) -> int:
    """How many of order ``order-<order_number>``'s events happened at or before ``at_us``."""
    elapsed = at_us - occurred_micros(order_number, 0)
    if elapsed < 0:
        return 0
    return min(EVENTS_PER_ORDER, elapsed // STEP_US + 1)


def progress_after(events: int) -> tuple[str, int]:
    """An order's (status, number of items) once its first ``events`` events happened."""
    if events >= EVENTS_PER_ORDER:
        return "shipped", 3
    if events == EVENTS_PER_ORDER - 1:
        return "paid", 3
    return ("placed" if events else "new"), max(0, events - 1)


def events_stored(order_number: int, n_events: int) -> int:
    """Events of order ``order-<order_number>`` among the first ``n_events`` frame rows."""
    return max(0, min(EVENTS_PER_ORDER, n_events - order_number * EVENTS_PER_ORDER))


def states_as_of(n_events: int, at: datetime) -> dict[str, tuple[str, int]]:
    """(status, items) at business time ``at`` of each order with an event by then.

    For a store of the first ``n_events`` rows of :func:`event_frames` with
    ``occurred_at``: what replaying every stream as of ``at`` must give.
    """
    at_us = to_micros(at)
    n_orders = -(-n_events // EVENTS_PER_ORDER)
    expected = {}
    for number in range(n_orders):
        occurred = min(events_occurred(number, at_us), events_stored(number, n_events))
        if occurred:
            expected[f"order-{number}"] = progress_after(occurred)
    return expected


def state_at_queries(
    rng: random.Random, n_events: int, count: int
) -> tuple[list[tuple[str, datetime]], list[tuple[str, int]]]:
    """``count`` random (stream_id, business time) pairs, and the (status, items) each gives.

    Each picks a random order of the store (as in :func:`states_as_of`), then a
    random moment from a minute before it was placed to a minute after it
    shipped, so the answers cover every stage of an order.
    """
    n_orders = -(-n_events // EVENTS_PER_ORDER)
    queries = []
    expected = []
    for _ in range(count):
        number = rng.randrange(n_orders)
        at_us = occurred_micros(number, 0) + rng.randrange(-STEP_US, EVENTS_PER_ORDER * STEP_US)
        queries.append((f"order-{number}", from_micros(at_us)))
        occurred = min(events_occurred(number, at_us), events_stored(number, n_events))
        expected.append(progress_after(occurred))
    return queries, expected


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_micros(micros: int) -> datetime:
    """The aware UTC datetime ``micros`` microseconds after the Unix epoch."""
    return _EPOCH + timedelta(microseconds=micros)


def to_micros(moment: datetime) -> int:
    """Epoch microseconds of an aware datetime (exact, no float rounding)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def settle() -> None:
    """Collect garbage just before a clock starts, on either side of a comparison.

    Both sides build their input (events, aggregates) right before timing. Left
    young, those hundreds of thousands of objects get promoted during the timed
    loop and set off full collections that walk all of them (0.1 to 0.25 s each),
    a cost of how the benchmark built its input, not of the code under test.
    One collection first makes them old, as long-lived data would be.
    """
    gc.collect()
