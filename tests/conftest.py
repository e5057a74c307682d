"""Shared fixtures: stores with a simulated clock, and a snapshot of a store's state."""

from __future__ import annotations

import sys
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


@pytest.fixture(autouse=True)
def _close_figures():
    """Close the figures a test drew: pyplot keeps every open one (and warns past 20)."""
    yield
    pyplot = sys.modules.get("matplotlib.pyplot")  # only if some test drew with it
    if pyplot is not None:
        pyplot.close("all")


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


@pytest.fixture(scope="session")
def pm4py_logs() -> Callable[[str], pd.DataFrame]:
    """``pm4py_logs(name)``: a real log (see tests/real_logs.py) as pm4py reads it, read once.

    pm4py is the independent implementation the XES import and el.analytics are
    checked against; it is a dev dependency only.
    """
    import warnings

    import real_logs

    cache: dict[str, pd.DataFrame] = {}

    def read(name: str) -> pd.DataFrame:
        if name not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pm4py suggests its optional Rust reader
                import pm4py

                path = str(real_logs.path(name))
                if name == real_logs.RECEIPT:
                    frame = pd.read_csv(path)
                    frame["time:timestamp"] = pd.to_datetime(frame["time:timestamp"], utc=True)
                    cache[name] = pm4py.format_dataframe(
                        frame,
                        case_id="case:concept:name",
                        activity_key="concept:name",
                        timestamp_key="time:timestamp",
                    )
                else:
                    cache[name] = pm4py.read_xes(path, show_progress_bar=False)
        # A copy: some pm4py functions add columns to the frame they are given.
        return cache[name].copy()

    return read


def crash(store: el.EventStore) -> None:
    """Drop a store without absorbing or closing, as SIGKILL would (the file is released)."""
    from eventlab.connection import release_file

    # A background absorb may be running: the crash lands after it, committed or not.
    store._absorber.abandon()
    store._pending.journal.close()
    store._con.close()
    store._con = None
    release_file(store)
