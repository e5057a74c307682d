"""The peer: the same order workload on the ``eventsourcing`` library (SQLite module).

The peer runs with its stock settings on a file database: the SQLite module puts
the file in WAL mode with ``synchronous=FULL``, and every ``Application.save`` is
one transaction, so each save is one durable (fsync'd) commit, as is each
``EventStore.append`` call on our side.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from benchmarks.workload import Order, settle


class PeerOrder(Aggregate):
    """An order aggregate whose six events mirror the workload's six events."""

    @staticmethod
    def create_id(order_id: str, **_: Any) -> UUID:
        """A stable aggregate id derived from the order id."""
        return uuid5(NAMESPACE_URL, f"/orders/{order_id}")

    @event("OrderPlaced")
    def __init__(self, order_id: str, customer_id: str, currency: str, channel: str) -> None:
        self.order_id = order_id
        self.customer_id = customer_id
        self.currency = currency
        self.channel = channel
        self.items: list[dict[str, Any]] = []
        self.status = "placed"

    @event("ItemAdded")
    def add_item(self, sku: str, name: str, quantity: int, unit_price: float) -> None:
        self.items.append({"sku": sku, "quantity": quantity, "unit_price": unit_price})

    @event("OrderPaid")
    def pay(self, amount: float, method: str, payment_id: str) -> None:
        self.status = "paid"

    @event("OrderShipped")
    def ship(self, carrier: str, tracking_number: str, address: dict[str, str]) -> None:
        self.status = "shipped"


class OrderApplication(Application):
    """A plain application (no snapshotting, default JSON transcoding)."""


def open_app(db_path: Path) -> OrderApplication:
    """An application persisting to the SQLite file ``db_path`` (created if missing)."""
    return OrderApplication(
        env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(db_path)}
    )


def build_aggregate(order: Order) -> PeerOrder:
    """A new order aggregate with the order's six events pending (not yet saved)."""
    aggregate = PeerOrder(**order.placed)
    for item in order.items:
        aggregate.add_item(**item)
    aggregate.pay(**order.paid)
    aggregate.ship(**order.shipped)
    return aggregate


def time_per_command(db_path: Path, orders: Sequence[Order]) -> float:
    """Seconds to save each order with its own ``app.save`` call (one commit each).

    Aggregates are built before the clock starts, as our side's events are.
    """
    app = open_app(db_path)
    try:
        aggregates = [build_aggregate(o) for o in orders]
        settle()
        start = time.perf_counter()
        for aggregate in aggregates:
            app.save(aggregate)
        return time.perf_counter() - start
    finally:
        app.close()


def time_batched(db_path: Path, batches: Sequence[Sequence[Order]]) -> float:
    """Seconds to save each batch of orders with one ``app.save(*aggregates)`` call."""
    app = open_app(db_path)
    try:
        built = [[build_aggregate(o) for o in batch] for batch in batches]
        settle()
        start = time.perf_counter()
        for aggregates in built:
            app.save(*aggregates)
        return time.perf_counter() - start
    finally:
        app.close()


def stored_event_count(db_path: Path) -> int:
    """Events in the peer's file, counted through a fresh SQLite connection."""
    with sqlite3.connect(db_path) as con:
        return int(con.execute("SELECT count(*) FROM stored_events").fetchone()[0])


def aggregate_id(order_id: str) -> UUID:
    """The peer's aggregate id for an order id."""
    return PeerOrder.create_id(order_id)


def build_store(db_path: Path, orders: Sequence[Order], *, batch: int = 1000) -> float:
    """Untimed set-up: save the orders, ``batch`` aggregates per ``app.save``; seconds taken."""
    start = time.perf_counter()
    app = open_app(db_path)
    try:
        for first in range(0, len(orders), batch):
            app.save(*(build_aggregate(o) for o in orders[first : first + batch]))
    finally:
        app.close()
    return time.perf_counter() - start


def time_get_each(db_path: Path, order_ids: Sequence[str]) -> tuple[float, list[PeerOrder]]:
    """Seconds for one ``app.repository.get(id)`` per order on a freshly opened application.

    The application has no aggregate cache (the default), so every get reads
    and replays the aggregate's events from the file.
    """
    ids = [aggregate_id(o) for o in order_ids]
    app = open_app(db_path)
    try:
        start = time.perf_counter()
        aggregates = [app.repository.get(aggregate_id) for aggregate_id in ids]
        return time.perf_counter() - start, aggregates
    finally:
        app.close()
