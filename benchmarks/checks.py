"""Checks on what a benchmark produced, so a broken store or replay cannot post a figure.

Each raises :class:`BenchmarkError` naming what was wrong; none of them is timed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.workload import EVENTS_PER_ORDER


class BenchmarkError(RuntimeError):
    """A benchmark saw a wrong result (so its figure would be meaningless)."""


def check_count(what: str, actual: int, expected: int) -> None:
    if actual != expected:
        raise BenchmarkError(f"{what}: expected {expected:,} events, found {actual:,}")


def check_orders(what: str, ids: list[str], orders: Sequence[Any], expected: list[str]) -> None:
    """Rebuilt ``ours.Order`` aggregates: the expected ids, each shipped and consistent.

    Consistent: three items, version 6, and the total of the items equal to the
    amount paid (the workload pays exactly the items' total).
    """
    if ids != expected:
        raise BenchmarkError(
            f"{what}: expected {len(expected):,} orders ({expected[:2]}...), "
            f"got {len(ids):,} ({ids[:2]}...)"
        )
    bad = [
        o
        for o in orders
        if o.status != "shipped"
        or len(o.items) != 3
        or o.version != EVENTS_PER_ORDER
        or o.paid is None
        or abs(o.total - o.paid) > 0.005
    ]
    if bad:
        raise BenchmarkError(
            f"{what}: {len(bad):,} of {len(orders):,} orders rebuilt wrong, e.g. {bad[0]!r}"
        )


def check_peer_orders(aggregates: Sequence[Any], order_ids: Sequence[str]) -> None:
    """The peer's aggregates: the requested orders, each shipped with three items."""
    bad = [
        (order_id, a)
        for order_id, a in zip(order_ids, aggregates, strict=True)
        if a.order_id != order_id
        or a.status != "shipped"
        or len(a.items) != 3
        or a.version != EVENTS_PER_ORDER
    ]
    if bad:
        raise BenchmarkError(
            f"peer repository.get: {len(bad):,} of {len(aggregates):,} orders wrong, "
            f"e.g. {bad[0][0]}: {vars(bad[0][1])!r:.300}"
        )


def check_state(what: str, state: Mapping[str, Any], expected: tuple[str, int]) -> None:
    """A function-reducer order state has the expected (status, number of items)."""
    if (state.get("status"), state.get("items")) != expected:
        raise BenchmarkError(f"{what}: expected (status, items) {expected}, got {state!r}")


def check_states(
    what: str, states: Mapping[str, Any], expected: Mapping[str, tuple[str, int]]
) -> None:
    """Exactly the expected streams, each in its expected (status, number of items)."""
    if states.keys() != expected.keys():
        raise BenchmarkError(
            f"{what}: expected {len(expected):,} streams, got {len(states):,} "
            f"({len(states.keys() - expected.keys()):,} unexpected, "
            f"{len(expected.keys() - states.keys()):,} missing)"
        )
    for stream_id, want in expected.items():
        check_state(f"{what}, {stream_id}", states[stream_id], want)
