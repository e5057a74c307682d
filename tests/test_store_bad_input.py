"""Bad input that once got past the store's checks: refused with an EventlabError, no trace.

Each test here reproduces a way the store used to accept a value that broke it
later (a NaT timestamp, a lone surrogate), write through ``store.sql()``, move
a SimulatedClock on a rejected append, or fail with a raw DuckDB/Python error.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

import eventlab as el
from eventlab.clock import to_micros, to_utc

# A str Python's json module produces from the text "\ud800": not encodable as UTF-8.
SURROGATE = json.loads('"\\ud800"')


# ---------------------------------------------------------------------- NaT timestamps


@pytest.mark.parametrize("convert", [to_utc, to_micros], ids=["to_utc", "to_micros"])
def test_nat_is_not_a_point_in_time(convert):
    with pytest.raises(el.EventlabError, match="NaT is a missing value, not a point in time"):
        convert(pd.NaT)


def test_real_pandas_timestamps_still_convert():
    stamp = pd.Timestamp("2024-05-01 12:00:00.000001")
    assert to_utc(stamp) == datetime(2024, 5, 1, 12, 0, 0, 1, tzinfo=UTC)
    assert to_micros(stamp.tz_localize("Europe/Paris")) == to_micros("2024-05-01T10:00:00.000001")


def test_event_refuses_a_nat_occurred_at():
    with pytest.raises(el.InvalidEventError, match="occurred_at: NaT is a missing value"):
        el.Event("Placed", {}, occurred_at=pd.NaT)


@pytest.mark.parametrize("file", [False, True], ids=["memory", "file"])
def test_append_with_a_nat_occurred_at_writes_nothing(file, store_path, clock, snapshot):
    with el.EventStore(store_path if file else None, clock=clock) as store:
        store.append("order-1", el.Event("Placed", {"total": 10}))
        before = snapshot(store)
        with pytest.raises(el.InvalidEventError, match="NaT"):
            store.append("order-2", {"type": "Placed", "data": {}, "occurred_at": pd.NaT})
        before.assert_same(store)
    if file:  # the file opens again, even read-only, with the one good event
        with el.EventStore(store_path, read_only=True) as reopened:
            assert [e.stream_id for e in reopened.read_all()] == ["order-1"]


@pytest.mark.parametrize("bound", ["until", "known_at"])
def test_reads_refuse_a_nat_bound(store, bound):
    store.append("s", el.Event("A", {}))
    with pytest.raises(el.EventlabError, match="NaT"):
        if bound == "until":
            list(store.read_all(until=pd.NaT))
        else:
            store.state_at("s", lambda state, event: state, known_at=pd.NaT)


# ---------------------------------------------------------------------- lone surrogates


@pytest.mark.parametrize(
    "data, where",
    [
        ({"text": SURROGATE}, r"events\[0\]\.data\['text'\]"),
        ({"outer": [1, {"deep": "a" + SURROGATE}]}, r"data\['outer'\]\[1\]\['deep'\]"),
        ({SURROGATE: 1}, r"events\[0\]\.data key '\\ud800'"),
    ],
    ids=["value", "nested", "key"],
)
@pytest.mark.parametrize("file", [False, True], ids=["memory", "file"])
def test_append_refuses_a_lone_surrogate_in_data(file, store_path, clock, snapshot, data, where):
    with el.EventStore(store_path if file else None, clock=clock) as store:
        store.append("ok", el.Event("A", {}))
        before = snapshot(store)
        with pytest.raises(el.InvalidEventError, match=where + " holds a lone surrogate"):
            store.append("a", el.Event("Note", data))
        before.assert_same(store)
        # and the store goes on working
        store.append("a", el.Event("Note", {"text": "fine"}))
        assert [e.stream_id for e in store.read_all()] == ["ok", "a"]
        assert clock.current == datetime(2024, 1, 1, 0, 0, 2, tzinfo=UTC)


def test_append_refuses_a_lone_surrogate_in_metadata(store, snapshot):
    before = snapshot(store)
    with pytest.raises(el.InvalidEventError, match=r"events\[0\]\.metadata\['user'\] holds"):
        store.append("a", el.Event("A", {}, metadata={"user": SURROGATE}))
    before.assert_same(store)


@pytest.mark.parametrize(
    "make, what",
    [
        (lambda s: s.append("order-" + SURROGATE, el.Event("A", {})), "stream_id"),
        (lambda s: s.append("a", el.Event("Placed" + SURROGATE, {})), "event type"),
        (lambda s: s.append("a", {"type": SURROGATE, "data": {}}), "event type"),
        (lambda s: s.append("a", el.Event("A", {}, event_id="id-" + SURROGATE)), "event_id"),
        (lambda s: s.read_stream("a" + SURROGATE), "stream_id"),
        (lambda s: s.version("a" + SURROGATE), "stream_id"),
    ],
    ids=["stream_id", "type", "type-in-dict", "event_id", "read_stream", "version"],
)
def test_names_with_a_lone_surrogate_are_refused(store, snapshot, make, what):
    before = snapshot(store)
    with pytest.raises(el.InvalidEventError, match=f"^{what} .* holds a lone surrogate"):
        make(store)
    before.assert_same(store)


def test_non_ascii_names_and_payloads_are_still_stored(store):
    [record] = store.append("bestellung-ü", el.Event("Größe", {"naïve": "日本"}, event_id="é-1"))
    assert (record.stream_id, record.type, record.data, record.event_id) == (
        "bestellung-ü",
        "Größe",
        {"naïve": "日本"},
        "é-1",
    )
    assert store.read_stream("bestellung-ü") == [record]


# ---------------------------------------------------------------------- store.sql() only reads


@pytest.mark.parametrize(
    "query, statement",
    [
        ("EXPLAIN ANALYZE DELETE FROM events", "a DELETE statement under EXPLAIN ANALYZE"),
        ("explain analyse insert into events select * from events", "an INSERT statement"),
        ("EXPLAIN /* c */ ANALYZE UPDATE events SET type = 'X'", "an UPDATE statement"),
        ("EXPLAIN (ANALYZE, FORMAT json) DELETE FROM events", "a DELETE statement"),
        ("EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1", "a CREATE statement"),
        (
            "WITH gone AS (DELETE FROM events RETURNING *) SELECT count(*) FROM gone",
            "a statement that writes",
        ),
        (
            "EXPLAIN ANALYZE WITH gone AS (DELETE FROM events RETURNING *) SELECT * FROM gone",
            "a statement that writes",
        ),
        (
            "SELECT 1; WITH x AS (UPDATE events SET type = 'X' RETURNING 1) FROM x",
            "a statement that writes",
        ),
    ],
)
@pytest.mark.parametrize("file", [False, True], ids=["memory", "file"])
def test_sql_refuses_statements_that_write_inside_a_read(
    file, store_path, clock, snapshot, query, statement
):
    with el.EventStore(store_path if file else None, clock=clock) as store:
        store.append("a", [el.Event("A", {}), el.Event("B", {})])
        before = snapshot(store)
        with pytest.raises(
            el.EventlabError, match=f"is for reading, but the query contains {statement}"
        ):
            store.sql(query)
        before.assert_same(store)
        [record] = store.append("a", el.Event("C", {}))
        assert (record.position, record.version) == (3, 3)


@pytest.mark.parametrize(
    "query",
    [
        "EXPLAIN ANALYZE SELECT count(*) FROM events",
        "EXPLAIN ANALYZE (SELECT count(*) FROM events)",
        "EXPLAIN (FORMAT json) SELECT count(*) FROM events",
        "EXPLAIN DELETE FROM events",  # plans only
        "SELECT 'delete' AS word, count(*) AS n FROM events",
        'SELECT type AS "update" FROM events',
    ],
)
def test_sql_still_runs_reads_that_mention_writes(store, snapshot, query):
    store.append("a", [el.Event("A", {}), el.Event("B", {})])
    before = snapshot(store)
    assert len(store.sql(query)) >= 1
    before.assert_same(store)


def test_sql_guard_sees_the_journal_rows_of_a_read_only_store(store_path, tmp_path, clock):
    # What a crash leaves: the last appends only in the journal, which a read-only store
    # shows through a temporary view; a read guarded by a read-only transaction sees it.
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    with el.EventStore(store_path, clock=clock) as store:
        store.append("a", el.Event("A", {}))
        store.streams()  # absorbed
        store.append("a", el.Event("B", {}))  # journalled only
        for file in store_path.parent.iterdir():
            if file.name.startswith(store_path.name):
                shutil.copy2(file, crashed / file.name)
    with el.EventStore(crashed / store_path.name, read_only=True) as reader:
        assert reader.sql("SELECT 'update' AS w, count(*) AS n FROM events")["n"].tolist() == [2]
        with pytest.raises(el.EventlabError, match="DELETE statement under EXPLAIN ANALYZE"):
            reader.sql("EXPLAIN ANALYZE DELETE FROM events")
        assert [e.type for e in reader.read_all()] == ["A", "B"]


def test_sql_refuses_a_query_that_is_not_text(store):
    with pytest.raises(el.EventlabError, match="must be a string, got NoneType"):
        store.sql(None)


# ---------------------------------------------------------------------- close() in a transaction


@pytest.mark.parametrize("file", [False, True], ids=["memory", "file"])
def test_close_inside_a_transaction_raises_and_leaves_it_usable(file, store_path, clock):
    store = el.EventStore(store_path if file else None, clock=clock)
    with store.transaction():
        [first] = store.append("a", el.Event("A", {}))
        with pytest.raises(el.EventlabError, match=r"close\(\) was called inside a store"):
            store.close()
        assert not store.closed
        store.append("a", el.Event("B", {}))
    assert [e.type for e in store.read_all()] == ["A", "B"]
    assert store.read_stream("a")[0] == first
    store.close()
    assert store.closed
    if file:
        with el.EventStore(store_path) as reopened:
            assert [e.type for e in reopened.read_all()] == ["A", "B"]


def test_close_error_escaping_the_block_rolls_the_block_back(store):
    store.append("a", el.Event("A", {}))
    with pytest.raises(el.EventlabError, match="inside a store.transaction"):
        with store.transaction():
            store.append("a", el.Event("B", {}))
            store.close()
    assert [e.type for e in store.read_all()] == ["A"]
    store.close()
    assert store.closed


# ---------------------------------------------------------------------- rejected appends, clock


def _clock() -> el.SimulatedClock:
    return el.SimulatedClock("2024-01-01", step=timedelta(minutes=1))


@pytest.mark.parametrize(
    "bad",
    [
        [el.Event("B", {}), el.Event("B", {"when": datetime(2024, 1, 1)})],
        [el.Event("B", {}, metadata={"at": datetime(2024, 1, 1)})],
        [el.Event("B", {"x": float("nan")})],
    ],
    ids=["data", "metadata", "nan"],
)
def test_a_rejected_append_leaves_the_simulated_clock_and_ids_alone(bad):
    def run(fail: bool) -> list[tuple]:
        store = el.EventStore(clock=_clock())
        store.seed_event_ids(1)
        store.append("a", el.Event("A", {}))
        if fail:
            with pytest.raises(el.InvalidEventError):
                store.append("a", bad)
            with store.transaction():
                with pytest.raises(el.InvalidEventError):
                    store.append("a", bad)
        store.append("a", [el.Event("C", {}), el.Event("D", {})])
        return [(e.event_id, e.recorded_at, e.occurred_at) for e in store.read_all()] + [
            store.clock.current
        ]

    assert run(True) == run(False)


def test_a_clock_step_changed_between_appends_is_followed():
    clock = _clock()
    store = el.EventStore(clock=clock)
    store.append("a", [el.Event("A", {}), el.Event("B", {})])
    clock.step = timedelta(seconds=1)
    store.append("a", [el.Event("C", {}), el.Event("D", {}, occurred_at="2020-01-01")])
    times = [(e.recorded_at, e.occurred_at) for e in store.read_all()]
    start = datetime(2024, 1, 1, tzinfo=UTC)
    assert times == [
        (start, start),
        (start + timedelta(minutes=1), start + timedelta(minutes=1)),
        (start + timedelta(minutes=2), start + timedelta(minutes=2)),
        (start + timedelta(minutes=2, seconds=1), datetime(2020, 1, 1, tzinfo=UTC)),
    ]
    assert clock.current == start + timedelta(minutes=2, seconds=2)


def test_a_clock_read_elsewhere_between_peek_and_take_restamps_the_rows():
    # Another reader of the same SimulatedClock (another store, a scheduler) moves it
    # while this append stages its rows: they take the readings the clock gives them.
    clock = _clock()
    store = el.EventStore(clock=clock)

    class Sneaky(dict):
        """A payload whose encoding reads the clock, as another thread could meanwhile."""

    data = Sneaky(x=1)
    dumps, reject, options = el.events.ORJSON_FIRST_TRY

    def sneaky_dumps(value, **kwargs):
        if value is data:
            clock.now()
        return dumps(value, **kwargs)

    el.store.ORJSON_FIRST_TRY, saved = (sneaky_dumps, reject, options), el.store.ORJSON_FIRST_TRY
    try:
        store.append("a", [el.Event("A", data), el.Event("B", {})])
    finally:
        el.store.ORJSON_FIRST_TRY = saved
    start = datetime(2024, 1, 1, tzinfo=UTC)
    assert [e.recorded_at for e in store.read_all()] == [
        start + timedelta(minutes=1),
        start + timedelta(minutes=2),
    ]
    assert clock.current == start + timedelta(minutes=3)


# ---------------------------------------------------------------------- read arguments


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s: list(s.read_all(types=[1])), r"types must be strings, got \[1\]"),
        (lambda s: list(s.read_all(types=5)), "types must be a string or a list of strings"),
        (lambda s: list(s.read_all(batch_size=0)), "batch_size must be a positive int"),
        (lambda s: list(s.read_all(batch_size=True)), "batch_size must be a positive int"),
        (lambda s: s.read_stream("a", from_version=None), "from_version must be a version"),
        (lambda s: s.read_stream("a", from_version=-1), "from_version must be a version"),
        (lambda s: s.read_stream("a", to_version="2"), "to_version must be None"),
        (lambda s: s.events(types=[None]), "types must be strings"),
    ],
)
def test_bad_read_arguments_raise_eventlab_errors(store, call, message):
    store.append("a", el.Event("A", {}))
    with pytest.raises(el.EventlabError, match=message):
        call(store)


def test_a_nan_key_is_named(store, snapshot):
    before = snapshot(store)
    with pytest.raises(el.InvalidEventError, match=r"events\[0\]\.data key nan is not JSON"):
        store.append("a", el.Event("A", {float("nan"): 1}))
    with pytest.raises(el.InvalidEventError, match=r"data\['x'\] key inf is not JSON"):
        store.append("a", el.Event("A", {"x": {float("inf"): 1}}))
    before.assert_same(store)
