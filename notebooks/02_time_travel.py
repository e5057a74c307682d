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
# # 02 · Replay and time travel
#
# In lesson 01 the shop kept its history as events. Here we use that history: if the
# current state of an order is worked out from its events, then *every past state*
# can be worked out too. You will:
#
# 1. rebuild an order's state by folding its events, first with a function, then
#    with an **aggregate** that also enforces the shop's rules,
# 2. look at the order's whole history as a table and a plot,
# 3. ask for the state at a version and at a moment in business time,
# 4. handle a late correction, with two time axes (what happened when, and what we
#    knew when),
# 5. list what changed between two versions,
# 6. undo a mistake without deleting anything, and undo the undo,
# 7. stop two clerks from overwriting each other's changes,
# 8. make a long stream fast to load with snapshots,
# 9. read events stored in an old shape (upcasting).
#
# Run the cells from top to bottom (Shift+Enter).

# %%
import functools
import time
from datetime import timedelta

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd

import eventlab as el

# %% [markdown]
# The store's `SimulatedClock` starts on Monday 4 March 2024 at 09:00 and moves one
# minute per event. `now_is` jumps it forward, so we can let hours and days pass.

# %%
clock = el.SimulatedClock("2024-03-04T09:00", step=timedelta(minutes=1))
store = el.EventStore(clock=clock)


def now_is(when):
    """Move the simulated clock forward to ``when`` (a UTC time)."""
    clock.advance(pd.Timestamp(when, tz="UTC") - clock.current)


# %% [markdown]
# ## 1. The current state is a fold
#
# Ada places order 1: two mugs, a packet of tea and three pens. Prices are in
# cents, so sums are exact.

# %%
store.append(
    "order-1",
    [
        el.Event("OrderPlaced", {"customer": "ada", "address": "12 Elm Street, Leeds"}),
        el.Event("ItemAdded", {"sku": "MUG", "qty": 2, "price_cents": 850}),
        el.Event("ItemAdded", {"sku": "TEA", "qty": 1, "price_cents": 400}),
        el.Event("ItemAdded", {"sku": "PEN", "qty": 3, "price_cents": 150}),
    ],
)
for event in store.read_stream("order-1"):
    print(f"v{event.version} {event.recorded_at:%a %H:%M} {event.type:12} {event.data}")

# %% [markdown]
# A **reducer** takes the state so far and one event, and returns the next state.
# This one keeps a small summary of an order in a dict.


# %%
def summarise(state, event):
    if event.type == "OrderPlaced":
        return {**state, "status": "open", "customer": event.data["customer"]}
    if event.type == "ItemAdded":
        qty = event.data["qty"]
        total = state["total"] + qty * event.data["price_cents"]
        return {**state, "items": state["items"] + qty, "total": total}
    return state


blank = {"status": "new", "customer": None, "items": 0, "total": 0}

# %% [markdown]
# Folding the events with it, from a blank state, gives the current state. A fold is
# exactly what Python's `functools.reduce` does; `el.replay` does the same, plus
# the undo we meet in section 6.

# %%
events = store.read_stream("order-1")
print("reduce:", functools.reduce(summarise, events, blank))
print("replay:", el.replay(events, summarise, blank))

# %% [markdown]
# A real shop also has **rules**: no items after payment, no shipping before it. An
# **aggregate** keeps them next to the state they protect. Its *command methods*
# check a rule and `emit` an event; its `apply_<Type>` *handlers* change the state
# and never refuse, because an event is a fact that already happened.


# %%
class OrderError(Exception):
    """A shop rule refused a command."""


class Order(el.Aggregate):
    def __init__(self, id):
        super().__init__(id)
        self.status = "new"
        self.customer = None
        self.address = None
        self.items = {}  # sku -> {"qty": ..., "price_cents": ...}
        self.total_cents = 0

    # Commands: check the rules, then emit (which applies the event and queues it).
    def place(self, customer, address, occurred_at=None):
        self._require("new", "place")
        data = {"customer": customer, "address": address}
        self.emit("OrderPlaced", data, occurred_at=occurred_at)

    def add_item(self, sku, qty, price_cents, occurred_at=None):
        self._require("open", "add items to")
        data = {"sku": sku, "qty": qty, "price_cents": price_cents}
        self.emit("ItemAdded", data, occurred_at=occurred_at)

    def remove_item(self, sku, occurred_at=None):
        self._require("open", "remove items from")
        if sku not in self.items:
            raise OrderError(f"{self.id} has no {sku} to remove")
        self.emit("ItemRemoved", {"sku": sku}, occurred_at=occurred_at)

    def change_address(self, address, occurred_at=None):
        if self.status not in ("open", "paid"):
            raise OrderError(f"cannot change the address: {self.id} is {self.status}")
        self.emit("AddressChanged", {"address": address}, occurred_at=occurred_at)

    def pay(self, occurred_at=None):
        self._require("open", "pay")
        self.emit("OrderPaid", {"amount_cents": self.total_cents}, occurred_at=occurred_at)

    def ship(self, carrier, occurred_at=None):
        self._require("paid", "ship")
        self.emit("OrderShipped", {"carrier": carrier}, occurred_at=occurred_at)

    def _require(self, status, action):
        if self.status != status:
            raise OrderError(f"cannot {action} {self.id}: it is {self.status}, not {status}")

    # Handlers: apply one event to the state.
    def apply_OrderPlaced(self, event):
        self.status = "open"
        self.customer = event.data["customer"]
        self.address = event.data["address"]

    def apply_ItemAdded(self, event):
        sku, qty = event.data["sku"], event.data["qty"]
        before = self.items.get(sku, {"qty": 0})["qty"]
        self.items[sku] = {"qty": before + qty, "price_cents": event.data["price_cents"]}
        self._add_up()

    def apply_ItemRemoved(self, event):
        self.items.pop(event.data["sku"], None)
        self._add_up()

    def apply_AddressChanged(self, event):
        self.address = event.data["address"]

    def apply_OrderPaid(self, event):
        self.status = "paid"

    def apply_OrderShipped(self, event):
        self.status = "shipped"

    def _add_up(self):
        self.total_cents = sum(line["qty"] * line["price_cents"] for line in self.items.values())


# %% [markdown]
# `Order.load` reads the stream and folds it through the handlers. The aggregate
# remembers the version it was loaded at.

# %%
order = Order.load(store, "order-1")
order

# %% [markdown]
# From now on the order changes only through its commands. In the afternoon Ada
# drops the pens; `save` appends what the commands emitted.

# %%
now_is("2024-03-04T14:00")
order.remove_item("PEN")
order.save(store)
order.version, order.total_cents

# %% [markdown]
# On Tuesday morning she moves the delivery to her office, then pays.

# %%
now_is("2024-03-05T10:00")
order.change_address("4 Mill Road, Leeds")
order.pay()
order.save(store)
order.status, order.version

# %% [markdown]
# A rule in action: a paid order takes no more items. The command raises before
# emitting, so nothing is queued and the store never hears of it.

# %%
try:
    order.add_item("BAG", 1, 1200)
except OrderError as error:
    print(error)
print("queued events:", order.pending_events)

# %% [markdown]
# On Wednesday the warehouse ships it.

# %%
now_is("2024-03-06T08:00")
order.ship("DHL")
order.save(store)
order

# %% [markdown]
# ## 2. The history as a table and a plot
#
# `el.history` replays the stream once and keeps the state after *every* event: one
# row per version, with the aggregate's fields flattened into columns (nested ones
# joined with dots, like `items.MUG.qty`). We show the most telling columns.

# %%
history = el.history(store, "order-1", Order)
history.filter(regex="version|type|status|address|qty|total")

# %% [markdown]
# A field over versions is a small plot: the total rises with each item and falls
# when the pens go.

# %%
fig, ax = plt.subplots(figsize=(8, 3))
ax.step(history["version"], history["total_cents"] / 100, where="post", marker="o")
labels = [f"v{row.version}\n{row.type}" for row in history.itertuples()]
ax.set_xticks(history["version"], labels)
ax.tick_params(axis="x", labelsize=7)
ax.set_ylabel("total (EUR)")
ax.set_title("order-1: total after each event")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. The state at a version and at a business time
#
# `version=n` replays only the first n events. Here is the order before the pens
# were removed.

# %%
Order.load(store, "order-1", version=4)

# %% [markdown]
# `at=t` replays the events that *occurred* by time t: the business-time axis. What
# did order 1 look like on Monday evening?

# %%
Order.load(store, "order-1", at="2024-03-04T18:00")

# %% [markdown]
# The functional form, `store.state_at`, does the same for any reducer. Before the
# first event there is nothing yet: the initial state.

# %%
print("Mon 12:00:", store.state_at("order-1", summarise, at="2024-03-04T12:00", initial=blank))
print("Sun 12:00:", store.state_at("order-1", summarise, at="2024-03-03T12:00", initial=blank))

# %% [markdown]
# A version the stream has not reached is an error that says what exists.

# %%
try:
    Order.load(store, "order-1", version=20)
except el.VersionNotFoundError as error:
    print(error)

# %% [markdown]
# ## 4. A late correction: business time and knowledge time
#
# Every event has two times. `occurred_at` is when it happened in the shop (business
# time); `recorded_at` is when the store learned of it (knowledge time). Usually
# they are the same. On Wednesday 6 March, Grace places order 2.

# %%
now_is("2024-03-06T11:00")
order2 = Order.load(store, "order-2")
order2.place("grace", "3 Castle Street, York")
order2.add_item("BAG", 1, 1200)
order2.pay()
order2.save(store)
order2.address

# %% [markdown]
# It is now Monday 11 March. Support finds a note: Grace phoned on *Thursday*
# afternoon to move to a new address, but nobody typed it in. We record it today,
# saying when it really happened with `occurred_at`.

# %%
now_is("2024-03-11T09:00")
order2 = Order.load(store, "order-2")
order2.change_address("9 Bridge Road, York", occurred_at="2024-03-07T16:00")
[late] = order2.save(store)
print("occurred:", late.occurred_at)
print("recorded:", late.recorded_at)

# %% [markdown]
# Now there are two questions about last Friday. *Where should order 2 have gone on
# Friday?* counts every event that occurred by then, as far as we know now (`at`).
# *What did we believe yesterday?* counts only events recorded by then (`known_at`).

# %%
last_friday, yesterday = "2024-03-08T12:00", "2024-03-10T12:00"
print("at last Friday:                 ", Order.load(store, "order-2", at=last_friday).address)
print(
    "at last Friday, known yesterday:",
    Order.load(store, "order-2", at=last_friday, known_at=yesterday).address,
)

# %% [markdown]
# The correction shows up in `at=last Friday`, but not in `known_at=yesterday`.
# Here are all four combinations of the two axes (passing `None` means "now"). A
# state loaded like this is a view of the past: look at it, but take new decisions
# (and `save`) only on the current state.

# %%
rows = []
for at_label, at in (("last Friday", last_friday), ("now", None)):
    for known_label, known_at in (("yesterday", yesterday), ("now", None)):
        state = Order.load(store, "order-2", at=at, known_at=known_at)
        rows.append({"state at": at_label, "as known at": known_label, "address": state.address})
pd.DataFrame(rows)

# %% [markdown]
# A picture of the two axes: each event is a dot at (when it occurred, when we
# recorded it). Ordinary events sit on the diagonal; the late correction sits far
# above it. A question `at=T, known_at=K` sees only the dots in the box left of T
# and below K.

# %%
events2 = store.events("order-2")
start, end = pd.Timestamp("2024-03-05", tz="UTC"), pd.Timestamp("2024-03-12", tz="UTC")
T, K = pd.Timestamp(last_friday, tz="UTC"), pd.Timestamp(yesterday, tz="UTC")
fig, ax = plt.subplots(figsize=(6, 4))
ax.plot([start, end], [start, end], color="grey", linewidth=0.5)
ax.axvline(T, linestyle="--", linewidth=1, label="at = last Friday")
ax.axhline(K, linestyle=":", linewidth=1, label="known_at = yesterday")
ax.fill_between([start, T], start, K, alpha=0.15, label="what that question sees")
ax.scatter(events2["occurred_at"], events2["recorded_at"], zorder=3)
first = events2.iloc[0]
ax.annotate(
    "v1-v3: placed, item, paid",
    (first["occurred_at"], first["recorded_at"]),
    xytext=(8, -4),
    textcoords="offset points",
    fontsize=8,
)
ax.annotate(
    "v4: AddressChanged,\nrecorded four days late",
    (late.occurred_at, late.recorded_at),
    xytext=(8, -22),
    textcoords="offset points",
    fontsize=8,
)
ax.xaxis.set_major_formatter(mdates.DateFormatter("%a %d"))
ax.yaxis.set_major_formatter(mdates.DateFormatter("%a %d"))
ax.set(
    xlim=(start, end),
    ylim=(start, end),
    xlabel="occurred_at (business time)",
    ylabel="recorded_at (knowledge time)",
)
ax.legend(loc="lower right", fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 5. What changed between two versions
#
# `el.diff` compares two states field by field. Between the order as first placed
# (version 4) and as shipped (version 8):

# %%
el.diff(Order.load(store, "order-1", version=4), Order.load(store, "order-1", version=8))

# %% [markdown]
# Diffing each version with the one before tells what every event changed.

# %%
states = [Order.load(store, "order-1", version=v) for v in range(order.version + 1)]
for v in range(1, len(states)):
    changes = el.diff(states[v - 1], states[v])
    print(f"v{v} {history['type'][v - 1]:14}", ", ".join(changes["path"]))

# %% [markdown]
# ## 6. Undo without deleting: revert, and revert the revert
#
# Alan places order 3 for a notebook.

# %%
now_is("2024-03-11T10:00")
order3 = Order.load(store, "order-3")
order3.place("alan", "1 Turing Way, Manchester")
order3.add_item("NTB", 1, 725)
order3.save(store)
order3.version

# %% [markdown]
# A clerk, with the wrong order open, adds ten mugs and changes the address.

# %%
order3.add_item("MUG", 10, 850)
order3.change_address("22 Wrong Street, Bristol")
order3.save(store)
order3

# %% [markdown]
# We cannot delete those events, and need not. `store.revert` appends one `Reverted`
# event that says "the state is back to what it was at version 2".

# %%
store.revert("order-3", to_version=2, reason="clerk edited the wrong order")
Order.load(store, "order-3")

# %% [markdown]
# The history keeps every event, the mistakes included, and shows the state the
# revert restored.

# %%
el.history(store, "order-3", Order)[["version", "type", "address", "total_cents"]]

# %% [markdown]
# Time travel to a version before the revert still shows what was there then.

# %%
Order.load(store, "order-3", version=4)

# %% [markdown]
# Then Alan calls: the ten mugs and the Bristol office were his after all. Undoing
# the undo is another revert, back to version 4 (the state just before the first).

# %%
store.revert("order-3", to_version=4, reason="customer confirmed the mugs")
el.diff(Order.load(store, "order-3", version=5), Order.load(store, "order-3"))

# %% [markdown]
# The aggregate carries on from there as usual, and the log now tells the whole
# story.

# %%
order3 = Order.load(store, "order-3")
order3.pay()
order3.save(store)
el.history(store, "order-3", Order)[["version", "type", "address", "total_cents", "status"]]

# %% [markdown]
# ## 7. Two clerks, one order: optimistic concurrency
#
# A warehouse worker and a support agent both open order 2. Each loads it at the
# same version.

# %%
warehouse = Order.load(store, "order-2")
support = Order.load(store, "order-2")
warehouse.version, support.version

# %% [markdown]
# The warehouse ships it first. `save` appends with `expected_version` set to the
# version the aggregate was loaded at, which still holds.

# %%
warehouse.ship("UPS")
warehouse.save(store)
store.version("order-2")

# %% [markdown]
# Support, still looking at the unshipped order, changes the address. Its own rules
# allow that for a paid order, but the store refuses the save: the order moved on.

# %%
support.change_address("1 Station Road, York")
try:
    support.save(store)
except el.ConcurrencyError as error:
    print(error)

# %% [markdown]
# Reload and decide again: on the fresh state the rule itself says no. Without the
# version check, a parcel already on its way would have a new address in our books.

# %%
support = Order.load(store, "order-2")
try:
    support.change_address("1 Station Road, York")
except OrderError as error:
    print(error)

# %% [markdown]
# ## 8. Snapshots: loading a long stream fast
#
# Every load replays the whole stream. That is instant for a handful of events, but
# a café's standing order, which an import tops up with 4,000 items, shows the cost.

# %%
now_is("2024-03-11T12:00")
prices = {"MUG": 850, "TEA": 400, "PEN": 150, "BAG": 1200, "NTB": 725}
skus = list(prices)
cafe = Order.load(store, "order-cafe")
cafe.place("corner café", "2 Market Square, Leeds")
for n in range(4000):
    cafe.add_item(skus[n % len(skus)], 1, prices[skus[n % len(skus)]])
cafe.save(store)
cafe.version

# %% [markdown]
# We time a call with `time.perf_counter`, keeping the best of three runs. Timings
# are the one thing in this lesson that differs from run to run and machine to
# machine.


# %%
def best_ms(call, runs=3):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


slow_ms = best_ms(lambda: Order.load(store, "order-cafe"))
print(f"Order.load replays {cafe.version} events in {slow_ms:.1f} ms")

# %% [markdown]
# A **snapshot** is the state stored at some version, so a load can start from the
# nearest one and replay only the events after it. An aggregate opts in with the
# class attribute `snapshot_every`; a subclass keeps `Order` itself unchanged.
# `save` takes a snapshot whenever the stream crosses a multiple of it, and
# `store.rebuild_snapshots` takes them for a history that already exists.


# %%
class SnapshotOrder(Order):
    snapshot_every = 500


store.rebuild_snapshots(SnapshotOrder)

# %% [markdown]
# They live in the `snapshots` table: one row per stream, reducer and version. They
# are only a cache, rebuilt from the events at any time: deleting them loses nothing.

# %%
store.sql("SELECT stream_id, reducer, version, taken_at FROM snapshots ORDER BY version")

# %% [markdown]
# Each holds the state as JSON: the aggregate's attributes at that version.

# %%
print(store.sql("SELECT state FROM snapshots WHERE version = 4000")["state"][0])

# %% [markdown]
# Loading now replays one event after the snapshot at version 4,000, and gives the
# same state.

# %%
fast_ms = best_ms(lambda: SnapshotOrder.load(store, "order-cafe"))
print(f"with snapshots: {fast_ms:.1f} ms, {slow_ms / fast_ms:.0f} times faster")
fast, slow = SnapshotOrder.load(store, "order-cafe"), Order.load(store, "order-cafe")
print("same state:", (fast.items, fast.total_cents) == (slow.items, slow.total_cents))

# %% [markdown]
# Time travel uses them too: a load at version v starts from the latest snapshot at
# or before v. Without snapshots the cost grows with v; with them it stays low, in a
# sawtooth that peaks just before each snapshot.

# %%
versions = range(0, cafe.version + 1, 250)
plain = [best_ms(lambda v=v: Order.load(store, "order-cafe", version=v)) for v in versions]
snapped = [
    best_ms(lambda v=v: SnapshotOrder.load(store, "order-cafe", version=v)) for v in versions
]
fig, ax = plt.subplots(figsize=(8, 3))
ax.plot(versions, plain, marker=".", label="Order: no snapshots")
ax.plot(versions, snapped, marker=".", label="SnapshotOrder: one every 500 versions")
ax.set(xlabel="version loaded", ylabel="load time (ms)", title="Loading order-cafe at a version")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# `save` keeps taking them. Topping the order up past version 4,500 stores a new one.

# %%
cafe = SnapshotOrder.load(store, "order-cafe")
for _ in range(500):
    cafe.add_item("TEA", 1, prices["TEA"])
cafe.save(store)
store.sql("SELECT version, taken_at FROM snapshots ORDER BY version DESC LIMIT 3")

# %% [markdown]
# ## 9. Upcasting: reading events stored in an old shape
#
# The shop's first system, in 2019, stored prices in euros as `price_eur`. Those
# events are still in its log. We keep it in a separate store here.

# %%
old_shop = el.EventStore(clock=el.SimulatedClock("2019-06-03T10:00"))
old_shop.append(
    "order-77",
    [
        {"type": "OrderPlaced", "data": {"customer": "edsger", "address": "5 Dijkstra Lane"}},
        {"type": "ItemAdded", "data": {"sku": "TEA", "qty": 2, "price_eur": 4.0}},
        {"type": "ItemAdded", "data": {"sku": "PEN", "qty": 1, "price_eur": 19.99}},
    ],
)
old_shop.sql("SELECT version, type, schema_version, data FROM events")

# %% [markdown]
# Today's `Order` expects `price_cents`, so replaying the old events fails, and the
# error names the stream, version and event type.

# %%
try:
    Order.load(old_shop, "order-77")
except el.ReplayError as error:
    print(error)

# %% [markdown]
# Stored events are never rewritten. Instead an **upcaster** converts schema version
# 1 of `ItemAdded` to version 2 whenever such an event is read.


# %%
@el.upcaster("ItemAdded", from_version=1)
def euros_to_cents(data):
    cents = round(data["price_eur"] * 100)
    return {"sku": data["sku"], "qty": data["qty"], "price_cents": cents}


Order.load(old_shop, "order-77")

# %% [markdown]
# The reducer sees today's shape, while the stored row still holds euros. New
# `ItemAdded` events are stored at the end of the chain: schema version 2.

# %%
legacy = Order.load(old_shop, "order-77")
legacy.add_item("MUG", 1, 850)
legacy.save(old_shop)
print("read as:", [e.data for e in old_shop.read_stream("order-77", from_version=2)])
old_shop.sql("SELECT version, type, schema_version, data FROM events")

# %% [markdown]
# The registry of upcasters is shared by the whole Python process. Remove ours so
# that it does not surprise later cells, and close the old store.

# %%
el.upcasters.remove("ItemAdded")
old_shop.close()

# %% [markdown]
# ## What you learned
#
# - The current state is a **fold** of the events: `el.replay` with a reducer
#   function, or an `el.Aggregate` whose handlers apply events and whose commands
#   enforce rules before emitting.
# - `el.history` gives the state after every event as a table, ready to plot.
# - `version=`, `at=` (business time) and `known_at=` (knowledge time) rebuild any
#   past state; together they answer "what did we know then about that time".
# - `el.diff` lists the field-level changes between two states.
# - `store.revert` undoes by appending, so the history keeps every event and a later
#   revert can undo the undo.
# - Saving an aggregate checks the version it was loaded at: a concurrent change
#   gives a `ConcurrencyError`, and you reload and decide again.
# - Snapshots (`snapshot_every`, `store.rebuild_snapshots`) make loading a long
#   stream cost the events after the nearest snapshot, not the whole history.
# - Upcasters bring old event shapes up to date when they are read.
#
# ## Try this
#
# 1. Write a reducer that counts how often an order's address changed, and fold
#    order 2 with it at three different `known_at` times.
# 2. Revert order 1 to version 6, before it was paid. What would that mean for the
#    money? Why might a real shop append an `OrderRefunded` event instead?
# 3. Look at `el.history(store, "order-2", Order)`. In which row is the late
#    `AddressChanged`, and how do its `occurred_at` and `recorded_at` differ?
# 4. Set `snapshot_every = 50` on a new subclass, rebuild its snapshots and time the
#    loads again. What do you gain, and what does it cost in the `snapshots` table?
# 5. Add a second upcaster step, `from_version=2`, that adds `"currency": "EUR"` to
#    every `ItemAdded`. What schema version do new events get now?
