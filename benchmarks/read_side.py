"""The read side timed: a Python projection catching up, a SQL projection rebuilt, queries.

No peer here: the ``eventsourcing`` library has no projection runner or query
cache to compare with, so these figures stand against their targets alone.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import eventlab as el


class OrdersView(el.Projection):
    """One row per order, changed by every one of its six events."""

    name = "orders"
    schema = {
        "order_id": "VARCHAR",
        "customer_id": "VARCHAR",
        "status": "VARCHAR",
        "items": "INTEGER",
        "total": "DOUBLE",
        "paid": "DOUBLE",
    }

    def on_OrderPlaced(self, event: el.RecordedEvent) -> None:
        data = event.data
        self.upsert(
            event.stream_id, customer_id=data["customer_id"], status="placed", items=0, total=0.0
        )

    def on_ItemAdded(self, event: el.RecordedEvent) -> None:
        data = event.data
        row = self.get(event.stream_id)
        self.upsert(
            event.stream_id,
            items=row["items"] + 1,
            total=row["total"] + data["quantity"] * data["unit_price"],
        )

    def on_OrderPaid(self, event: el.RecordedEvent) -> None:
        self.upsert(event.stream_id, status="paid", paid=event.data["amount"])

    def on_OrderShipped(self, event: el.RecordedEvent) -> None:
        self.upsert(event.stream_id, status="shipped")


# The read model the lessons build: revenue per day from the payments.
REVENUE_PER_DAY = el.SqlProjection(
    "revenue_per_day",
    "SELECT CAST(occurred_at AS DATE) AS day, count(*) AS orders, "
    "sum(CAST(data->>'amount' AS DOUBLE)) AS revenue "
    "FROM events WHERE type = 'OrderPaid' GROUP BY day",
)

# A heavier one: a group per order, and JSON fields read from every event.
ORDER_TOTALS = el.SqlProjection(
    "order_totals",
    "SELECT stream_id AS order_id, "
    "count(*) FILTER (WHERE type = 'ItemAdded') AS items, "
    "sum(CAST(data->>'quantity' AS INTEGER) * CAST(data->>'unit_price' AS DOUBLE)) AS total, "
    "max(occurred_at) FILTER (WHERE type = 'OrderShipped') AS shipped_at "
    "FROM events GROUP BY stream_id",
)


def time_catch_up(path: Path) -> tuple[float, dict[str, Any]]:
    """Seconds for the orders projection to catch up from 0 over the whole store.

    Returns the time and a summary of the read model, checked by the caller.
    """
    with el.EventStore(path) as store:
        runner = el.ProjectionRunner(store, [OrdersView])
        return _timed_rebuild(store, runner, "orders")


def time_sql_rebuild(path: Path, projection: el.SqlProjection) -> tuple[float, dict[str, Any]]:
    """Seconds to rebuild a SQL projection over the whole store, and its summary."""
    with el.EventStore(path) as store:
        runner = el.ProjectionRunner(store, [projection])
        return _timed_rebuild(store, runner, projection.name)


SUMMARIES = {
    "orders": "SELECT count(*) AS orders, sum(items) AS items FROM orders",
    "order_totals": "SELECT count(*) AS orders, sum(items) AS items FROM order_totals",
    "revenue_per_day": "SELECT sum(orders) AS orders FROM revenue_per_day",
}


def _timed_rebuild(
    store: el.EventStore, runner: el.ProjectionRunner, name: str
) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    runner.rebuild(name)
    seconds = time.perf_counter() - start
    status = runner.status().iloc[0]
    if status["state"] != "caught up":
        raise RuntimeError(f"{name} did not catch up: {status.to_dict()}")
    summary = store.sql(SUMMARIES[name])
    return seconds, {k: int(v) for k, v in summary.iloc[0].items()}


def time_queries(path: Path, asks: int) -> dict[str, float]:
    """Median latency of a cached and of an uncached ``OrdersByCustomer`` ask.

    Uncached asks use a new customer each time (a miss that runs the SQL over
    the orders read model); cached asks repeat one customer.
    """
    with el.EventStore(path) as store:
        el.ProjectionRunner(store, [OrdersView]).catch_up()
        queries = el.QueryBus(store)

        @queries.handler("OrdersByCustomer")
        def orders_by_customer(q: el.QueryContext, customer: str) -> Any:
            return q.sql(
                "SELECT order_id, status, total FROM orders WHERE customer_id = $customer",
                {"customer": customer},
            )

        customers = [
            row[0]
            for row in store.sql(
                f"SELECT DISTINCT customer_id FROM orders ORDER BY 1 LIMIT {asks}"
            ).itertuples(index=False)
        ]
        uncached = []
        for customer in customers:
            start = time.perf_counter()
            queries.ask("OrdersByCustomer", customer=customer)
            uncached.append(time.perf_counter() - start)
        cached = []
        for _ in range(asks):
            start = time.perf_counter()
            queries.ask("OrdersByCustomer", customer=customers[0])
            cached.append(time.perf_counter() - start)
        stats = queries.stats().iloc[0]
        if stats["hits"] != asks or stats["misses"] != len(customers):
            raise RuntimeError(f"unexpected cache behaviour: {stats.to_dict()}")
    return {
        "query_cached_us_p50": statistics.median(cached) * 1e6,
        "query_uncached_ms_p50": statistics.median(uncached) * 1e3,
    }
