"""The shop simulation timed end to end: ``el.shop.simulate`` on a store with a simulated clock.

One run creates the store, simulates ``orders`` orders (every one through the
scheduler, the executor, the services' handlers and their reactions, with
failures injected) and closes the store. On a file store every commit is
durable (a journal sync); the same run in memory shows what that costs. No
peer: the ``eventsourcing`` library has no scheduler or simulation to compare.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import eventlab as el
from benchmarks.checks import BenchmarkError

SEED = 7
START = "2024-03-04T00:00:00"


def time_simulate(path: Path | None, orders: int) -> tuple[float, dict[str, Any]]:
    """Seconds from opening the store to closing it, and the simulation's summary."""
    start = time.perf_counter()
    # As `eventlab generate` does: a simulated history needs no flush per commit.
    store = el.EventStore(path, clock=el.SimulatedClock(START, step=timedelta(0)), sync=False)
    try:
        summary = el.shop.simulate(store, orders=orders, seed=SEED)
        check_history(store, summary, orders)
    finally:
        store.close()
    return time.perf_counter() - start - summary["checked_s"], summary


def check_history(store: el.EventStore, summary: dict[str, Any], orders: int) -> None:
    """Every order placed and in a final state, no command left unfinished (untimed)."""
    began = time.perf_counter()
    placed = store.sql("SELECT count(*) AS n FROM events WHERE type = 'OrderPlaced'")["n"][0]
    if placed != orders or summary["orders"] != orders:
        raise BenchmarkError(f"simulate: {placed:,} orders placed, expected {orders:,}")
    states = summary["order_states"]
    if sum(states.values()) != orders or not set(states) <= {"shipped", "cancelled", "submitted"}:
        raise BenchmarkError(f"simulate: orders ended in unexpected states {states}")
    unfinished = set(summary["commands"]) & {"queued", "running"}
    if unfinished:
        raise BenchmarkError(f"simulate: commands left {unfinished}: {summary['commands']}")
    if states.get("shipped", 0) < orders * 0.8:
        raise BenchmarkError(f"simulate: too few orders shipped: {states}")
    summary["checked_s"] = time.perf_counter() - began
