# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · CQRS: projections and queries
#
# Lessons 01 and 02 wrote the shop's history and rebuilt state from it, one stream at
# a time. A shop also needs *lists*: all open orders, revenue per day, the orders of
# one customer. Replaying every stream for each question would be slow, so **CQRS**
# (Command Query Responsibility Segregation) splits the system in two:
#
# - the **write side** takes commands, checks the rules and appends events;
# - the **read side** turns committed events into **read models**: tables shaped for
#   the questions, kept in DuckDB next to the log.
#
# The two share nothing but the event log. You will:
#
# 1. write events with commands (orders, customers, payments),
# 2. listen to committed events on the **event bus**,
# 3. build read models with a Python **projection** and a SQL projection,
# 4. run them with a **projection runner** and check its status,
# 5. answer queries from the read models, with a cache and a choice of consistency,
# 6. measure and plot how far the read side trails the write side,
# 7. diagnose a projection that fails, fix it and retry,
# 8. rebuild every read model as it was yesterday and compare with today.
#
# Run the cells from top to bottom (Shift+Enter).

# %%
import warnings
from datetime import timedelta

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import eventlab as el

# %% [markdown]
# As in lesson 02, a `SimulatedClock` starts on Monday 4 March 2024 at 09:00 and
# moves one minute each time it is read, and `now_is` jumps it forward, so every run
# prints the same times.

# %%
clock = el.SimulatedClock("2024-03-04T09:00", step=timedelta(minutes=1))
store = el.EventStore(clock=clock)


def now_is(when):
    """Move the simulated clock forward to ``when`` (a UTC time)."""
    clock.advance(pd.Timestamp(when, tz="UTC") - clock.current)


# %% [markdown]
# ## 1. The write side: commands write events
#
# Customers sign up through a form that appends one event to a `customer-` stream:
# a plain `store.append` is all this command needs.

# %%
for handle, name, city in [("ada", "Ada", "Leeds"), ("grace", "Grace", "York")]:
    store.append(
        f"customer-{handle}",
        el.Event("CustomerRegistered", {"name": name, "city": city}),
        expected_version=0,
    )
store.streams()

# %% [markdown]
# Orders have rules (no items after payment, nothing to pay on an empty order), so
# they get an aggregate like the one in lesson 02, trimmed down. Prices are in cents.


# %%
class OrderError(Exception):
    """A shop rule refused a command."""


class Order(el.Aggregate):
    def __init__(self, id):
        super().__init__(id)
        self.status, self.customer, self.total_cents = "new", None, 0

    def place(self, customer):
        self._require("new", "place")
        self.emit("OrderPlaced", {"customer": customer})

    def add_item(self, sku, qty, price_cents):
        self._require("open", "add items to")
        self.emit("ItemAdded", {"sku": sku, "qty": qty, "price_cents": price_cents})

    def pay(self, occurred_at=None):
        self._require("open", "pay")
        if self.total_cents == 0:
            raise OrderError(f"{self.id} is empty: nothing to pay")
        self.emit("OrderPaid", {"amount_cents": self.total_cents}, occurred_at=occurred_at)

    def _require(self, status, action):
        if self.status != status:
            raise OrderError(f"cannot {action} {self.id}: it is {self.status}, not {status}")

    def apply_OrderPlaced(self, event):
        self.status, self.customer = "open", event.data["customer"]

    def apply_ItemAdded(self, event):
        self.total_cents += event.data["qty"] * event.data["price_cents"]

    def apply_OrderPaid(self, event):
        self.status = "paid"


# %% [markdown]
# Two commands use it. `place_order` creates an order with its items. `take_payment`
# marks the order paid *and* records the payment in a `payment-` stream, in one
# transaction. Each payment id may be used once: `expected_version=0` says the
# payment stream must be new.


# %%
def place_order(order_id, customer, items):
    order = Order.load(store, order_id)
    order.place(customer)
    for sku, qty, price_cents in items:
        order.add_item(sku, qty, price_cents)
    order.save(store)


def take_payment(order_id, payment_id, occurred_at=None):
    with store.transaction():
        order = Order.load(store, order_id)
        order.pay(occurred_at=occurred_at)
        order.save(store)
        payment = {"order": order_id, "amount_cents": order.total_cents}
        store.append(
            f"payment-{payment_id}",
            el.Event("PaymentReceived", payment, occurred_at=occurred_at),
            expected_version=0,
        )


place_order("order-1", "ada", [("MUG", 2, 850), ("TEA", 1, 400)])
take_payment("order-1", "p-101")
store.sql("SELECT position, stream_id, type, data FROM events ORDER BY position")

# %% [markdown]
# ## 2. The event bus
#
# The read side learns about new events from the **event bus**: every store has one,
# `store.bus`. A subscriber is a function called with each committed event. It can
# choose event types and streams; `streams="order-"` is a prefix, so it matches the
# whole order category.


# %%
def announce(event):
    print(f"  bus → #{event.position} {event.stream_id} {event.type}")


store.bus.subscribe(announce, types=["OrderPlaced", "OrderPaid"], streams="order-")

# %% [markdown]
# Grace places an order and pays. The `ItemAdded` and `PaymentReceived` events are
# not announced: they do not match the subscription. And the bus publishes only
# **after the commit**. To see that, we wrap the payment in an outer transaction
# (transactions nest: `take_payment`'s own joins it), which commits when the `with`
# block ends; the `OrderPaid` is announced only then.

# %%
place_order("order-2", "grace", [("BAG", 1, 1200)])
with store.transaction():
    take_payment("order-2", "p-102")
    print("end of the with block: written, not committed yet")
print("committed")

# %% [markdown]
# A client bug reuses payment id `p-102` for a third order. The payment append fails,
# so the whole transaction rolls back, the `OrderPaid` of order 3 included, and the
# bus publishes nothing of it. Only the `OrderPlaced`, committed before, was announced.

# %%
place_order("order-3", "ada", [("PEN", 3, 150)])
try:
    take_payment("order-3", "p-102")
except el.ConcurrencyError as error:
    print("refused:", error)
print("order-3 is at version", store.version("order-3"), "(placed + 1 item, not paid)")

# %% [markdown]
# A subscriber that joins late can **catch up**: with `from_position=0` it first
# receives the stored history, then live events, with no gap and no duplicate at the
# switch-over. Here an audit log collects every event's position.

# %%
audit = []
store.bus.subscribe(lambda event: audit.append(event.position), name="audit", from_position=0)
print("history:", audit)
take_payment("order-3", "p-103")
print("after one more payment:", audit)

# %% [markdown]
# `bus.subscriptions()` lists who listens and how far each has got. We unsubscribe
# both before going on, to keep the output short.

# %%
print(store.bus.subscriptions()[["name", "types", "streams", "position", "state", "delivered"]])
store.bus.unsubscribe("announce")
store.bus.unsubscribe("audit")

# %% [markdown]
# ## 3. Projections: read models built from events
#
# A **projection** folds events into a table instead of into one object. A Python
# projection names its table, declares the columns (`schema`, with DuckDB types) and
# the `key`, and has one `on_<EventType>` handler per event type it cares about. The
# handlers change rows with `self.upsert(key, **columns)`, read them with
# `self.get(key)` and remove them with `self.delete(key)`.
#
# This one keeps one row per order. The line total is worked out by a small helper,
# `line`, which we will need again in section 7.


# %%
def line(item):
    """The quantity and the total in cents of one ItemAdded event's data."""
    return item["qty"], item["qty"] * item["price_cents"]


class OrdersView(el.Projection):
    name = "orders"
    schema = {
        "order_id": "VARCHAR",
        "customer": "VARCHAR",
        "status": "VARCHAR",
        "items": "INTEGER",
        "total_cents": "INTEGER",
        "placed_at": "TIMESTAMPTZ",
    }
    key = "order_id"

    def on_OrderPlaced(self, event):
        self.upsert(
            event.stream_id,
            customer=event.data["customer"],
            status="open",
            items=0,
            total_cents=0,
            placed_at=event.occurred_at,
        )

    def on_ItemAdded(self, event):
        row = self.get(event.stream_id)
        qty, cents = line(event.data)
        items, total_cents = row["items"] + qty, row["total_cents"] + cents
        self.upsert(event.stream_id, items=items, total_cents=total_cents)

    def on_OrderPaid(self, event):
        self.upsert(event.stream_id, status="paid")

    def on_OrderCancelled(self, event):
        self.delete(event.stream_id)  # the view lists live orders only


# %% [markdown]
# Some read models are a plain aggregation. An `el.SqlProjection` is one SQL query
# over the `events` table, rebuilt inside DuckDB in one go. In `events`, `data` is
# JSON text: `data->>'amount_cents'` takes a field out as text, and
# `CAST(occurred_at AS DATE)` gives the business day.

# %%
revenue = el.SqlProjection(
    "revenue_per_day",
    """
    SELECT CAST(occurred_at AS DATE) AS day,
           count(*) AS payments,
           sum(CAST(data->>'amount_cents' AS INTEGER)) / 100 AS revenue_eur
    FROM events
    WHERE type = 'PaymentReceived'
    GROUP BY day
    ORDER BY day
    """,
)

# %% [markdown]
# ## 4. The projection runner
#
# A `ProjectionRunner` feeds projections with events. For each one it keeps a
# **checkpoint**, the last position applied, in the `checkpoints` table. `catch_up()`
# applies everything after each checkpoint, in batches; each batch's row changes and
# its new checkpoint commit together, so no event is ever applied twice or skipped.
# It returns how many events the projections applied: here 15 for the SQL projection,
# which reads the whole log, and 10 for the orders view, which reads only the types it
# has handlers for.

# %%
runner = el.ProjectionRunner(store, [OrdersView, revenue])
runner.catch_up()

# %% [markdown]
# The read models are ordinary tables in the store's database, named after the
# projections, so `store.sql` reads them.

# %%
store.sql("SELECT * FROM orders ORDER BY placed_at")

# %%
store.sql("SELECT * FROM revenue_per_day")

# %% [markdown]
# `runner.status()` shows each projection's checkpoint against the log's head, the
# lag between them (in events and in seconds) and its state.

# %%
runner.status()[["name", "kind", "checkpoint", "head", "lag", "lag_seconds", "state"]]

# %% [markdown]
# ## 5. The query side
#
# The read side answers named **queries**. A `QueryBus` holds one handler per query;
# a handler receives a query context `q` (SQL over the read models) and the query's
# parameters, and returns a DataFrame or a value. `$customer` in the SQL is filled
# in from the dict, never pasted into the text.

# %%
queries = el.QueryBus(store)


@queries.handler("OrdersByCustomer")
def orders_by_customer(q, customer):
    return q.sql(
        "SELECT order_id, status, items, total_cents FROM orders "
        "WHERE customer = $customer ORDER BY placed_at",
        {"customer": customer},
    )


queries.ask("OrdersByCustomer", customer="ada")

# %% [markdown]
# Results are **cached** by query and parameters. The same question again is a
# cache hit: the handler does not run. `stats()` counts hits and misses.

# %%
queries.ask("OrdersByCustomer", customer="ada")
queries.stats()[["query", "hits", "misses", "invalidations", "cached"]]

# %% [markdown]
# Ada now places another order. The write side has it at once; the read side only
# after the next catch-up. Asked with the default `consistency="eventual"`, the
# query answers from the read model as it is: still two orders. The cached answer is
# still valid, because the `orders` table has not changed. It is **stale**.

# %%
place_order("order-4", "ada", [("TEA", 4, 400)])
queries.ask("OrdersByCustomer", customer="ada")

# %% [markdown]
# `consistency="strong"` first catches up the projections the query reads (it
# learned from the SQL that this one reads `orders`) to the head of the log, so it
# sees every event written before the question: **read-your-writes**. The catch-up
# changed `orders`, so the cached answer was invalidated and the handler ran again.

# %%
queries.ask("OrdersByCustomer", customer="ada", consistency="strong")

# %%
queries.stats()[["query", "hits", "misses", "invalidations", "cached"]]

# %% [markdown]
# Strong reads cost a catch-up before answering; eventual reads are as fast as a
# cache lookup but may be behind. Which one a screen needs is a design decision:
# "my order went through" needs read-your-writes, a sales dashboard does not.
#
# ## 6. How far the read side trails
#
# Between catch-ups the read side **lags** behind the write side. The runner measures
# the lag in events (`head - checkpoint`) and in seconds (how long the oldest event
# not yet applied has waited), and keeps every sample in `runner.lag_history()`.
#
# We simulate a Monday afternoon: every 10 minutes a few orders come in and some are
# paid, while the read side catches up only every fourth round. After each round we
# take a sample with `runner.lag()`.

# %%
now_is("2024-03-04T13:00")
afternoon = clock.current
rng = np.random.default_rng(seed=3)
prices = {"MUG": 850, "TEA": 400, "PEN": 150, "BAG": 1200}
customers = ["ada", "grace", "alan", "edsger", "barbara"]
next_order = 5

for round_no in range(1, 17):
    for _ in range(rng.integers(1, 4)):
        order_id = f"order-{next_order}"
        skus = rng.choice(list(prices), size=rng.integers(1, 3), replace=False)
        items = [(str(sku), int(rng.integers(1, 4)), prices[sku]) for sku in skus]
        place_order(order_id, str(rng.choice(customers)), items)
        if rng.random() < 0.7:
            take_payment(order_id, f"p-{100 + next_order}")
        next_order += 1
    if round_no % 4 == 0:
        runner.catch_up()
    runner.lag()
    clock.advance(timedelta(minutes=10))

print("orders:", next_order - 1, "| events in the log:", store.head)

# %% [markdown]
# The history holds one row per projection and sample (`status()` took some too,
# earlier). We plot the orders view over the afternoon.

# %%
history = runner.lag_history()
orders_lag = history[(history["name"] == "orders") & (history["sampled_at"] >= afternoon)]
orders_lag.tail(5)

# %%
fig, (events_ax, seconds_ax) = plt.subplots(2, 1, figsize=(8, 4.5), sharex=True)
events_ax.plot(orders_lag["sampled_at"], orders_lag["lag"], marker=".")
events_ax.set(ylabel="lag (events)", title="How far the orders view trails the log")
seconds_ax.plot(orders_lag["sampled_at"], orders_lag["lag_seconds"] / 60, marker=".")
seconds_ax.set(ylabel="lag (minutes)", xlabel="sampled at, Monday (UTC)")
seconds_ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
fig.tight_layout()
plt.show()

# %% [markdown]
# A sawtooth: the lag grows with each round of writes and drops to zero at each
# catch-up. In events it climbs by however many events the shop wrote; in time it
# climbs steadily, because the oldest waiting event keeps getting older until it is
# applied. Catching up more often lowers both teeth, at the cost of more work.
#
# In a running application nobody calls `catch_up` by hand: `runner.follow(every=n)`
# subscribes the runner to the bus and catches up after every `n` events, so the lag
# stays below `n` events. `unfollow()` stops it. Here three more orders write six
# events: the runner catches up after the fourth, and the last two wait for the next
# round.

# %%
runner.follow(every=4)
for customer in ["grace", "alan", "edsger"]:
    place_order(f"order-{next_order}", customer, [("MUG", 1, 850)])
    next_order += 1
print(runner.status()[["name", "checkpoint", "head", "lag", "state"]])
runner.unfollow()

# %% [markdown]
# ## 7. A projection that fails
#
# On Tuesday the shop's new mobile app goes live. Its backend appends events
# directly, and sends `qty` as a string: `"2"` instead of `2`.

# %%
now_is("2024-03-05T09:00")
mobile = [
    el.Event("OrderPlaced", {"customer": "alan"}),
    el.Event("ItemAdded", {"sku": "BAG", "qty": "2", "price_cents": 1200}),
]
store.append("order-900", mobile, expected_version=0)
place_order("order-901", "barbara", [("PEN", 2, 150)])
take_payment("order-901", "p-901")

# %% [markdown]
# The orders view's `on_ItemAdded` cannot add `"2"` to a number. A failing handler
# stops **its** projection at that event: the events before it stay applied, and the
# runner warns once with a `ProjectionFailedWarning`. We catch the warning to print
# just its message.

# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    runner.catch_up()
for warning in caught:
    print(f"{warning.category.__name__}: {warning.message}")

# %% [markdown]
# `status()` has the diagnosis: the orders view is `failed` at the position and
# event type it could not apply, with the error. The revenue projection kept going:
# it has Barbara's payment, written after the bad event.

# %%
status = runner.status()
status[["name", "checkpoint", "head", "state", "failed_position", "failed_type", "last_error"]]

# %% [markdown]
# The failing event is easy to look at: it is at the failed position in the log.

# %%
failed_at = int(status.loc[status["name"] == "orders", "failed_position"].iloc[0])
store.sql(
    "SELECT position, stream_id, type, data FROM events WHERE position = $p", {"p": failed_at}
)

# %% [markdown]
# The event is a fact and stays in the log, so the fix belongs in the projection:
# read `qty` as an integer whatever its JSON type. `on_ItemAdded` looks `line` up
# each time it runs, so redefining the helper fixes the projection in place.
# `runner.retry("orders")` resumes from the failing event.


# %%
def line(item):  # noqa: F811 - replacing the buggy helper is the point
    """The quantity and the total in cents of one ItemAdded event's data."""
    qty = int(item["qty"])  # the mobile app sends "2", the web shop 2
    return qty, qty * item["price_cents"]


print("applied:", runner.retry("orders"))
runner.status()[["name", "checkpoint", "head", "lag", "state", "last_error"]]

# %%
store.sql("SELECT * FROM orders WHERE order_id IN ('order-900', 'order-901')")

# %% [markdown]
# ## 8. The read side as it was yesterday
#
# Late on Tuesday morning the bank reports a payment for Ada's order 4 that a clerk
# took by phone on Monday at 17:30 and never typed in. We record it now, with its
# business time.

# %%
now_is("2024-03-05T11:00")
take_payment("order-4", "p-104", occurred_at="2024-03-04T17:30")
store.sql("SELECT * FROM revenue_per_day")

# %% [markdown]
# Oops: `revenue_per_day` is a read model, and nobody has caught it up yet. After a
# catch-up, Monday's revenue includes the late payment.

# %%
runner.catch_up()
store.sql("SELECT * FROM revenue_per_day")

# %% [markdown]
# `runner.as_of(at=...)` rebuilds **every** read model from the events that occurred
# up to a business time, into a separate schema, and returns a handle whose `sql`
# runs the same queries against it. Adding `known_at=...` also leaves out what was
# recorded later: the dashboard exactly as it looked on Monday evening.

# %%
monday_evening = "2024-03-04T20:00"
as_known_then = runner.as_of(at=monday_evening, known_at=monday_evening)
as_known_now = runner.as_of(at=monday_evening)
as_known_then

# %% [markdown]
# The same summary query, run against Monday evening as known then, Monday evening
# as known now (with the late payment) and today:

# %%
summary = """
    SELECT count(*) AS orders,
           count(*) FILTER (status = 'paid') AS paid,
           sum(total_cents) FILTER (status = 'paid') / 100 AS paid_eur
    FROM orders
"""
pd.concat(
    {
        "Monday 20:00, as known then": as_known_then.sql(summary),
        "Monday 20:00, as known now": as_known_now.sql(summary),
        "today": store.sql(summary),
    }
).droplevel(1)

# %% [markdown]
# And the revenue read model, side by side: Monday's figure grew when the late
# payment arrived, although Monday is over.

# %%
revenue_then = as_known_then.sql("SELECT day, revenue_eur FROM revenue_per_day")
revenue_now = store.sql("SELECT day, revenue_eur FROM revenue_per_day")
revenue_then.merge(revenue_now, on="day", how="outer", suffixes=("_known_monday", "_known_now"))

# %% [markdown]
# The past read models are only a copy built from events: drop them when done.

# %%
as_known_then.drop()
as_known_now.drop()
store.sql("SELECT schema_name FROM duckdb_schemas() WHERE schema_name LIKE 'asof_%'")

# %% [markdown]
# ## What you learned
#
# - CQRS splits the **write side** (commands → rules → events) from the **read side**
#   (events → read models → queries); the event log is all they share.
# - `store.bus.subscribe(handler, types=..., streams=...)` delivers committed events;
#   a rolled-back transaction publishes nothing; `from_position=0` catches up first.
# - An `el.Projection` folds events into a table with `upsert`, `get` and `delete`;
#   an `el.SqlProjection` is one SQL query over `events`.
# - A `ProjectionRunner` applies events after each checkpoint (`catch_up`), reports
#   `status()`, and keeps following the bus with `follow(every=n)`.
# - A `QueryBus` answers named queries from the read models, caches results until a
#   table they read changes, and offers `consistency="strong"` for read-your-writes.
# - The read side lags the write side; `lag()` and `lag_history()` measure it.
# - A failing handler stops only its projection; `status()` says where and why, and
#   `retry(name)` resumes once the projection is fixed.
# - `runner.as_of(at=..., known_at=...)` rebuilds the whole read side as it was.
#
# ## Try this
#
# 1. Write a `CustomersView` projection with one row per customer (name, city and the
#    number of orders), add it to a new runner and catch up. Which events does it need?
# 2. Append an `OrderCancelled` event to `order-900` and catch up. What happens to its
#    row in `orders`, and to the cached `OrdersByCustomer` answer for Alan?
# 3. Call `runner.rebuild()` and check that the read models are the same as before.
#    Why can a read model always be thrown away?
# 4. Repeat section 6 with `runner.follow(every=5)` instead of catching up by hand and
#    plot the lag again. What is the largest lag you see?
# 5. Register a `RevenueOn` query that takes a `day` and reads `revenue_per_day`. Is
#    it a cache hit after a catch-up that added no payment?
