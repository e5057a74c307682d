"""Shared fixtures: stores with a simulated clock, and a snapshot of a store's state."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

import eventlab as el

START = datetime(2024, 1, 1, tzinfo=UTC)
STEP = timedelta(seconds=1)


def make_clock() -> el.SimulatedClock:
    """A clock at 2024-01-01T00:00:00Z that moves one second per event."""
    return el.SimulatedClock(START, step=STEP)


@pytest.fixture
def clock() -> el.SimulatedClock:
    return make_clock()


@pytest.fixture
def store(clock: el.SimulatedClock):
    """An in-memory store whose clock starts at START and steps one second per event."""
    with el.EventStore(clock=clock) as store:
        yield store


@pytest.fixture
def store_path(tmp_path):
    """Where a file store lives (not created yet)."""
    return tmp_path / "store.duckdb"


@pytest.fixture
def file_store(store_path, clock: el.SimulatedClock):
    """A DuckDB file store in tmp_path with the simulated clock; closed after the test."""
    store = el.EventStore(store_path, clock=clock)
    yield store
    store.close()


class Snapshot:
    """Everything observable about a store: every row of ``events``, the head, the streams."""

    def __init__(self, store: el.EventStore):
        self.rows = store.sql("select * from events order by position")
        self.head = store.head
        self.streams = store.streams()
        self.versions = {stream: store.version(stream) for stream in self.streams}

    def assert_same(self, store: el.EventStore) -> None:
        after = Snapshot(store)
        pd.testing.assert_frame_equal(after.rows, self.rows)
        assert after.head == self.head
        assert after.streams == self.streams
        assert after.versions == self.versions


@pytest.fixture
def snapshot() -> Callable[[el.EventStore], Snapshot]:
    """``before = snapshot(store)`` ... ``before.assert_same(store)``: nothing was written."""
    return Snapshot
