"""Our side: the workload on ``eventlab.EventStore`` file stores.

Each append function opens a fresh store, builds its input before the clock
starts, times only the calls under test, and returns a :class:`Timing` that also
records how long ``close()`` took, so work a design defers to close stays
visible. The replay and time-travel functions reopen a store built beforehand
(untimed, by :func:`build_store`) and return what they rebuilt with the time, so
the caller can check it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

import eventlab as el
from benchmarks import workload


@dataclass(frozen=True)
class Timing:
    """Seconds spent in the timed calls, and in the ``close()`` that followed."""

    seconds: float
    close_seconds: float


def _events(order: workload.Order) -> list[el.Event]:
    return [el.Event(e["type"], e["data"]) for e in order.events()]


def _close(store: el.EventStore) -> float:
    start = time.perf_counter()
    store.close()
    return time.perf_counter() - start


def time_per_command(path: Path, orders: Sequence[workload.Order]) -> Timing:
    """One ``append(..., expected_version=0)`` call, hence one commit, per order."""
    work = [(o.order_id, _events(o)) for o in orders]
    store = el.EventStore(path)
    try:
        workload.settle()
        start = time.perf_counter()
        for stream_id, events in work:
            store.append(stream_id, events, expected_version=0)
        seconds = time.perf_counter() - start
    except BaseException:
        store.close()
        raise
    return Timing(seconds, _close(store))


def time_batched(path: Path, batches: Sequence[Sequence[workload.Order]]) -> Timing:
    """One ``store.transaction()`` block of one ``append`` per order, hence one commit,
    per batch of orders."""
    work = [[(o.order_id, _events(o)) for o in batch] for batch in batches]
    store = el.EventStore(path)
    try:
        workload.settle()
        start = time.perf_counter()
        for batch in work:
            with store.transaction():
                for stream_id, events in batch:
                    store.append(stream_id, events, expected_version=0)
        seconds = time.perf_counter() - start
    except BaseException:
        store.close()
        raise
    return Timing(seconds, _close(store))


def time_append_many(path: Path, batches: Sequence[Sequence[workload.Order]]) -> Timing:
    """One ``append_many`` call, hence one commit, per batch of orders: the call that
    matches the peer's ``save`` of many aggregates at once."""
    work = [{o.order_id: _events(o) for o in batch} for batch in batches]
    store = el.EventStore(path)
    try:
        workload.settle()
        start = time.perf_counter()
        for streams in work:
            store.append_many(streams, expected_versions=0)
        seconds = time.perf_counter() - start
    except BaseException:
        store.close()
        raise
    return Timing(seconds, _close(store))


def time_append_frame(path: Path, frame: pa.Table) -> Timing:
    """One ``append_frame`` call with the whole (pre-built) frame."""
    store = el.EventStore(path)
    try:
        start = time.perf_counter()
        store.append_frame(frame)
        seconds = time.perf_counter() - start
    except BaseException:
        store.close()
        raise
    return Timing(seconds, _close(store))


def time_read_all(path: Path, *, decode: bool = False) -> tuple[float, int]:
    """Seconds to iterate ``read_all()`` on the reopened store, and the events seen.

    With ``decode``, each event's ``data`` is also read (records may decode it
    lazily, so plain iteration alone would not show that cost). Opening the
    store is not timed.
    """
    with el.EventStore(path) as store:
        count = 0
        keys = 0
        start = time.perf_counter()
        if decode:
            for event in store.read_all():
                keys += len(event.data)
                count += 1
        else:
            for _ in store.read_all():
                count += 1
        return time.perf_counter() - start, count


def event_count(path: Path) -> int:
    """Events in the store file, counted with SQL on a freshly opened store."""
    with el.EventStore(path) as store:
        return int(store.sql("SELECT count(*) AS n FROM events")["n"].iloc[0])


# ---------------------------------------------------------------------- replay and time travel


class Order(el.Aggregate):
    """The workload's order as an aggregate: status, item SKUs, total and amount paid."""

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.status = "new"
        self.items: list[str] = []
        self.total = 0.0
        self.paid: float | None = None

    def apply_OrderPlaced(self, event: el.RecordedEvent) -> None:
        self.status = "placed"

    def apply_ItemAdded(self, event: el.RecordedEvent) -> None:
        data = event.data
        self.items.append(data["sku"])
        self.total += data["quantity"] * data["unit_price"]

    def apply_OrderPaid(self, event: el.RecordedEvent) -> None:
        self.status = "paid"
        self.paid = event.data["amount"]

    def apply_OrderShipped(self, event: el.RecordedEvent) -> None:
        self.status = "shipped"


ORDER_INITIAL: dict[str, Any] = {"status": "new", "items": 0, "total": 0.0}


def order_state(state: dict[str, Any], event: el.RecordedEvent) -> dict[str, Any]:
    """The same order as a function reducer over plain dicts (a new dict per event)."""
    kind = event.type
    if kind == "ItemAdded":
        data = event.data
        total = state["total"] + data["quantity"] * data["unit_price"]
        return {**state, "items": state["items"] + 1, "total": total}
    if kind == "OrderPlaced":
        return {**state, "status": "placed"}
    if kind == "OrderPaid":
        return {**state, "status": "paid"}
    if kind == "OrderShipped":
        return {**state, "status": "shipped"}
    raise ValueError(f"order_state has no case for {kind} events")


# The same reducer with snapshots on. A snapshot every three events puts half of each
# order behind one; a usual interval such as 100 would never snapshot a six-event order.
SNAPSHOT_EVERY = 3
order_state_snapshots = el.Snapshots(order_state, every=SNAPSHOT_EVERY)


def take_snapshots(path: Path) -> tuple[float, int]:
    """Untimed set-up: ``rebuild_snapshots`` of :data:`order_state_snapshots`; (seconds, count)."""
    start = time.perf_counter()
    with el.EventStore(path) as store:
        count = store.rebuild_snapshots(order_state_snapshots, initial=ORDER_INITIAL)
    return time.perf_counter() - start, count


def build_store(path: Path, frames: Iterable[pa.Table]) -> tuple[float, int]:
    """Untimed set-up: ``append_frame`` each table into a new store; (seconds, events)."""
    start = time.perf_counter()
    count = 0
    with el.EventStore(path) as store:
        for frame in frames:
            count += store.append_frame(frame)
    return time.perf_counter() - start, count


def time_replay_all(path: Path) -> tuple[float, dict[str, Order]]:
    """Seconds for ``el.replay_all(store, Order)`` on the reopened store, and its result."""
    with el.EventStore(path) as store:
        start = time.perf_counter()
        orders = el.replay_all(store, Order)
        return time.perf_counter() - start, orders


def time_load_each(path: Path, stream_ids: Sequence[str]) -> tuple[float, list[Order]]:
    """Seconds for one ``Order.load(store, id)`` per id on the reopened store, and the orders."""
    with el.EventStore(path) as store:
        start = time.perf_counter()
        orders = [Order.load(store, stream_id) for stream_id in stream_ids]
        return time.perf_counter() - start, orders


def median_occurred_at(path: Path) -> datetime:
    """The median business time of the store's events (``quantile_disc``, so one of them)."""
    with el.EventStore(path) as store:
        frame = store.sql("SELECT quantile_disc(epoch_us(occurred_at), 0.5) AS t FROM events")
    return workload.from_micros(int(frame["t"].iloc[0]))


def time_state_at_all(path: Path, at: datetime) -> tuple[float, dict[str, Any]]:
    """Seconds for every stream's ``order_state`` as of business time ``at``, and the states."""
    with el.EventStore(path) as store:
        start = time.perf_counter()
        states = el.replay_all(store, order_state, initial=ORDER_INITIAL, at=at)
        return time.perf_counter() - start, states


def time_state_at(
    path: Path,
    queries: Sequence[tuple[str, datetime]],
    warmup: Sequence[tuple[str, datetime]] = (),
) -> tuple[list[float], list[dict[str, Any]]]:
    """Seconds of each ``store.state_at(stream_id, order_state_snapshots, at=...)`` call,
    and the states (snapshots on: see :func:`take_snapshots`).

    The ``warmup`` queries run untimed first, so the latencies are those of a
    store already open and in use.
    """
    reducer = order_state_snapshots
    with el.EventStore(path) as store:
        for stream_id, at in warmup:
            store.state_at(stream_id, reducer, at=at, initial=ORDER_INITIAL)
        latencies = []
        states = []
        for stream_id, at in queries:
            start = time.perf_counter()
            state = store.state_at(stream_id, reducer, at=at, initial=ORDER_INITIAL)
            latencies.append(time.perf_counter() - start)
            states.append(state)
        return latencies, states
