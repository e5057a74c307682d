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
# # 04 · Commands: queues, retries and circuit breakers
#
# In lesson 03 the write side was a few Python functions called directly. Real
# systems put the requests themselves on record: a **command** ("place this order",
# "take this payment") is stored, queued, run by a handler, and its fate (succeeded,
# rejected, retried, given up) is kept like the events it causes. You will:
#
# 1. tell commands from events and submit a command idempotently,
# 2. run commands through an **executor** and a **scheduler**, and query the
#    **command store**,
# 3. let a command expire at its **deadline**,
# 4. retry a flaky payment service with **backoff**, dead-letter a hopeless
#    payment, fix it and requeue it,
# 5. undo and retry a command that ran past its **timeout**,
# 6. protect the payment service with a **circuit breaker**,
# 7. plot commands and the breaker on one timeline.
#
# Run the cells from top to bottom (Shift+Enter).

# %%
from datetime import timedelta

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd

import eventlab as el

# %% [markdown]
# The `SimulatedClock` starts on Monday 4 March 2024 at 09:00. This time its `step`
# is zero, so reading it does not move it: only the scheduler's waits (and our own
# `clock.advance`) move time, which keeps every timestamp below easy to follow.

# %%
clock = el.SimulatedClock("2024-03-04T09:00", step=timedelta(0))
store = el.EventStore(clock=clock)
clock.current

# %% [markdown]
# ## 1. Commands and events
#
# An **event** says what *happened* (`OrderPlaced`, past tense): it is a fact and
# cannot be refused. A **command** says what someone *wants* (`PlaceOrder`,
# imperative): the system may still say no. An `el.Command` has a type, a payload,
# and a `command_id`.

# %%
place_ada = el.Command(
    "PlaceOrder",
    {"order_id": "o-1", "customer": "ada", "items": [["MUG", 2, 850], ["TEA", 1, 400]]},
    command_id="place-o-1",
)
place_ada

# %% [markdown]
# The `command_id` is the **idempotency key**: a browser that resends the form, or
# a client that retries after a lost reply, sends the same id again. The
# **command store** keeps every command in a `commands` table next to the events;
# `add` records a new one and refuses a known id.

# %%
commands = el.CommandStore(store)
commands.add(place_ada), commands.add(place_ada)

# %% [markdown]
# The store holds it once, `queued`, waiting for something to run it.

# %%
commands.counts()

# %% [markdown]
# ## 2. Executor, scheduler and command store
#
# An **executor** maps each command type to a handler `fn(command, ctx)`. The handler
# checks the rules and returns the events to store, as `{stream_id: [events]}`. To
# refuse a command for good it raises `el.CommandRejected`.

# %%
executor = el.CommandExecutor(store, commands)


@executor.handler("PlaceOrder")
def place_order(command, ctx):
    items = command.payload.get("items") or []
    if not items:
        raise el.CommandRejected("an order needs at least one item")
    events = [el.Event("OrderPlaced", {"customer": command.payload["customer"]})]
    events += [
        el.Event("ItemAdded", {"sku": sku, "qty": qty, "price_cents": price})
        for sku, qty, price in items
    ]
    return {f"order-{command.payload['order_id']}": events}


# %% [markdown]
# A **scheduler** is a queue in front of the executor: `submit` queues a command
# (the same id twice changes nothing), and `run()` takes queued commands in FIFO
# order until none is left. Its settings are explained in the sections below.

# %%
scheduler = el.CommandScheduler(
    store,
    executor,
    timeout=timedelta(seconds=30),
    max_attempts=5,
    backoff=el.RetryPolicy.exponential(2, factor=2, max_delay=60),
)
scheduler.submit(place_ada), scheduler.submit(place_ada), scheduler.pending()

# %% [markdown]
# Ten minutes later Grace submits an order with nothing in it.

# %%
clock.advance(timedelta(minutes=10))
scheduler.submit(
    el.Command("PlaceOrder", {"order_id": "o-2", "customer": "grace"}, command_id="place-o-2")
)
scheduler.run()

# %% [markdown]
# Ada's order produced events; each carries the command's id as its `causation_id`,
# so every event can be traced back to the request that caused it. Grace's order
# produced none.

# %%
store.sql("SELECT position, stream_id, type, causation_id FROM events ORDER BY position")

# %% [markdown]
# The command store answers by id: `get` returns the command's current row...

# %%
ada = commands.get("place-o-1")
{key: ada[key] for key in ["type", "status", "attempts", "result", "submitted_at"]}

# %% [markdown]
# ...and `history` every status it went through, kept for good.

# %%
commands.history("place-o-1")

# %% [markdown]
# A rejected command is final; its error says why.

# %%
commands.history("place-o-2")

# %% [markdown]
# By submission time, `between(start, end)` (end excluded) lists the commands of a
# period, here the first five minutes of the morning.

# %%
commands.between("2024-03-04T09:00", "2024-03-04T09:05")[
    ["command_id", "type", "status", "submitted_at"]
]

# %% [markdown]
# By current status: `by_status` lists the commands in one or more statuses, and
# `counts` counts them all.

# %%
commands.by_status("rejected")[["command_id", "status", "error"]]

# %%
commands.counts()

# %% [markdown]
# ## 3. Deadlines
#
# Some requests are worthless if they run too late: a "reserve this table for lunch"
# at 15:00 should not be run at all. A command's `deadline` (UTC) makes the scheduler
# discard it as `expired` instead of running it. Here the scheduler was busy for
# ten minutes, and the deadline was five minutes after submission.

# %%
scheduler.submit(
    el.Command(
        "PlaceOrder",
        {"order_id": "o-3", "customer": "alan", "items": [["TEA", 3, 400]]},
        command_id="place-o-3",
        deadline=clock.current + timedelta(minutes=5),
    )
)
clock.advance(timedelta(minutes=10))
scheduler.run()
commands.get("place-o-3")["status"], commands.get("place-o-3")["error"]

# %% [markdown]
# No events were written for `o-3`.

# %%
store.streams()

# %% [markdown]
# ## 4. A flaky payment service: retries and dead letters
#
# Payments go to an outside service. This fake one fails the next `failures` calls
# with a `ConnectionError`, and every call until the time `down_until`, and counts
# the calls.


# %%
class PaymentService:
    def __init__(self):
        self.failures, self.down_until, self.calls = 0, None, 0

    def charge(self, order_id, amount_cents):
        self.calls += 1
        down = self.down_until is not None and clock.current < self.down_until
        if down or self.failures > 0:
            self.failures = max(self.failures - 1, 0)
            raise ConnectionError("payment service unavailable")
        return f"ch-{self.calls:03d}"


gateway = PaymentService()
breaker = None  # section 6 puts a circuit breaker here


def charge_card(order_id, amount_cents):
    """The shop's one way to reach the payment service: through the breaker, if any."""
    if breaker is None:
        return gateway.charge(order_id, amount_cents)
    return breaker.call(gateway.charge, order_id, amount_cents)


# %% [markdown]
# The handler charges the card and records the payment. A `ConnectionError` is not
# a `CommandRejected`: the command counts as `failed`, which the scheduler retries.


# %%
@executor.handler("TakePayment")
def take_payment(command, ctx):
    order_id, amount = command.payload["order_id"], command.payload["amount_cents"]
    if amount <= 0:
        raise el.CommandRejected(f"nothing to pay on {order_id}")
    charge = charge_card(order_id, amount)
    event = el.Event("PaymentTaken", {"amount_cents": amount, "charge": charge})
    return {f"payment-{order_id}": [event]}


# %% [markdown]
# The scheduler's `backoff` is an `el.RetryPolicy`: here the first retry waits
# 2 s, then 4 s, 8 s, ... at most 60 s. Waiting early retries out gives a
# struggling service room to recover.

# %%
[scheduler.backoff.delay(n).total_seconds() for n in range(1, 6)]

# %% [markdown]
# The service fails twice, then works. `run()` waits for each retry: on a simulated
# clock it just moves the clock forward to the retry's due time.

# %%
gateway.failures = 2
scheduler.submit(
    el.Command("TakePayment", {"order_id": "o-1", "amount_cents": 2100}, command_id="pay-o-1")
)
started = clock.current
scheduler.run()
commands.get("pay-o-1")["status"], clock.current - started

# %% [markdown]
# Two failures, each followed by a wait in the queue, then the success.

# %%
commands.history("pay-o-1")

# %% [markdown]
# Now the service goes down for a day. After `max_attempts` (5) attempts the scheduler
# gives up and parks the command as `dead`: a **dead letter**, kept for a human to
# look at instead of being retried forever.

# %%
gateway.down_until = clock.current + timedelta(days=1)
scheduler.submit(
    el.Command("TakePayment", {"order_id": "o-4", "amount_cents": 900}, command_id="pay-o-4")
)
scheduler.run()
commands.by_status("dead")[["command_id", "attempts", "error"]]

# %% [markdown]
# Someone fixes the service and `requeue`s the dead command: it gets fresh attempts
# and runs again.

# %%
gateway.down_until = None
scheduler.requeue("pay-o-4")
scheduler.run()
commands.history("pay-o-4").tail(4)

# %% [markdown]
# ## 5. Timeouts
#
# Shipping goes through a warehouse system that is sometimes very slow. The fake
# one below takes `slow_seconds` on the next call, by moving the simulated clock.

# %%
warehouse = {"slow_seconds": 45}


@executor.handler("ShipOrder")
def ship_order(command, ctx):
    clock.advance(timedelta(seconds=warehouse.pop("slow_seconds", 1)))
    order_id = command.payload["order_id"]
    return {f"shipment-{order_id}": [el.Event("OrderShipped", {"order_id": order_id})]}


# %% [markdown]
# The scheduler's `timeout` is 30 s. A run that takes longer is **undone**: its
# events are rolled back, as if it never ran, and it counts as `timed_out`, which
# is retried like a failure. The second attempt is quick.

# %%
scheduler.submit(el.Command("ShipOrder", {"order_id": "o-1"}, command_id="ship-o-1"))
scheduler.run()
commands.history("ship-o-1")

# %% [markdown]
# Only the second attempt's event is in the store.

# %%
store.sql("SELECT position, type, causation_id FROM events WHERE stream_id = 'shipment-o-1'")

# %% [markdown]
# ## 6. A circuit breaker
#
# When the payment service is down, every retry still calls it, and a service that
# is struggling gets even more traffic. A **circuit breaker** counts failures: after
# `failure_threshold` in a row it *opens* and refuses calls at once with
# `el.CircuitOpenError`; after `cool_down` it *half-opens* and lets one trial call
# through; a successful trial *closes* it again. It reads time from our clock.

# %%
breaker = el.CircuitBreaker(
    failure_threshold=3, cool_down=timedelta(seconds=30), clock=clock, name="payments"
)
breaker

# %% [markdown]
# `charge_card`, and so the payment handler, now goes through the breaker.
# The service goes down for 20 s, and four customers pay at that moment.

# %%
gateway.down_until = clock.current + timedelta(seconds=20)
outage_start, calls_before = clock.current, gateway.calls
outage = [f"pay-o-{number}" for number in range(5, 9)]
for number, command_id in enumerate(outage, start=5):
    scheduler.submit(
        el.Command(
            "TakePayment",
            {"order_id": f"o-{number}", "amount_cents": 1000 + number},
            command_id=command_id,
        )
    )
scheduler.run()
commands.counts(), breaker.state

# %% [markdown]
# All four payments went through in the end. Without the breaker, the service would
# have had 16 calls while it was down (four commands, four failed attempts each).
# With it, it saw the three calls that opened the breaker, then nothing until the
# cool-down was over: one trial call, and the three payments after it closed.

# %%
gateway.calls - calls_before

# %% [markdown]
# The last payment shows it: its first attempt was refused by the open breaker, so
# the service never saw it, and so were its retries until the cool-down was over.

# %%
commands.history("pay-o-8")

# %% [markdown]
# The breaker's own log, one row per state change:

# %%
breaker.events()

# %% [markdown]
# ## 7. A timeline
#
# Every status change of the outage's payment commands is in their histories. Here
# they go on one time axis with the breaker's states, as a coloured band.

# %%
history = pd.concat(
    {command_id: commands.history(command_id) for command_id in outage}, names=["command_id"]
).reset_index(level=0)
history[["command_id", "status", "attempt", "at"]].head(8)

# %% [markdown]
# Each attempt ends in `failed` or `succeeded`; we keep those rows and tell apart the
# failures of the service from the calls the open breaker refused.

# %%
ends = history[history["status"].isin(["failed", "succeeded"])].copy()
ends["outcome"] = ends["status"]
ends.loc[ends["error"].fillna("").str.startswith("ConnectionError"), "outcome"] = "service failed"
ends.loc[ends["error"].fillna("").str.startswith("CircuitOpenError"), "outcome"] = (
    "refused by breaker"
)
ends["outcome"].value_counts()

# %% [markdown]
# Each command is a row of markers, one per attempt; the band behind them shows when
# the breaker was closed, open and half-open.

# %%
colours = {
    "service failed": "tab:red",
    "refused by breaker": "tab:orange",
    "succeeded": "tab:green",
}
band = {"closed": "#e8f5e9", "open": "#ffebee", "half-open": "#fff8e1"}
changes = breaker.events()
state_of = {"CircuitOpened": "open", "CircuitHalfOpened": "half-open", "CircuitClosed": "closed"}
states = ["closed"] + [state_of[kind] for kind in changes["kind"]]
edges = [outage_start] + list(changes["at"]) + [history["at"].max() + timedelta(seconds=5)]

fig, ax = plt.subplots(figsize=(10, 3.5))
for (start, end), state in zip(zip(edges[:-1], edges[1:], strict=True), states, strict=True):
    ax.axvspan(start, end, color=band[state], label=f"breaker {state}")
for row, command_id in enumerate(outage):
    mine = ends[ends["command_id"] == command_id]
    for outcome, group in mine.groupby("outcome"):
        ax.scatter(group["at"], [row] * len(group), color=colours[outcome], label=outcome, zorder=3)
handles, labels = ax.get_legend_handles_labels()
unique = dict(zip(labels, handles, strict=True))
ax.legend(unique.values(), unique.keys(), loc="upper left", bbox_to_anchor=(1, 1))
ax.set_yticks(range(len(outage)), outage)
ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
ax.set_title("Payments during the outage, and the circuit breaker")
fig.tight_layout()

# %% [markdown]
# ## What you learned
#
# - A **command** asks for a change and may be refused; an **event** records one.
#   `el.Command`'s `command_id` is its idempotency key: submitting it twice is a no-op.
# - An `el.CommandExecutor` runs handlers `fn(command, ctx)` that return
#   `{stream_id: [events]}` (or an aggregate); the events carry the command's id as
#   `causation_id`. `el.CommandRejected` refuses a command for good.
# - An `el.CommandScheduler` queues commands (`submit`) and runs them in FIFO order
#   (`run`). The `el.CommandStore` keeps every status: `get`, `history`, `between`,
#   `by_status`, `counts`.
# - A `deadline` turns a late command into `expired`; a run longer than the `timeout`
#   is undone as `timed_out` and retried.
# - Failures are retried after the `backoff` (an `el.RetryPolicy`) until
#   `max_attempts`; then the command is `dead` until someone `requeue`s it.
# - An `el.CircuitBreaker` stops calls to a failing service (`el.CircuitOpenError`),
#   half-opens after the cool-down and closes after a successful trial; its
#   `events()` log is a timeline of its states.
#
# ## Try this
#
# 1. Submit `pay-o-1` again with a different amount. What does `submit` do, and why
#    is that what a shop wants?
# 2. Set `gateway.failures = 6` and submit a new payment. How many attempts does it
#    get, and how long does the scheduler wait in all?
# 3. Give the breaker `half_open_max_calls=2` and repeat section 6. How many
#    successful trials does it take to close?
# 4. Make the warehouse slow on every call (`warehouse["slow_seconds"] = 45` inside
#    the handler). Where does `ship-o-1` end up, and after how many attempts?
