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
# # 01 · The event store
#
# In this lesson you keep the history of a small shop, which sells a few products
# and takes orders, as a log of **events** in an `eventlab` event store. You will:
#
# 1. see what an event is and why the log only ever grows,
# 2. append events to streams and look at what the store records,
# 3. read them back as objects, as a DataFrame and with SQL,
# 4. stop two users from overwriting each other (optimistic concurrency),
# 5. make a retried append harmless (idempotency),
# 6. group appends so that all or none are written (transactions),
# 7. load a few thousand events at once and plot them,
# 8. export the log to Parquet and rebuild a store from it.
#
# Run the cells from top to bottom (Shift+Enter).

# %%
import tempfile
from datetime import timedelta
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import eventlab as el

# %% [markdown]
# ## 1. Events and the append-only log
#
# An **event** is a fact about something that has already happened, so we name it
# in the past tense: `ProductAdded`, `OrderPlaced`, `OrderPaid`. A fact cannot
# un-happen, so the log is **append-only**: nothing in it is ever updated or
# deleted. To correct a mistake we append a new fact (`OrderCancelled`), and the
# current state of anything is worked out by reading its events in order.
#
# Every event gets a timestamp from the store's clock. A `SimulatedClock` starts
# where we say and moves 30 seconds per event, so this notebook prints the same
# times every time you run it. A store without a path lives in memory.

# %%
clock = el.SimulatedClock("2024-03-01T09:00:00", step=timedelta(seconds=30))
store = el.EventStore(clock=clock)
store

# %% [markdown]
# ## 2. Appending events
#
# Events are grouped into **streams**, one per thing whose history we keep. By
# convention a stream id is `category-id`. First the shop adds two products to
# its catalogue, each in its own stream.

# %%
store.append("product-MUG", el.Event("ProductAdded", {"name": "Mug", "price": 8.5}))
store.append("product-TEA", el.Event("ProductAdded", {"name": "Green tea", "price": 4.0}))
store.streams()

# %% [markdown]
# Now a customer places an order. One `append` call can write several events;
# they are written together, with consecutive versions. An event can be an
# `el.Event` or a plain dict with `type` and `data`.

# %%
recorded = store.append(
    "order-1",
    [
        el.Event("OrderPlaced", {"customer": "ada"}),
        {"type": "ItemAdded", "data": {"sku": "MUG", "qty": 2, "price": 8.5}},
        {"type": "ItemAdded", "data": {"sku": "TEA", "qty": 1, "price": 4.0}},
    ],
)
recorded

# %% [markdown]
# `append` returns what the store recorded: `RecordedEvent`s. Besides your type and
# data, each has a **position** (its place in the whole log, counting from 1, with
# no gaps), a **version** (its place in its own stream) and two timestamps.

# %%
item = recorded[1]
fields = ["position", "stream_id", "version", "type", "data", "recorded_at", "occurred_at"]
{name: getattr(item, name) for name in fields}

# %% [markdown]
# `recorded_at` is *knowledge time*: when the store learned the fact. `occurred_at`
# is *business time*: when it happened in the shop. They are equal unless you say
# otherwise. Here a customer phoned in an order last night, which we type in now.

# %%
phoned = store.append(
    "order-2",
    el.Event("OrderPlaced", {"customer": "grace"}, occurred_at="2024-02-29T18:45:00"),
)[0]
print("occurred:", phoned.occurred_at)
print("recorded:", phoned.recorded_at)

# %% [markdown]
# A recorded event is immutable: the past cannot be edited.

# %%
try:
    phoned.version = 99
except AttributeError as error:
    print(type(error).__name__, "-", error)

# %% [markdown]
# ## 3. Reading events back
#
# `read_stream` returns one stream's events in version order. Replaying them is
# how we rebuild an order's current state; here a small function folds the events
# into a total.


# %%
def order_total(events):
    total = 0.0
    for event in events:
        if event.type == "ItemAdded":
            total += event.data["qty"] * event.data["price"]
    return total


history = store.read_stream("order-1")
for event in history:
    print(f"v{event.version} {event.type:12} {event.data}")
print("version:", store.version("order-1"), "| total:", order_total(history))

# %% [markdown]
# `read_all` walks the whole log in position order, across all streams. It reads
# in batches, so it also works for histories far larger than memory.

# %%
for event in store.read_all():
    print(event.position, event.stream_id, event.type, event.recorded_at.time())

# %% [markdown]
# For analysis, `store.events()` gives a pandas DataFrame with one row per event.

# %%
store.events()[["position", "stream_id", "version", "type", "data", "occurred_at"]]

# %% [markdown]
# And `store.sql` runs a read-only DuckDB query over the `events` table. The
# `data` column is JSON: `data->>'qty'` takes a field out as text.

# %%
store.sql(
    """
    SELECT stream_id,
           count(*) AS items,
           sum((data->>'qty')::INT * (data->>'price')::DOUBLE) AS total
    FROM events
    WHERE type = 'ItemAdded'
    GROUP BY stream_id
    """
)

# %% [markdown]
# ## 4. Optimistic concurrency
#
# Two shop assistants, Alice and Bob, open order 1 at the same time. Each loads
# its events; both see the order at the same version.

# %%
alice_view = store.read_stream("order-1")
bob_view = store.read_stream("order-1")
alice_view[-1].version, bob_view[-1].version

# %% [markdown]
# Alice adds a pen. Passing `expected_version` says "append only if the stream is
# still at the version I saw". It is, so her append succeeds and the version moves on.

# %%
store.append(
    "order-1",
    el.Event("ItemAdded", {"sku": "PEN", "qty": 1, "price": 1.5}),
    expected_version=alice_view[-1].version,
)
store.version("order-1")

# %% [markdown]
# Bob, still looking at the old order, gives a discount of 10% of the total *he*
# saw. The store refuses: the stream moved on since he loaded it. Nothing is
# written, and the error tells him both versions.

# %%
discount = {"amount": round(0.1 * order_total(bob_view), 2)}
try:
    store.append(
        "order-1", el.Event("DiscountGiven", discount), expected_version=bob_view[-1].version
    )
except el.ConcurrencyError as error:
    print("expected:", error.expected, "| actual:", error.actual)
    print(error)

# %% [markdown]
# The fix is always the same: reload, decide again on fresh state, retry with the
# new version. This time the discount is computed from the current total.

# %%
history = store.read_stream("order-1")
discount = {"amount": round(0.1 * order_total(history), 2)}
store.append("order-1", el.Event("DiscountGiven", discount), expected_version=history[-1].version)
[(event.version, event.type) for event in store.read_stream("order-1")]

# %% [markdown]
# ## 5. Idempotency: retrying safely
#
# The payment provider tells us an order was paid, and may tell us twice when the
# network hiccups. If we give the event our own `event_id` (here the provider's
# payment id), appending it again writes nothing and returns the stored record.

# %%
paid = el.Event("OrderPaid", {"amount": 20.25}, event_id="payment-7f3a")
first = store.append("order-1", paid)
again = store.append("order-1", paid)
print("same record:", first == again, "| position:", again[0].position)
print("version still:", store.version("order-1"))

# %% [markdown]
# Reusing an id for *different* content is a bug, and the store says so.

# %%
try:
    store.append("order-1", el.Event("OrderPaid", {"amount": 99.0}, event_id="payment-7f3a"))
except el.DuplicateEventError as error:
    print(error)

# %% [markdown]
# ## 6. Transactions: all or nothing
#
# Placing order 3 also reserves stock in the product streams. Inside
# `with store.transaction():` every append is committed together when the block ends.
# (`expected_version=0` means "this stream must not exist yet": a new order id.)

# %%
with store.transaction():
    store.append("order-3", el.Event("OrderPlaced", {"customer": "alan"}), expected_version=0)
    store.append("order-3", el.Event("ItemAdded", {"sku": "TEA", "qty": 3, "price": 4.0}))
    store.append("product-TEA", el.Event("StockReserved", {"order": "order-3", "qty": 3}))
store.version("order-3"), store.version("product-TEA")

# %% [markdown]
# If the block raises, none of its appends are written: not the order, not the
# reservation. The log is exactly as it was before.

# %%
head_before = store.head
try:
    with store.transaction():
        store.append("order-4", el.Event("OrderPlaced", {"customer": "barbara"}))
        store.append("product-MUG", el.Event("StockReserved", {"order": "order-4", "qty": 5}))
        raise RuntimeError("card declined")
except RuntimeError as error:
    print("block failed:", error)
print("head unchanged:", store.head == head_before)
print("order-4 version:", store.version("order-4"), "| MUG version:", store.version("product-MUG"))

# %% [markdown]
# Saving many streams at once, say a batch of new orders, is one call:
# `append_many` takes a dict of stream id to events and appends them all in one
# transaction, as the loop of appends above would, only several times faster.

# %%
stored = store.append_many(
    {
        "order-5": [el.Event("OrderPlaced", {"customer": "carol"})],
        "order-6": [el.Event("OrderPlaced", {"customer": "dan"}), el.Event("OrderPaid", {})],
    },
    expected_versions=0,  # every one of them must be a new stream
)
{stream: [(e.position, e.version, e.type) for e in events] for stream, events in stored.items()}

# %% [markdown]
# ## 7. Bulk loading and a picture
#
# The next morning the web shop sends last week's orders. We generate them here
# with a seeded random generator: about 800 orders, each placed, filled with 1 to
# 4 items, then paid or cancelled. Orders come in mostly at lunch and in the evening.

# %%
clock.advance(timedelta(days=1))
rng = np.random.default_rng(seed=1)
prices = {"MUG": 8.5, "TEA": 4.0, "PEN": 1.5, "BAG": 12.0}
hourly = np.array([1, 1, 1, 1, 1, 1, 2, 3, 4, 5, 6, 9, 10, 8, 6, 5, 5, 6, 9, 11, 10, 7, 4, 2])
week = pd.Timestamp("2024-02-19", tz="UTC")

rows = []
for n in range(1001, 1801):
    stream = f"order-{n}"
    hour = rng.choice(24, p=hourly / hourly.sum())
    at = week + pd.Timedelta(days=int(rng.integers(7)), hours=int(hour))
    at += pd.Timedelta(minutes=int(rng.integers(50)))
    rows.append((stream, "OrderPlaced", {"customer": f"web-{rng.integers(300)}"}, at))
    for minute in range(1, int(rng.integers(1, 5)) + 1):
        sku = str(rng.choice(list(prices)))
        item = {"sku": sku, "qty": int(rng.integers(1, 4)), "price": prices[sku]}
        rows.append((stream, "ItemAdded", item, at + pd.Timedelta(minutes=minute)))
    outcome = "OrderPaid" if rng.random() < 0.85 else "OrderCancelled"
    rows.append((stream, outcome, {}, at + pd.Timedelta(minutes=8)))

web = pd.DataFrame(rows, columns=["stream_id", "type", "data", "occurred_at"])
web.head()

# %% [markdown]
# `append_frame` appends a whole DataFrame in one transaction, far faster than one
# `append` per event. Versions continue each stream; `occurred_at` keeps the time
# each order really happened, while `recorded_at` is the time of the import.

# %%
count = store.append_frame(web)
print(f"appended {count} events; the log now holds {store.head}")

# %% [markdown]
# A picture says more than a table here: what kinds of events arrived, and at
# which hour of the day customers place orders (by business time, `occurred_at`).

# %%
by_type = store.sql("SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY n")
by_hour = store.sql(
    """
    SELECT hour(occurred_at) AS hour, count(*) AS orders
    FROM events
    WHERE type = 'OrderPlaced'
    GROUP BY hour
    ORDER BY hour
    """
)
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
left.barh(by_type["type"], by_type["n"])
left.set_title("Events per type")
left.set_xlabel("events")
right.bar(by_hour["hour"], by_hour["orders"])
right.set_title("Orders placed per hour of day (UTC)")
right.set_xlabel("hour")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 8. Parquet: the log as files
#
# Parquet is the file format that pandas, DuckDB, Spark and most data tools read.
# We export into a temporary folder, partitioned by the UTC day of `recorded_at`:
# one sub-folder per day, named `day=YYYY-MM-DD` (the "Hive" layout).

# %%
workdir = tempfile.TemporaryDirectory(prefix="eventlab-lesson-")
lake = store.export_parquet(Path(workdir.name) / "lake", partition_by="day")
for path in sorted(lake.rglob("*.parquet")):
    print(path.relative_to(lake))

# %% [markdown]
# `EventStore.from_parquet` builds a new store from those files. The round trip is
# exact: every column of every event, positions and timestamps included.

# %%
copy = el.EventStore.from_parquet(lake)
print("events:", copy.head, "| streams:", len(copy.streams()))
print("identical DataFrames:", copy.events().equals(store.events()))
print("identical records:", list(copy.read_all()) == list(store.read_all()))

# %% [markdown]
# Close the copy and remove the temporary folder. `store` stays open for the
# exercises below; `store.close()` releases it when you are done.

# %%
copy.close()
workdir.cleanup()

# %% [markdown]
# ## What you learned
#
# - An event is an immutable fact named in the past tense; the log only grows.
# - `append` returns `RecordedEvent`s with a global **position**, a per-stream
#   **version**, and two times: `recorded_at` (knowledge) and `occurred_at` (business).
# - `read_stream`, `read_all`, `events()` and `sql()` read the same log as objects,
#   a stream of records, a DataFrame and SQL results.
# - `expected_version` turns a lost update into a `ConcurrencyError`: reload and retry.
# - An `event_id` makes a retried append harmless; `transaction()` makes many appends
#   one all-or-nothing step.
# - `append_frame` loads thousands of events at once; Parquet exports round-trip exactly.
#
# ## Try this
#
# 1. Use `expected_version=0` to append `OrderPlaced` to `order-1`. What happens, and why?
# 2. Replay `order-1` into a dict of `{sku: qty}` instead of a total.
# 3. With `store.sql`, find the share of web orders that were cancelled, per day of week.
# 4. Export with `partition_by="type"` and list the folders. When is that layout handy?
# 5. Nest one `with store.transaction():` block inside another, raise in the inner
#    block only and catch the error in the outer one. Which appends are written?
