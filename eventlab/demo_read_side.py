"""The demo's read-side step: a projection, a SQL projection and a cached query.

Kept apart from :mod:`eventlab.demo` so each file reads in one sitting.
"""

from __future__ import annotations

from typing import Any

from .projections import Projection, SqlProjection
from .queries import QueryBus, QueryContext
from .runner import ProjectionRunner
from .store import EventStore


class OrderStatus(Projection):
    """One row per order: its customer, status and amount paid."""

    name = "order_status"
    schema = {
        "order_id": "VARCHAR",
        "customer_id": "VARCHAR",
        "status": "VARCHAR",
        "paid": "DOUBLE",
    }

    def on_OrderPlaced(self, event: Any) -> None:
        self.upsert(event.stream_id, customer_id=event.data["customer_id"], status="placed")

    def on_OrderPaid(self, event: Any) -> None:
        self.upsert(event.stream_id, status="paid", paid=event.data["amount"])

    def on_OrderShipped(self, event: Any) -> None:
        self.upsert(event.stream_id, status="shipped")

    def on_OrderCancelled(self, event: Any) -> None:
        self.upsert(event.stream_id, status="cancelled")


REVENUE_PER_DAY = SqlProjection(
    "revenue_per_day",
    "SELECT CAST(occurred_at AS DATE) AS day, count(*) AS payments, "
    "round(sum(CAST(data->>'amount' AS DOUBLE)), 2) AS revenue "
    "FROM events WHERE type = 'OrderPaid' GROUP BY day ORDER BY day",
)


def show_read_side(store: EventStore) -> tuple[list[str], dict[str, Any]]:
    """Project the store into two read models and ask one query twice (a cache hit).

    Returns the lines describing what was done and a summary dict.
    """
    runner = ProjectionRunner(store, [OrderStatus, REVENUE_PER_DAY])
    runner.catch_up()
    statuses = store.sql(
        "SELECT status, count(*) AS n FROM order_status GROUP BY status ORDER BY n DESC, status"
    )
    days = store.sql("SELECT count(*) AS days, sum(revenue) AS revenue FROM revenue_per_day")
    queries = QueryBus(store)

    @queries.handler("OrdersOfCustomer")
    def orders_of_customer(q: QueryContext, customer_id: str) -> Any:
        return q.sql(
            "SELECT order_id, status FROM order_status WHERE customer_id = $customer_id",
            {"customer_id": customer_id},
        )

    customer = store.sql("SELECT min(customer_id) AS c FROM order_status")["c"].iloc[0]
    answer = queries.ask("OrdersOfCustomer", customer_id=customer)
    queries.ask("OrdersOfCustomer", customer_id=customer)
    stats = queries.stats().iloc[0]
    by_status = {str(row.status): int(row.n) for row in statuses.itertuples()}
    lines = [
        f"Projected the {store.head} events into two read models: order_status "
        f"(a Python projection: "
        + ", ".join(f"{n} {status}" for status, n in by_status.items())
        + f") and revenue_per_day (one SQL query: {int(days['days'].iloc[0])} days, "
        f"{days['revenue'].iloc[0]:,.2f} EUR).",
        f"Asked OrdersOfCustomer for {customer} twice: {len(answer)} order(s); "
        f"{int(stats['misses'])} miss then {int(stats['hits'])} cache hit.",
    ]
    summary = {
        "read_models": sorted(runner.projections),
        "order_statuses": by_status,
        "query_hits": int(stats["hits"]),
    }
    return lines, summary
