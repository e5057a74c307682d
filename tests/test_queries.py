"""The query bus: handlers, cached views, invalidation and consistency."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

import eventlab as el
from tests.conftest import START
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


# ---------------------------------------------------------------- review fixes


class MixedCaseOrders(el.Projection):
    name = "OrdersView"
    schema = {"order_id": "VARCHAR", "customer": "VARCHAR"}

    def on_OrderPlaced(self, event):
        self.upsert(event.stream_id, customer=event.data["customer"])


class BrokenView(el.Projection):
    name = "broken"
    schema = {"id": "VARCHAR"}

    def on_OrderPlaced(self, event):
        raise RuntimeError("bug in an unrelated projection")


def hits_misses(queries, name):
    stats = queries.stats().set_index("query").loc[name]
    return int(stats["hits"]), int(stats["misses"])


def test_a_projection_named_with_capitals_is_cached_and_caught_up(store):
    runner = el.ProjectionRunner(store, [MixedCaseOrders])
    queries = el.QueryBus(store)

    @queries.handler("Count")
    def count(q):
        return int(q.value("SELECT count(*) FROM OrdersView"))

    @queries.handler("Declared", reads=["OrdersView"])
    def declared(q):
        return int(q.value("SELECT count(*) FROM main.ordersview"))

    place(store, "order-1", "c1")
    assert queries.ask("Count", consistency="strong") == 1
    place(store, "order-2", "c2")
    assert queries.ask("Count", consistency="strong") == 2
    assert runner.checkpoint("OrdersView") == store.head
    assert queries.ask("Count") == 2
    assert hits_misses(queries, "Count") == (1, 2)
    place(store, "order-3", "c3")
    assert queries.ask("Declared", consistency="strong") == 3
    assert queries.ask("Declared") == 3
    assert hits_misses(queries, "Declared") == (1, 1)


def test_a_strong_ask_ignores_an_unrelated_failed_projection(store):
    runner = el.ProjectionRunner(store, [OrdersView, BrokenView])
    queries = el.QueryBus(store)

    @queries.handler("OrderCount")
    def order_count(q):
        return int(q.value("SELECT count(*) FROM orders"))

    place(store, "order-1", "c1")
    # The first strong ask does not know its reads yet: it catches up every
    # projection (the broken one fails and says so) but answers from `orders`.
    with pytest.warns(el.ProjectionFailedWarning, match="broken"):
        assert queries.ask("OrderCount", consistency="strong") == 1
    place(store, "order-2", "c2")
    assert queries.ask("OrderCount", consistency="strong") == 2
    states = runner.status().set_index("name")["state"].to_dict()
    assert states == {"orders": "caught up", "broken": "failed"}


def test_a_strong_ask_refuses_a_read_model_no_runner_feeds(store):
    import gc

    runner = el.ProjectionRunner(store, [OrdersView])
    place(store, "order-1", "c1")
    runner.catch_up()
    del runner
    gc.collect()
    queries = el.QueryBus(store)

    @queries.handler("Count")
    def count(q):
        return int(q.value("SELECT count(*) FROM orders"))

    @queries.handler("Declared", reads="orders")
    def declared(q):
        return int(q.value("SELECT count(*) FROM orders"))

    @queries.handler("EventCount")
    def event_count(q):
        return int(q.value("SELECT count(*) FROM events"))

    place(store, "order-2", "c2")
    for name in ("Count", "Declared"):
        with pytest.raises(
            el.ProjectionError,
            match=r"no ProjectionRunner feeds 'orders' in this process.*"
            r"el.ProjectionRunner\(store, \[\.\.\.\]\).*consistency='eventual'",
        ):
            queries.ask(name, consistency="strong")
    assert queries.ask("Count") == 1  # eventual: the read model as it is
    assert queries.ask("EventCount", consistency="strong") == 2  # events need no runner
    # A runner for the read model makes strong asks work again.
    runner = el.ProjectionRunner(store, [OrdersView])
    assert queries.ask("Count", consistency="strong") == 2
    assert runner.checkpoint("orders") == store.head


def test_a_strong_ask_refuses_a_read_model_its_given_runner_does_not_feed(store):
    live = el.ProjectionRunner(store, [OrdersView])
    other = el.ProjectionRunner(store, [MixedCaseOrders])
    queries = el.QueryBus(store, runner=other)

    @queries.handler("Count", reads=["orders"])
    def count(q):
        return int(q.value("SELECT count(*) FROM orders"))

    place(store, "order-1", "c1")
    with pytest.raises(el.ProjectionError, match=r"runs \['OrdersView'\]"):
        queries.ask("Count", consistency="strong")
    assert live.checkpoint("orders") == 0  # nothing was caught up


def test_queries_over_an_as_of_schema_are_not_cached_under_the_live_version(store):
    for i in range(5):
        place(store, f"order-{i}", "c1")  # one event per second from START
    runner = el.ProjectionRunner(store, [OrdersView])
    runner.catch_up()
    queries = el.QueryBus(store)

    @queries.handler("PastCount")
    def past_count(q):
        return int(q.value("SELECT count(*) FROM asof_snap.orders"))

    @queries.handler("LiveCount")
    def live_count(q):
        return int(q.value("SELECT count(*) FROM main.orders"))

    runner.as_of(at=START + timedelta(seconds=1), label="snap")
    assert queries.ask("PastCount") == 2
    runner.as_of(at=START + timedelta(seconds=3), label="snap")
    assert queries.ask("PastCount") == 4
    assert hits_misses(queries, "PastCount") == (0, 2)
    assert queries.ask("LiveCount") == queries.ask("LiveCount") == 5  # main.x is x
    assert hits_misses(queries, "LiveCount") == (1, 1)


def test_cached_lists_and_dicts_cannot_be_spoiled_by_the_caller(shop):
    _, _, queries = shop

    @queries.handler("Records")
    def records_(q):
        return q.sql("SELECT order_id, customer FROM orders ORDER BY 1").to_dict("records")

    @queries.handler("ByCustomer")
    def by_customer(q):
        frame = q.sql("SELECT customer, order_id FROM orders ORDER BY 1")
        return {"customers": dict(zip(frame.customer, frame.order_id, strict=True))}

    expected = [
        {"order_id": "order-1", "customer": "c1"},
        {"order_id": "order-2", "customer": "c2"},
    ]
    first = queries.ask("Records")
    first[0]["customer"] = "EDITED"
    first.append({"order_id": "fake"})
    assert queries.ask("Records") == expected
    second = queries.ask("Records")  # a hit, changed in turn
    second.clear()
    assert queries.ask("Records") == expected
    nested = queries.ask("ByCustomer")
    nested["customers"]["c1"] = "EDITED"
    assert queries.ask("ByCustomer") == {"customers": {"c1": "order-1", "c2": "order-2"}}
    assert hits_misses(queries, "Records") == (3, 1)


def test_bad_consistency_timeout_and_reads_are_refused(shop):
    _, _, queries = shop
    with pytest.raises(el.QueryError, match=r"consistency must be 'eventual' or 'strong'.*'strng'"):
        queries.ask("EventCount", consistency="strng")
    for timeout in ("5", None, -1, float("nan"), True):
        with pytest.raises(el.QueryError, match=r"timeout must be .*seconds.*timeout=5"):
            queries.ask("EventCount", consistency="strong", timeout=timeout)
    for reads in (5, [5], [""], ["orders", None]):
        with pytest.raises(el.QueryError, match=r"reads of query 'Q' must be .*table name"):
            queries.register("Q", lambda q: 1, reads=reads)
    assert queries.queries == ["EventCount", "OrdersByCustomer"]  # nothing registered
    assert queries.ask("EventCount", consistency="strong", timeout=0) == 5
