"""The query bus: handlers, cached views, invalidation and consistency."""

from __future__ import annotations

import pandas as pd
import pytest

import eventlab as el
from tests.test_projections import OrdersView, place


@pytest.fixture
def shop(store):
    place(store, "order-1", "c1", 2.5, 1.0)
    place(store, "order-2", "c2", 4.0)
    runner = el.ProjectionRunner(store, [OrdersView])
    runner.catch_up()
    queries = el.QueryBus(store)

    @queries.handler("OrdersByCustomer")
    def orders_by_customer(q, customer):
        return q.sql(
            "SELECT order_id, items, total FROM orders WHERE customer = $customer "
            "ORDER BY order_id",
            {"customer": customer},
        )

    @queries.handler("EventCount")
    def event_count(q):
        return int(q.value("SELECT count(*) FROM events"))

    return store, runner, queries


def records(frame: pd.DataFrame) -> list[tuple]:
    return [tuple(r) for r in frame.itertuples(index=False)]


def test_ask_answers_from_the_read_model(shop):
    _, _, queries = shop
    assert records(queries.ask("OrdersByCustomer", customer="c1")) == [("order-1", 2, 3.5)]
    assert queries.ask("EventCount") == 5
    assert queries.queries == ["EventCount", "OrdersByCustomer"]


def test_a_hit_after_a_miss_and_results_the_caller_cannot_spoil(shop):
    _, _, queries = shop
    first = queries.ask("OrdersByCustomer", customer="c1")
    first.loc[0, "total"] = -1.0  # changing an answer must not change the cache
    first["extra"] = 1
    second = queries.ask("OrdersByCustomer", customer="c1")
    assert records(second) == [("order-1", 2, 3.5)]
    queries.ask("OrdersByCustomer", customer="c2")
    stats = queries.stats().set_index("query").loc["OrdersByCustomer"]
    assert (stats["hits"], stats["misses"], stats["invalidations"], stats["cached"]) == (1, 2, 0, 2)
    assert stats["hit_rate"] == pytest.approx(1 / 3)
    assert stats["uncached_ms_p50"] > 0


def test_cache_is_invalidated_when_the_projection_advances(shop):
    store, runner, queries = shop
    queries.ask("OrdersByCustomer", customer="c1")
    store.append("order-1", [el.Event("ItemAdded", {"price": 1.5})])
    # Eventual: the read model has not moved, so the cached answer is still right for it.
    assert records(queries.ask("OrdersByCustomer", customer="c1")) == [("order-1", 2, 3.5)]
    runner.catch_up()
    assert records(queries.ask("OrdersByCustomer", customer="c1")) == [("order-1", 3, 5.0)]
    stats = queries.stats().set_index("query").loc["OrdersByCustomer"]
    assert (stats["hits"], stats["misses"], stats["invalidations"]) == (1, 2, 1)


def test_a_query_over_events_is_invalidated_by_new_events(shop):
    store, _, queries = shop
    assert queries.ask("EventCount") == 5
    assert queries.ask("EventCount") == 5
    store.append("order-9", [el.Event("OrderPlaced", {"customer": "c9"})])
    assert queries.ask("EventCount") == 6


def test_strong_consistency_reads_its_own_writes(shop):
    store, runner, queries = shop
    queries.ask("OrdersByCustomer", customer="c3")
    place(store, "order-3", "c3", 9.0)
    assert queries.ask("OrdersByCustomer", customer="c3").empty
    answer = queries.ask("OrdersByCustomer", customer="c3", consistency="strong")
    assert records(answer) == [("order-3", 1, 9.0)]
    assert runner.checkpoint("orders") == store.head


def test_strong_consistency_times_out(shop):
    store, _, queries = shop
    for i in range(30):
        place(store, f"order-{i + 10}", "c1", 1.0)
    with pytest.raises(el.ConsistencyTimeout, match="before the timeout"):
        queries.ask("OrdersByCustomer", customer="c1", consistency="strong", timeout=0.0)


def test_strong_consistency_with_a_failed_projection_says_how_to_fix_it(shop):
    store, runner, queries = shop
    store.append("order-1", [el.Event("ItemAdded", {"price": "free"})])
    with pytest.raises(
        el.ProjectionError, match=r"failed at position 6 .*runner.retry\('orders'\)"
    ):
        with pytest.warns(el.ProjectionFailedWarning):
            queries.ask("OrdersByCustomer", customer="c1", consistency="strong")


def test_declared_reads_and_uncached_queries(shop):
    store, runner, queries = shop
    calls = []

    @queries.handler("Totals", reads=["orders"])
    def totals(q):
        calls.append(1)
        return float(q.value("SELECT sum(total) FROM orders"))

    @queries.handler("Fresh", cache=False)
    def fresh(q):
        calls.append(2)
        return 1

    assert queries.ask("Totals") == 7.5
    assert queries.ask("Totals") == 7.5
    queries.ask("Fresh")
    queries.ask("Fresh")
    assert calls == [1, 2, 2]
    place(store, "order-3", "c3", 1.0)
    runner.catch_up()
    assert queries.ask("Totals") == 8.5


def test_unhashable_parameters_are_answered_not_cached(shop):
    _, _, queries = shop

    @queries.handler("Many")
    def many(q, customers):
        return q.sql(
            "SELECT count(*) AS n FROM orders WHERE list_contains($c, customer)", {"c": customers}
        )

    assert queries.ask("Many", customers=["c1", "c2"])["n"].tolist() == [2]
    assert queries.ask("Many", customers=["c1", "c2"])["n"].tolist() == [2]
    assert queries.stats().set_index("query").loc["Many", "hits"] == 0


def test_bad_asks_are_refused(shop):
    _, _, queries = shop
    with pytest.raises(el.QueryError, match="no handler for query 'Nope'.*OrdersByCustomer"):
        queries.ask("Nope")
    with pytest.raises(el.QueryError, match=r"takes the parameters \['customer'\], got \['cust'\]"):
        queries.ask("OrdersByCustomer", cust="c1")
    with pytest.raises(el.QueryError, match="consistency must be"):
        queries.ask("EventCount", consistency="fast")
    with pytest.raises(el.QueryError, match="already has a handler"):
        queries.register("EventCount", lambda q: 1)
    with pytest.raises(el.EventlabError, match="for reading"):
        queries.register("Evil", lambda q: q.sql("DELETE FROM events"))
        queries.ask("Evil")
