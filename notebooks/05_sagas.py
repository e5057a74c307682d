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
# # 05 · Sagas: long transactions made of short ones
#
# A checkout touches three services: the **inventory** reserves the stock, **billing**
# charges the card, **shipping** creates the parcel. Each has its own events and its
# own local transaction; nothing spans all three. A **saga** runs them one after the
# other and, when a step fails for good, undoes the steps that finished, in reverse
# order: refund the payment, release the stock. You will:
#
# 1. define the checkout saga and run one that succeeds,
# 2. make it fail at each step in turn and watch the compensations,
# 3. retry through a flaky payment gateway on the saga's own policy,
# 4. see a compensation get stuck and an operator unstick it,
# 5. kill a process running sagas and resume them in another,
# 6. run the same checkout as a **choreography** (no coordinator) and compare,
# 7. draw a few hundred sagas with failures injected as a Gantt chart.
#
# Run the cells from top to bottom (Shift+Enter).

# %%
import os
import signal
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import matplotlib.pyplot as plt

import eventlab as el
from eventlab.shop import Checkout, ChoreographedCheckout, Faults, check_checkout

# %% [markdown]
# ## 1. The checkout saga
#
# A saga is a list of `el.Step`s. Each step has an **action** and (except the last)
# a **compensation**: commands sent to a participant service. Here they are
# functions of the saga's data that return a `(command type, payload)` pair. Each
# step also has a `retry` policy for failures and a `timeout`.

# %%
saga = el.shop.checkout_saga()
for step in saga.steps:
    print(f"{step.name:8} {step!r:55} retry: {step.retry.max_attempts} attempts")

# %% [markdown]
# `el.shop.Checkout` wires the shop's three services, a command scheduler and an
# `el.SagaCoordinator` on one store. The clock is simulated and moves 10 ms per
# event, so timelines are readable.

# %%
clock = el.SimulatedClock("2024-03-04T09:00", step=timedelta(milliseconds=10))
store = el.EventStore(clock=clock)
shop = Checkout(store)
shop.stock({"MUG-001": 5, "BAG-020": 3, "BOK-030": 2})

# %% [markdown]
# `start` gives the saga a **transaction id** (here the order id) and records
# `SagaStarted` with the first step's request; `run` advances every open saga until
# nothing is left to do.

# %%
shop.start("000001", [["MUG-001", 2], ["BAG-020", 1]])
shop.run()

# %% [markdown]
# The coordinator keeps no state but the saga's own stream, `saga-<transaction id>`.
# Each request and each answer is an event, and every event carries the transaction
# id as its `correlation_id`.

# %%
events = store.events("saga-000001")
events["step"] = events["data"].map(lambda d: d.get("step"))
events["attempt"] = events["data"].map(lambda d: d.get("attempt"))
events[["version", "type", "step", "attempt", "correlation_id", "causation_id"]]

# %% [markdown]
# Each step was a command, with an id made of the transaction, the step, the kind
# (action or compensation) and the attempt. The events it caused carry it as their
# `causation_id`, and the transaction id as their `correlation_id`.

# %%
store.events(types=["StockReserved", "PaymentCharged", "ShipmentCreated"])[
    ["stream_id", "type", "correlation_id", "causation_id"]
]

# %% [markdown]
# `el.saga_timeline` turns the stream into one row per step attempt, and
# `el.plots.saga_gantt` draws it.

# %%
timeline = el.saga_timeline(store, "000001")
timeline

# %%
ax = el.plots.saga_gantt(timeline)
# %% [markdown]
# ## 2. Failing at each step in turn
#
# Three more orders, each failing somewhere else:
#
# - `000002` wants more books than there are: the inventory **declines** the
#   reservation. Nothing finished, so nothing is undone.
# - `000003` is paid with a card the bank declines (`decline_rate=1.0` on a second
#   shop): the stock is released.
# - `000004` meets a warehouse outage that outlasts every retry: the payment is
#   refunded, then the stock released.

# %%
shop.start("000002", [["BOK-030", 3]])
shop.run()
el.saga_timeline(store, "000002")[["step", "kind", "attempt", "outcome"]]

# %%
declining = Checkout(el.EventStore(clock=clock), decline_rate=1.0)
declining.stock({"MUG-001": 5})
declining.start("000003", [["MUG-001", 1]])
declining.run()
el.saga_timeline(declining.store, "000003")[["step", "kind", "attempt", "outcome"]]

# %% [markdown]
# A declined step is **not retried**: asking again would get the same answer. The
# `StepFailed` event says so with `declined: True`.

# %%
[e.data for e in declining.store.read_stream("saga-000003") if e.type == "StepFailed"]

# %% [markdown]
# The warehouse is down for an hour. Shipping is retried on the step's policy
# (2 s, 4 s, 8 s apart), then the finished steps are compensated in reverse order.

# %%
down = Faults("warehouse", outages=[(clock.current, clock.current + timedelta(hours=1))])
outage = Checkout(el.EventStore(clock=clock), warehouse=down)
outage.stock({"MUG-001": 5})
outage.start("000004", [["MUG-001", 2]])
outage.run()
outage_timeline = el.saga_timeline(outage.store, "000004")
outage_timeline[["step", "kind", "attempt", "started", "outcome"]]

# %% [markdown]
# In the chart, failed attempts that were retried are orange, the final failure red,
# and the compensations blue, in reverse order of the steps they undo.

# %%
ax = el.plots.saga_gantt(outage_timeline)
# %% [markdown]
# The coordinator's `status()` lists every saga with its state, its current step and
# its age: the first place to look.

# %%
shop.status()[["transaction_id", "state", "step", "kind", "attempt", "error", "age"]]

# %% [markdown]
# After every run the shop's invariants hold: stock is conserved, no order is
# charged without a shipment or a refund, and every saga ended.

# %%
check_checkout(store), check_checkout(outage.store)

# %% [markdown]
# ## 3. Retrying through a flaky participant
#
# The payment gateway now fails half of its calls. Each attempt is its own command
# (`<order>:charge:action:<n>`), run once by the scheduler; the saga's retry policy
# decides when the next one follows, on the simulated clock.

# %%
gateway = Faults("payments", failure_rate=0.5, seed=4)
flaky = Checkout(
    el.EventStore(clock=clock),
    payments=gateway,
    retry=el.RetryPolicy.exponential(1, max_attempts=6),
)
flaky.stock({"MUG-001": 20})
for n in range(5, 10):
    flaky.start(f"{n:06d}", [["MUG-001", 1]])
flaky.run()
flaky_timeline = el.saga_timeline(flaky.store)
flaky_timeline[flaky_timeline["step"] == "charge"].pivot_table(
    index="transaction_id", columns="outcome", values="attempt", aggfunc="count", fill_value=0
)

# %%
ax = el.plots.saga_gantt(flaky_timeline)
# %% [markdown]
# The gateway's own count of failed calls matches the saga's `StepRetried` events:

# %%
gateway.stats, (flaky.store.events(types="StepRetried")["type"].count())

# %% [markdown]
# ## 4. A stuck compensation
#
# What if undoing fails too? Compensations are retried (six attempts here); one that
# keeps failing **parks the saga as stuck** for an operator instead of guessing.
# Below, the warehouse is always down and the inventory goes down a few seconds
# after the reservation, for an hour.

# %%
now = clock.current
stuck = Checkout(
    el.EventStore(clock=clock),
    warehouse=Faults("warehouse", failure_rate=1.0),
    inventory=Faults("inventory", outages=[(now + timedelta(seconds=5), now + timedelta(hours=1))]),
)
stuck.stock({"MUG-001": 5})
stuck.start("000010", [["MUG-001", 2]])
stuck.run()
stuck.status()[["transaction_id", "state", "step", "kind", "attempt", "error"]]

# %% [markdown]
# The operator waits out the outage and retries the saga; the release goes through.

# %%
clock.advance(timedelta(hours=1))
stuck.coordinator.retry("000010")
stuck.run()
stuck.status()[["transaction_id", "state", "last_event"]]

# %% [markdown]
# ## 5. Resuming after a crash
#
# A separate Python process starts 40 checkouts on a store file and runs them, with
# failures injected everywhere. We kill it (`SIGKILL`: no clean-up at all) after it
# has announced a dozen saga decisions.

# %%
folder = Path(tempfile.mkdtemp())
path = folder / "checkout.duckdb"
CHILD = """
import sys
import eventlab as el
from datetime import timedelta

store = el.EventStore(sys.argv[1], clock=el.SimulatedClock("2024-03-05T09:00"))
faults = lambda name: el.shop.Faults(name, failure_rate=0.2, seed=1)
shop = el.shop.Checkout(store, inventory=faults("inventory"), payments=faults("payments"),
                        warehouse=faults("warehouse"), batch_size=4)
shop.stock({"MUG-001": 30, "BAG-020": 30})
for n in range(40):
    shop.start(f"{n:06d}", [["MUG-001", 1], ["BAG-020", 1]])
store.bus.subscribe(lambda e: print(e.type, flush=True), streams="saga-", name="say")
shop.run()
print("idle", flush=True)
"""
child = subprocess.Popen(
    [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True
)
said = [child.stdout.readline().strip() for _ in range(60)]
os.kill(child.pid, signal.SIGKILL)
child.wait(), said[-3:]

# %% [markdown]
# Opened again, the store shows where each saga was when the process died.

# %%
crashed = el.EventStore(path, clock=el.SimulatedClock("2024-03-05T10:00"))
el.saga_status(crashed)["state"].value_counts()

# %% [markdown]
# A new coordinator folds every open saga's stream: it knows which command each
# was waiting for. Commands that ran before the crash are not run again (their ids
# are taken, and their outcome is in the command store); retries that were due are
# still due.

# %%
resumed = Checkout(crashed)
resumed.coordinator

# %%
resumed.run()
el.saga_status(crashed)["state"].value_counts()

# %% [markdown]
# Every saga ended, the invariants hold, and no step's command succeeded twice.

# %%
check_checkout(crashed)

# %%
crashed.close()

# %% [markdown]
# ## 6. Orchestration versus choreography
#
# In a **choreography** there is no coordinator: each service reacts to the others'
# events. The inventory reserves when a `CheckoutRequested` arrives, billing
# charges when `StockReserved` arrives, shipping ships on `PaymentCharged`. A
# service that gives up announces it (`PaymentFailed`, `ShipmentFailed`) so that the
# others can undo their part.


# %%
def orders(shop):
    shop.stock({"MUG-001": 4, "BAG-020": 2})
    shop.start("000020", [["MUG-001", 1]])
    shop.start("000021", [["BAG-020", 3]])  # out of stock
    shop.start("000022", [["MUG-001", 2]])
    shop.run()
    return shop


def fresh():
    """A new store and the same flaky warehouse, for each of the two set-ups."""
    clock = el.SimulatedClock("2024-03-05T12:00", step=timedelta(milliseconds=10))
    return {
        "store": el.EventStore(clock=clock),
        "warehouse": Faults("warehouse", failure_rate=0.5, seed=2),
    }


orchestrated = orders(Checkout(**fresh()))
choreographed = orders(ChoreographedCheckout(**fresh()))
check_checkout(orchestrated.store), check_checkout(choreographed.store)

# %% [markdown]
# Both reach consistent ends. But where is the state of order `000022`? With a
# coordinator it is one stream you can read, plot and query with `status()`. In
# the choreography it is spread over the services' streams, held together only by
# the correlation id:

# %%
chain = choreographed.store.events()
chain[chain["correlation_id"] == "000022"][["stream_id", "type", "causation_id"]]

# %% [markdown]
# Swimlanes per service show the difference: the orchestrated history has a `saga`
# lane through which every step passes; the choreography's services talk directly.

# %%
fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=False)
el.plots.event_timeline(orchestrated.store, lanes="service", ax=axes[0], legend=False)
el.plots.event_timeline(choreographed.store, lanes="service", ax=axes[1], legend=False)
axes[0].set_title("orchestration: a coordinator's saga stream")
axes[1].set_title("choreography: services reacting to each other")
fig.tight_layout()

# %% [markdown]
# | | orchestration | choreography |
# |---|---|---|
# | where the state is | one saga stream | spread over the services |
# | who decides | the coordinator | each service, locally |
# | retries and timeouts | the saga's policy per step | each service's scheduler |
# | a failed step | the coordinator compensates | the service must announce it |
# | adding a step | change one definition | change who listens to what |

# %% [markdown]
# ## 7. A few hundred sagas
#
# 300 checkouts arrive two seconds apart. Every participant fails 10% of its calls
# and now and then hangs past the timeout (the attempt is undone and retried), and
# the bank declines 3% of cards. After each arrival, `run(until_idle=False)` does
# what is due without waiting for the future; the last `run()` waits out the
# remaining retries.


# %%
def noisy(name, seed):
    return Faults(name, failure_rate=0.1, slow_rate=0.005, slow_latency=45, seed=seed)


busy = Checkout(
    el.EventStore(clock=el.SimulatedClock("2024-03-06T09:00", step=timedelta(milliseconds=5))),
    inventory=noisy("inventory", 1),
    payments=noisy("payments", 2),
    warehouse=noisy("warehouse", 3),
    decline_rate=0.03,
    seed=5,
)
skus = ["MUG-001", "MUG-002", "TEE-010", "BAG-020", "BOK-030", "STK-040"]
busy.stock({sku: 250 for sku in skus})
for n in range(300):
    busy.store.clock.advance(timedelta(seconds=2))
    busy.start(f"{n:06d}", [[skus[n % 6], 1 + n % 3], [skus[(n + 2) % 6], 1]])
    busy.run(until_idle=False)
busy.run()
status = busy.status()
status["state"].value_counts()

# %% [markdown]
# One row per saga, one bar per step attempt: most sagas are a short green streak;
# retries are orange, final failures red, compensations blue (brown when a
# compensation attempt failed and was retried).

# %%
fig, ax = plt.subplots(figsize=(11, 8))
el.plots.saga_gantt(el.saga_timeline(busy.store), ax=ax)
ax.set_yticks([])
ax.set_ylabel("300 sagas, in order of arrival")
fig.tight_layout()
# %% [markdown]
# How long the sagas took, by how they ended:

# %%
status.assign(seconds=status["age"].dt.total_seconds()).groupby("state")["seconds"].describe()

# %%
check_checkout(busy.store)

# %% [markdown]
# ## What you learned
#
# - A **saga** (`el.Saga` of `el.Step`s) runs local transactions in order; each
#   step's **compensation** undoes it if a later step fails for good, in reverse order.
# - The `el.SagaCoordinator` gives each saga a **transaction id** and keeps its state
#   as events in `saga-<transaction id>`; every event and command carries the id.
# - Each attempt is its own command (`<tx>:<step>:<kind>:<attempt>`), run once: the
#   step's `RetryPolicy` decides about the next one. A **declined** step (a rejected
#   command) is not retried.
# - A compensation that keeps failing parks the saga as **stuck**; `status()` lists
#   it and `coordinator.retry()` tries again.
# - After a crash, a new coordinator **resumes** every open saga from its stream and
#   the command store: no step runs twice, none is forgotten.
# - A **choreography** does without a coordinator, at the price of state spread over
#   the services and failures that must be announced.
#
# ## Try this
#
# 1. Give the charge step a `timeout=` shorter than the gateway's latency
#    (`Faults("payments", latency=5)`). What does the timeline show?
# 2. Add a fourth step, `notify`, after shipping. Which steps are compensated when
#    it fails?
# 3. Kill the child process in section 5 earlier or later. Does the resumed run ever
#    run a step twice? (Look at `check_checkout`.)
# 4. In the choreography, drop the `on_failure` announcement of `CreateShipment`.
#    What happens to an order whose shipment fails?
