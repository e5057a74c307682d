"""Clocks, to_utc, and UTC timestamps whatever the machine's time zone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

import eventlab as el
from eventlab.clock import from_micros, to_micros, to_utc

# ---------------------------------------------------------------------- to_utc


@pytest.mark.parametrize(
    "value, expected",
    [
        (datetime(2024, 3, 10, 2, 30), datetime(2024, 3, 10, 2, 30, tzinfo=UTC)),
        (datetime(2024, 3, 10, 2, 30, tzinfo=UTC), datetime(2024, 3, 10, 2, 30, tzinfo=UTC)),
        (
            datetime(2024, 3, 10, 2, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            datetime(2024, 3, 9, 21, 0, tzinfo=UTC),
        ),
        (
            datetime(2024, 3, 10, 2, 30, tzinfo=timezone(timedelta(hours=-5))),
            datetime(2024, 3, 10, 7, 30, tzinfo=UTC),
        ),
        ("2024-03-10T02:30:00", datetime(2024, 3, 10, 2, 30, tzinfo=UTC)),
        ("2024-03-10 02:30:00.123456", datetime(2024, 3, 10, 2, 30, 0, 123456, tzinfo=UTC)),
        ("2024-03-10", datetime(2024, 3, 10, tzinfo=UTC)),
        ("2024-03-10T02:30:00Z", datetime(2024, 3, 10, 2, 30, tzinfo=UTC)),
        ("2024-03-10T02:30:00+01:00", datetime(2024, 3, 10, 1, 30, tzinfo=UTC)),
    ],
)
def test_to_utc(value, expected):
    result = to_utc(value)
    assert result == expected
    assert result.tzinfo == UTC


@pytest.mark.parametrize("bad", ["not a time", "2024-13-01", 1700000000, None])
def test_to_utc_rejects_what_is_not_a_time(bad):
    with pytest.raises(el.EventlabError, match="ISO 8601"):
        to_utc(bad)


def test_micros_round_trip_is_exact():
    value = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)
    assert to_micros(value) == (value - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        microseconds=1
    )
    assert from_micros(to_micros(value)) == value
    assert from_micros(0) == datetime(1970, 1, 1, tzinfo=UTC)


# ---------------------------------------------------------------------- SystemClock


def test_system_clock_is_the_aware_utc_wall_clock():
    before = datetime.now(UTC)
    now = el.SystemClock().now()
    after = datetime.now(UTC)
    assert now.tzinfo == UTC
    assert before <= now <= after


def test_store_defaults_to_the_system_clock():
    with el.EventStore() as store:
        assert isinstance(store.clock, el.SystemClock)
        before = datetime.now(UTC)
        [record] = store.append("s", [el.Event("T", {})])
        after = datetime.now(UTC)
    # DuckDB keeps microseconds, as does datetime: no rounding to compare around.
    assert before <= record.recorded_at <= after
    assert record.occurred_at == record.recorded_at


# ---------------------------------------------------------------------- SimulatedClock


def test_simulated_clock_defaults():
    clock = el.SimulatedClock()
    assert clock.step == timedelta(seconds=1)
    assert clock.now() == datetime(2024, 1, 1, tzinfo=UTC)
    assert clock.now() == datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC)


def test_simulated_clock_steps_on_every_now():
    clock = el.SimulatedClock("2024-05-01T12:00:00", step=timedelta(minutes=5))
    assert clock.current == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert clock.current == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)  # reading does not move it
    assert [clock.now() for _ in range(3)] == [
        datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        datetime(2024, 5, 1, 12, 5, tzinfo=UTC),
        datetime(2024, 5, 1, 12, 10, tzinfo=UTC),
    ]
    assert clock.current == datetime(2024, 5, 1, 12, 15, tzinfo=UTC)


def test_simulated_clock_start_is_read_as_utc():
    aware = el.SimulatedClock(datetime(2024, 5, 1, 12, tzinfo=timezone(timedelta(hours=2))))
    naive = el.SimulatedClock(datetime(2024, 5, 1, 12))
    assert aware.now() == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert naive.now() == datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_simulated_clock_zero_step_stands_still():
    clock = el.SimulatedClock("2024-05-01", step=timedelta(0))
    assert clock.now() == clock.now() == datetime(2024, 5, 1, tzinfo=UTC)


def test_simulated_clock_advance_jumps():
    clock = el.SimulatedClock("2024-05-01", step=timedelta(seconds=1))
    clock.now()
    assert clock.advance(timedelta(days=2)) == datetime(2024, 5, 3, 0, 0, 1, tzinfo=UTC)
    assert clock.now() == datetime(2024, 5, 3, 0, 0, 1, tzinfo=UTC)
    assert clock.current == datetime(2024, 5, 3, 0, 0, 2, tzinfo=UTC)


@pytest.mark.parametrize("bad", [timedelta(seconds=-1), 5, None])
def test_simulated_clock_rejects_a_bad_step(bad):
    with pytest.raises(el.EventlabError, match="step must be a non-negative timedelta"):
        el.SimulatedClock(step=bad)


@pytest.mark.parametrize("bad", [timedelta(seconds=-1), 60])
def test_simulated_clock_only_moves_forward(bad):
    clock = el.SimulatedClock("2024-05-01")
    with pytest.raises(el.EventlabError, match="only moves forward"):
        clock.advance(bad)
    assert clock.current == datetime(2024, 5, 1, tzinfo=UTC)


def test_store_stamps_each_event_one_step_later(clock):
    with el.EventStore(clock=clock) as store:
        assert store.clock is clock
        first = store.append("a", [el.Event("A", {}), el.Event("B", {})])
        clock.advance(timedelta(hours=1))
        second = store.append("b", [el.Event("C", {})])
    start = datetime(2024, 1, 1, tzinfo=UTC)
    assert [r.recorded_at for r in first + second] == [
        start,
        start + timedelta(seconds=1),
        start + timedelta(hours=1, seconds=2),
    ]
    # occurred_at (business time) defaults to recorded_at (knowledge time)
    assert [r.occurred_at for r in first + second] == [r.recorded_at for r in first + second]


# ---------------------------------------------------------------------- the machine's time zone

# Runs in a child process whose TZ is set, so the C library, Python and DuckDB all
# see a local zone that is not UTC. 23:30 UTC is another calendar day in both zones
# tested, so a timestamp or a date computed in local time shows.
CHILD = textwrap.dedent(
    """
    import glob, json, os, sys, tempfile
    from datetime import datetime, timedelta

    import pandas as pd

    import eventlab as el

    out = {"utcoffset": datetime(2024, 1, 1).astimezone().utcoffset().total_seconds()}
    out["system_offset"] = el.SystemClock().now().utcoffset().total_seconds()
    store = el.EventStore(clock=el.SimulatedClock("2024-01-01T23:30:00", step=timedelta(hours=1)))
    records = store.append("a", [
        el.Event("Naive", {}, occurred_at=datetime(2024, 7, 1, 12, 0)),
        el.Event("Offset", {}, occurred_at="2024-07-01T12:00:00+05:30"),
        el.Event("Default", {}),
    ])
    out["append"] = [[r.recorded_at.isoformat(), r.occurred_at.isoformat()] for r in records]
    out["read_all"] = [
        [r.recorded_at.isoformat(), r.occurred_at.isoformat()] for r in store.read_all()
    ]
    out["read_stream"] = [
        [r.recorded_at.isoformat(), r.occurred_at.isoformat()] for r in store.read_stream("a")
    ]
    frame = store.events()
    out["frame"] = [
        [t.isoformat() for t in frame["recorded_at"]],
        [t.isoformat() for t in frame["occurred_at"]],
    ]
    out["sql_tz"] = store.sql("select current_setting('TimeZone') as tz")["tz"][0]
    out["sql_text"] = store.sql(
        "select recorded_at::varchar as r, cast(recorded_at as date)::varchar as d "
        "from events order by position"
    ).to_dict("list")
    store.append_frame(pd.DataFrame({
        "stream_id": ["iso", "iso"], "type": ["T", "T"], "data": [{}, {}],
        "occurred_at": ["2024-07-01T12:00:00", "2024-07-01T12:00:00Z"],
    }))
    store.append_frame(pd.DataFrame({
        "stream_id": ["naive"], "type": ["T"], "data": [{}],
        "occurred_at": [pd.Timestamp("2024-07-01 12:00:00")],
    }))
    out["frame_occurred"] = [
        r.occurred_at.isoformat() for r in store.read_all(after=3)
    ]
    lake = tempfile.mkdtemp()
    store.export_parquet(lake + "/day", partition_by="day")
    out["days"] = sorted(os.path.basename(d) for d in glob.glob(lake + "/day/day=*"))
    print(json.dumps(out))
    """
)

ZONES = {"America/New_York": -5 * 3600, "Asia/Kolkata": 5.5 * 3600}


@pytest.fixture(scope="module", params=sorted(ZONES))
def elsewhere(request):
    env = {**os.environ, "TZ": request.param}
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # The child really runs in the zone (else these tests could not fail).
    assert report["utcoffset"] == ZONES[request.param]
    return report


def _utc(*args) -> str:
    return datetime(*args, tzinfo=UTC).isoformat()


EXPECTED_STAMPS = [
    [_utc(2024, 1, 1, 23, 30), _utc(2024, 7, 1, 12, 0)],  # naive occurred_at is UTC
    [_utc(2024, 1, 2, 0, 30), _utc(2024, 7, 1, 6, 30)],  # +05:30 converted to UTC
    [_utc(2024, 1, 2, 1, 30), _utc(2024, 1, 2, 1, 30)],  # occurred_at defaults to recorded_at
]


def test_system_clock_is_utc_elsewhere(elsewhere):
    assert elsewhere["system_offset"] == 0


def test_append_returns_utc_elsewhere(elsewhere):
    assert elsewhere["append"] == EXPECTED_STAMPS


def test_reads_return_utc_elsewhere(elsewhere):
    assert elsewhere["read_all"] == EXPECTED_STAMPS
    assert elsewhere["read_stream"] == EXPECTED_STAMPS


def test_events_frame_is_utc_elsewhere(elsewhere):
    assert elsewhere["frame"] == [
        [recorded for recorded, _ in EXPECTED_STAMPS],
        [occurred for _, occurred in EXPECTED_STAMPS],
    ]


def test_sql_session_is_utc_elsewhere(elsewhere):
    assert elsewhere["sql_tz"] == "UTC"
    assert elsewhere["sql_text"] == {
        "r": ["2024-01-01 23:30:00+00", "2024-01-02 00:30:00+00", "2024-01-02 01:30:00+00"],
        "d": ["2024-01-01", "2024-01-02", "2024-01-02"],
    }


def test_append_frame_reads_naive_times_as_utc_elsewhere(elsewhere):
    assert elsewhere["frame_occurred"] == [_utc(2024, 7, 1, 12, 0)] * 3


def test_day_partitions_use_the_utc_date_elsewhere(elsewhere):
    # recorded_at: 23:30 on Jan 1, then 00:30, 01:30, 02:30 (frames) on Jan 2, UTC
    assert elsewhere["days"] == ["day=2024-01-01", "day=2024-01-02"]


def test_system_clock_reserves_readings_for_a_batch_at_one_time():
    clock = el.SystemClock()
    before = time.time_ns() // 1000
    first, step = clock.reserve_micros(6)
    after = time.time_ns() // 1000
    assert before <= first <= after
    assert step == 0
