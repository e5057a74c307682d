"""Our side: the workload on ``eventlab.EventStore`` file stores.

Each function opens a fresh store, builds its input before the clock starts,
times only the calls under test, and returns a :class:`Timing` that also records
how long ``close()`` took, so work a design defers to close stays visible.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

import eventlab as el
from benchmarks.workload import Order


@dataclass(frozen=True)
class Timing:
    """Seconds spent in the timed calls, and in the ``close()`` that followed."""

    seconds: float
    close_seconds: float


def _events(order: Order) -> list[el.Event]:
    return [el.Event(e["type"], e["data"]) for e in order.events()]


def _close(store: el.EventStore) -> float:
    start = time.perf_counter()
    store.close()
    return time.perf_counter() - start


def time_per_command(path: Path, orders: Sequence[Order]) -> Timing:
    """One ``append(..., expected_version=0)`` call, hence one commit, per order."""
    work = [(o.order_id, _events(o)) for o in orders]
    store = el.EventStore(path)
    try:
        start = time.perf_counter()
        for stream_id, events in work:
            store.append(stream_id, events, expected_version=0)
        seconds = time.perf_counter() - start
    except BaseException:
        store.close()
        raise
    return Timing(seconds, _close(store))


def time_batched(path: Path, batches: Sequence[Sequence[Order]]) -> Timing:
    """One ``store.transaction()`` block, hence one commit, per batch of orders."""
    work = [[(o.order_id, _events(o)) for o in batch] for batch in batches]
    store = el.EventStore(path)
    try:
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
