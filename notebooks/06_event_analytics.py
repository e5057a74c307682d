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
# # 06 · Event analytics: a shop and a bank, side by side
#
# An event log is a dataset. Every question a manager asks ("how busy were we?",
# "how long does an order take?", "where do customers drop out?") is a query over
# it. `el.analytics` answers such questions in DuckDB SQL and hands back pandas
# DataFrames, `el.plots` draws them, and `el.widgets` let you explore by hand.
#
# We look at two histories with the same tools:
#
# - **the shop**: a few hundred orders simulated through the real command side of
#   lessons 03 to 05 (`el.shop.simulate`), about three thousand events. We made it,
#   so we know every cause and effect.
# - **BPI Challenge 2012**: 262,200 real events of 13,087 loan and overdraft
#   applications at a Dutch bank, published for the process-mining community as an
#   XES file. Nobody designed it for a lesson.
#
# You will:
#
# 1. load both: simulate the shop, import the XES log,
# 2. compare their size and **rates** over time,
# 3. measure **durations** of orders and applications,
# 4. count **variants**: the distinct paths cases take,
# 5. draw a **process map** from the directly-follows counts,
# 6. build a **funnel**,
# 7. **trace** one order from its first command to its shipment,
# 8. summarise commands and sagas,
# 9. explore with the **widgets**.
#
# Run the cells from top to bottom (Shift+Enter). The whole notebook takes about
# twenty seconds.

# %%
import os
from datetime import timedelta
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

import eventlab as el

# %% [markdown]
# ## 1. Two histories
#
# The shop runs on a `SimulatedClock`: `simulate` moves it through three days of
# orders, payments and shipments in well under a second. A clock `step` of 0 keeps
# knowledge time (`recorded_at`) equal to business time (`occurred_at`).

# %%
shop = el.EventStore(clock=el.SimulatedClock("2024-03-04", step=timedelta(0)))
simulated = el.shop.simulate(shop, orders=300, seed=1)
print("\n".join(el.shop.summary_lines(simulated)))

# %% [markdown]
# The BPI Challenge 2012 log ships with eventlab's tests (in `tests/data/real-logs`,
# or wherever the environment variable `EVENTLAB_REAL_LOGS` points). In XES, a
# *trace* is one case (here one application) and becomes a stream; each event's
# activity becomes its type and its timestamp its `occurred_at`. The whole file
# goes in with one call, in a few seconds.

# %%
# Run from notebooks/ (Jupyter) or from the project root (the test suite).
root = Path.cwd() if Path("tests/data/real-logs").is_dir() else Path.cwd().parent
logs = Path(os.environ.get("EVENTLAB_REAL_LOGS", root / "tests/data/real-logs"))
bank = el.EventStore()
bank.import_xes(logs / "bpic2012.xes.gz")

# %% [markdown]
# Everything else an XES event carries lands in `data` (who did it, and the
# lifecycle transition), and the case's attributes (the amount requested) in
# `metadata`.

# %%
bank.events("173688")[["version", "type", "occurred_at", "data", "metadata"]].head()

# %% [markdown]
# ## 2. Size and rates
#
# `el.analytics.summary` gives the size and time span of a history in one row.
# Every analysis takes the same filters: `types`, `streams` (ids, or a prefix
# ending in `*`), `start`, `end`, and `time` (which clock to use).

# %%
pd.concat({"shop": el.analytics.summary(shop), "bank": el.analytics.summary(bank)}).droplevel(1)

# %% [markdown]
# `event_rate` counts events per time bucket, optionally per type. A plot shows the
# rhythm better than a table: orders arrive all day and hardly at night, while the
# warehouse ships at its two daily pick-ups (the spikes). The bank's volume grows
# through October and stays high until March, with a dip at Christmas; the log
# ends in mid-March, so its last weeks hold only what was still open.

# %%
fig, (left, right) = plt.subplots(2, 1, figsize=(10, 6), layout="constrained")
shown = ["OrderPlaced", "OrderShipped", "OrderCancelled"]
el.plots.event_rate(shop, "1h", by="type", ax=left, types=shown)
el.plots.event_rate(bank, "7D", ax=right)
for ax, title in [(left, "shop: order events per hour"), (right, "bank: events per week")]:
    ax.set_title(title)

# %% [markdown]
# The frame behind a plot is one call away, ready for pandas:

# %%
el.analytics.event_rate(bank, "1 month", by="type").pivot(
    index="time", columns="type", values="events"
).iloc[:, :6]

# %% [markdown]
# ## 3. Durations
#
# `stream_durations` measures each stream from its first to its last event, or
# from one type to another. For the shop: from placing an order to its shipment.
# Orders that were never shipped are left out.

# %%
order_times = el.analytics.stream_durations(shop, "OrderPlaced", "OrderShipped", streams="order-*")
order_times.head()

# %% [markdown]
# Side by side as histograms with percentile lines. The warehouse picks parcels up
# at 11:00 and 16:00, so the shop's orders wait either a few hours or overnight:
# two humps. The bank's applications take from a second (declined on the spot) to
# months, so its axis is logarithmic.

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5), layout="constrained")
el.plots.durations(order_times, unit="h", ax=left)
el.plots.durations(bank, log=True, unit="d", ax=right)
for ax, title in [(left, "shop: placed to shipped"), (right, "bank: first to last event")]:
    ax.set_title(f"{title}, {ax.get_title()}")

# %% [markdown]
# ## 4. Variants
#
# A **variant** is the sequence of types one stream went through. The shop's
# orders differ mostly in how many items were added, so leave `ItemAdded` out to
# see the business paths.

# %%
order_types = ["OrderPlaced", "OrderSubmitted", "OrderPaid", "OrderShipped", "OrderCancelled"]
el.analytics.variants(shop, types=order_types, streams="order-*")

# %% [markdown]
# The bank's log mixes three kinds of events: `A_` (the application's states),
# `O_` (offers) and `W_` (work items, with a `SCHEDULE`, `START` and `COMPLETE`
# event each). On the application states alone, a handful of variants cover most
# cases.

# %%
types = bank.sql("SELECT DISTINCT type FROM events ORDER BY type")["type"]
application = [t for t in types if t.startswith("A_")]
bank_variants = el.analytics.variants(bank, types=application)
bank_variants.head(6)

# %% [markdown]
# With every event type, nearly every application is unique: the curve of how
# many cases the most frequent variants cover tells the two logs apart at a glance.

# %%
fig, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
for name, frame in {
    "shop orders": el.analytics.variants(shop, streams="order-*"),
    "bank, A_ types": bank_variants,
    "bank, all types": el.analytics.variants(bank),
}.items():
    ax.step(range(1, len(frame) + 1), frame["share"].cumsum(), where="post", label=name)
ax.set(xlabel="most frequent variants", ylabel="share of cases covered")
ax.legend(loc="lower right")
ax.set_xscale("log")

# %% [markdown]
# ## 5. Process maps
#
# `directly_follows` counts how often one type comes right after another in a
# stream, with the mean and median time between them: the raw material of a
# process map.

# %%
el.analytics.directly_follows(shop, streams="order-*")

# %% [markdown]
# `el.plots.process_map` lays those counts out as boxes and arrows: arrows get
# wider with their count, and loops (another item added) curl back.

# %%
ax = el.plots.process_map(shop, streams="order-*")

# %% [markdown]
# The bank's application states. Filters apply before the pairs are formed, so
# "directly follows" means next among the events kept. An approved application is
# also registered and activated in the same millisecond, in any order; keeping
# only `A_APPROVED` of the three, and leaving out the rarest transitions
# (`min_count`), makes the map readable.

# %%
states = [t for t in application if t not in ("A_REGISTERED", "A_ACTIVATED")]
ax = el.plots.process_map(bank, types=states, min_count=50)

# %% [markdown]
# ## 6. Funnels
#
# A funnel counts the streams that reached each step, in order (other events may
# come in between), and the share kept from one step to the next.

# %%
shop_funnel = el.analytics.funnel(
    shop, ["OrderPlaced", "OrderSubmitted", "OrderPaid", "OrderShipped"], streams="order-*"
)
bank_funnel = el.analytics.funnel(
    bank, ["A_SUBMITTED", "A_PREACCEPTED", "A_ACCEPTED", "A_FINALIZED", "A_APPROVED"]
)
bank_funnel

# %% [markdown]
# Drawn as bars, the difference jumps out: the shop loses few orders, the bank
# declines or loses most applications before approval.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3), layout="constrained")
for ax, (name, frame) in zip(axes, {"shop": shop_funnel, "bank": bank_funnel}.items(), strict=True):
    ax.barh(frame["step"], frame["share_of_first"], color="#3182bd")
    ax.invert_yaxis()
    ax.set(title=name, xlabel="share of the first step", xlim=(0, 1))
    for y, share in enumerate(frame["share_of_first"]):
        ax.text(share + 0.01, y, f"{share:.0%}", va="center")

# %% [markdown]
# ## 7. One order, from command to shipment
#
# Only the shop can do this: every command and event it wrote carries the order's
# stream id as its `correlation_id`, and the id of what caused it as its
# `causation_id` (events) or in its context (commands the services submitted in
# reaction to an event). Let us follow an order whose payment needed a retry.

# %%
retried = shop.sql(
    "SELECT correlation_id FROM commands WHERE type = 'ChargePayment' AND attempts > 1 "
    "AND status = 'succeeded' ORDER BY seq LIMIT 1"
)
order = retried["correlation_id"][0]
order

# %% [markdown]
# `el.analytics.trace` returns the causal tree, each row after its parent: the
# customer's commands are the roots, and each reaction hangs under the event that
# triggered it.

# %%
tree = el.analytics.trace(shop, order)
tree[["kind", "type", "stream_id", "depth", "time"]]

# %% [markdown]
# Indented by depth, it reads like a story:

# %%
for row in tree.itertuples():
    where = f"  on {row.stream_id}" if isinstance(row.stream_id, str) else ""
    print(f"{row.time:%a %H:%M:%S}  {'  ' * row.depth}{row.kind} {row.type}{where}")

# %% [markdown]
# The charge took a second longer than the rest. The command store says why: its
# first attempt failed at the payment gateway and the scheduler tried again.

# %%
shop.sql(
    "SELECT command_id, status, attempts, submitted_at, finished_at FROM commands "
    "WHERE correlation_id = $1 ORDER BY seq",
    [order],
)

# %% [markdown]
# The same events on a timeline, one lane per stream. `event_timeline` takes a
# store, a Parquet path or a frame shaped like `store.events()`.

# %%
order_events = shop.sql("SELECT * FROM events WHERE correlation_id = $1", [order])
ax = el.plots.event_timeline(order_events, lanes="stream")

# %% [markdown]
# ## 8. Commands and sagas
#
# `command_stats` summarises the command store by type: how many, how each ended,
# how many needed a retry, and how long they took to run and to finish from
# submission (latency).

# %%
el.analytics.command_stats(shop)[
    ["type", "commands", "succeeded", "rejected", "retried", "p50_latency", "p95_latency"]
]

# %% [markdown]
# The simulated shop runs no sagas. Lesson 05's checkout saga on a second store,
# with a flaky payment gateway, gives `saga_stats` something to count.

# %%
checkout = el.shop.Checkout(
    el.EventStore(clock=el.SimulatedClock("2024-03-06T09:00", step=timedelta(milliseconds=10))),
    payments=el.shop.Faults("payments", failure_rate=0.3, seed=2),
    decline_rate=0.1,
    seed=3,
)
checkout.stock({"MUG-001": 100, "BAG-020": 100})
for n in range(40):
    checkout.start(f"{n:06d}", [["MUG-001", 1], ["BAG-020", 1]])
checkout.run()
el.analytics.saga_stats(checkout.store)

# %% [markdown]
# ## 9. Exploring by hand
#
# The widgets need a live kernel: drag the sliders, click the buttons. (Each is a
# thin view over a function that returns plain data, as the plots are.)
#
# `event_browser` pages through a log with filters: try the stream `order-0000*`,
# or the types `PaymentCharged` and `PaymentRefunded`.

# %%
el.widgets.event_browser(shop)

# %% [markdown]
# `time_travel` shows the traced order's state at any version, business time or
# knowledge time, and what changed at each stop. Any reducer works; here the shop's
# own `Order` aggregate.

# %%
el.widgets.time_travel(shop, order, el.shop.Order)

# %% [markdown]
# `projection_debugger` applies the same events one at a time, with the state
# before and after each.

# %%
el.widgets.projection_debugger(shop, el.shop.Order, order)

# %% [markdown]
# A state over time is often best as a plot: the stock of the busiest product,
# falling with each reservation and jumping back at each morning's restock.

# %%
products = el.analytics.event_rate(shop, "1D", by="stream_id", streams="product-*")
busiest = products.groupby("stream_id")["events"].sum().idxmax()
ax = el.plots.state_evolution(shop, busiest, el.shop.Product, "stock", axis="at")

# %% [markdown]
# Last, a saga step by step beside its Gantt chart: pick one that had to
# compensate.

# %%
status = checkout.status()
aborted = status.loc[status["state"] == "aborted", "transaction_id"].iloc[0]
el.widgets.saga_stepper(checkout.store, aborted)

# %% [markdown]
# ## What you learned
#
# - `el.analytics` answers questions about any event history in DuckDB SQL and
#   returns DataFrames: `summary`, `event_rate`, `stream_durations`, `variants`,
#   `directly_follows`, `funnel`, `trace`, `command_stats` and `saga_stats`. They
#   take a store or Parquet files and the same filters.
# - `store.import_xes` (and `import_csv`) bring real process-mining logs in: a case
#   becomes a stream, an activity an event type.
# - `el.plots` draws the same frames (or computes them from a store): rates,
#   duration histograms, process maps, timelines, states over time.
# - Correlation and causation ids turn a log into causal trees: one order's story,
#   from the customer's command to the parcel, across four streams.
# - The widgets (`event_browser`, `time_travel`, `projection_debugger`,
#   `saga_stepper`) are for looking around by hand.
#
# ## Try this
#
# 1. Which shop orders took longest from payment to shipment? (`stream_durations`
#    with `"OrderPaid"` and `"OrderShipped"`, then `sort_values`.)
# 2. Draw the bank's process map of offers (`O_` types). Where do offers loop?
# 3. Export the bank's log to Parquet (`bank.export_parquet(folder)`) and hand the
#    folder to the analyses instead of the store. Same answers?
# 4. Trace an order that was cancelled after payment. Which commands did the
#    cancellation cause?
