"""Bulk paths: append_frame (pandas, Arrow), Parquet export, from_parquet and import_parquet."""

from __future__ import annotations

import os
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from contract import EVENT_COLUMNS

import eventlab as el
from eventlab import ingest
from eventlab.events import EventIds

COLUMNS = EVENT_COLUMNS
START = datetime(2024, 1, 1, tzinfo=UTC)  # the conftest clock: +1 s per event
RAW = "select * from events order by position"


def rows(store: el.EventStore) -> list[tuple]:
    return [(r.position, r.stream_id, r.version, r.type, r.data) for r in store.read_all()]


def files_under(directory) -> list[str]:
    """Every file below ``directory``, as sorted relative paths."""
    return sorted(
        os.path.relpath(os.path.join(root, name), directory)
        for root, _, names in os.walk(directory)
        for name in names
    )


# ---------------------------------------------------------------------- append_frame


@pytest.fixture(scope="module")
def target():
    """A store with streams a (version 2) and s (version 1), shared by the tests of bad input.

    Each such test compares its own before/after snapshots, so a call that
    wrongly writes fails that test, not the ones after it.
    """
    with el.EventStore(clock=el.SimulatedClock("2024-01-01")) as store:
        store.append("a", [el.Event("A", {}), el.Event("A", {})])
        store.append("s", [el.Event("Before", {})])
        yield store


def test_append_frame_pandas_with_dict_and_json_data(store):
    store.append("a", [el.Event("Existing", {"i": 0})])
    frame = pd.DataFrame(
        {
            "stream_id": ["a", "b", "a"],
            "type": ["T1", "T2", "T3"],
            "data": [{"i": 1}, '{"i": 2, "s": "é"}', {"i": [3, {"x": None}]}],
        }
    )
    assert store.append_frame(frame) == 3
    assert rows(store) == [
        (1, "a", 1, "Existing", {"i": 0}),
        (2, "a", 2, "T1", {"i": 1}),  # versions continue the stream
        (3, "b", 1, "T2", {"i": 2, "s": "é"}),
        (4, "a", 3, "T3", {"i": [3, {"x": None}]}),
    ]
    assert store.head == 4
    assert store.version("a") == 3
    assert store.version("b") == 1
    records = list(store.read_all(after=1))
    assert [r.metadata for r in records] == [{}, {}, {}]
    assert len({r.event_id for r in records}) == 3
    # occurred_at defaults to recorded_at
    assert [r.occurred_at for r in records] == [r.recorded_at for r in records]


def test_append_frame_arrow_table(store):
    table = pa.table(
        {
            "stream_id": ["s", "s"],
            "type": ["A", "B"],
            "data": ['{"i": 1}', '{"i": 2}'],
            "metadata": ['{"correlation_id": "c"}', None],
            "event_id": ["e-1", "e-2"],
            "occurred_at": ["2023-05-01T12:00:00Z", "2023-05-01T13:00:00+02:00"],
        }
    )
    assert store.append_frame(table) == 2
    [first, second] = store.read_stream("s")
    assert (first.event_id, first.version, first.data, first.metadata) == (
        "e-1",
        1,
        {"i": 1},
        {"correlation_id": "c"},
    )
    assert (second.event_id, second.version, second.data, second.metadata) == (
        "e-2",
        2,
        {"i": 2},
        {},
    )
    assert first.occurred_at == datetime(2023, 5, 1, 12, tzinfo=UTC)
    assert second.occurred_at == datetime(2023, 5, 1, 11, tzinfo=UTC)


def test_append_frame_arrow_struct_data(store):
    table = pa.table({"stream_id": ["s"], "type": ["A"], "data": pa.array([{"a": 1, "b": "x"}])})
    assert store.append_frame(table) == 1
    assert rows(store) == [(1, "s", 1, "A", {"a": 1, "b": "x"})]


def test_append_frame_arrow_record_batch(store):
    batch = pa.record_batch({"stream_id": ["s"], "type": ["A"], "data": ['{"a": 1}']})
    assert store.append_frame(batch) == 1
    assert rows(store) == [(1, "s", 1, "A", {"a": 1})]


@pytest.mark.parametrize(
    "occurred_at",
    [
        ["2023-05-01T12:00:00", "2023-05-01 12:00:00"],  # ISO text without offset: UTC
        [pd.Timestamp("2023-05-01 12:00:00")] * 2,  # naive datetimes: UTC
        [pd.Timestamp("2023-05-01 08:00:00", tz="America/New_York")] * 2,  # aware
        [datetime(2023, 5, 1, 14, tzinfo=timezone(timedelta(hours=2)))] * 2,
    ],
    ids=["iso", "naive", "aware-pandas", "aware-python"],
)
def test_append_frame_occurred_at_is_utc(store, occurred_at):
    frame = pd.DataFrame(
        {"stream_id": ["s", "s"], "type": ["A", "A"], "data": [{}, {}], "occurred_at": occurred_at}
    )
    store.append_frame(frame)
    assert [r.occurred_at for r in store.read_all()] == [datetime(2023, 5, 1, 12, tzinfo=UTC)] * 2


def test_append_frame_missing_occurred_at_defaults_to_recorded_at(store):
    frame = pd.DataFrame(
        {
            "stream_id": ["s", "s"],
            "type": ["A", "A"],
            "data": [{}, {}],
            "occurred_at": ["2023-05-01T12:00:00", None],
        }
    )
    store.append_frame(frame)
    [given, missing] = store.read_all()
    assert given.occurred_at == datetime(2023, 5, 1, 12, tzinfo=UTC)
    assert missing.occurred_at == missing.recorded_at


def test_append_frame_stamps_each_event_one_clock_step_later(store):
    store.append("s", [el.Event("Before", {})])  # takes START
    store.append_frame(
        pd.DataFrame({"stream_id": ["s", "t", "s"], "type": ["A"] * 3, "data": [{}] * 3})
    )
    [after] = store.append("s", [el.Event("After", {})])
    # SimulatedClock: "each event advances the time by step", bulk or not
    assert [r.recorded_at for r in store.read_all()] == [
        START + timedelta(seconds=i) for i in range(5)
    ]
    assert after.recorded_at == START + timedelta(seconds=4)


def test_append_frame_takes_correlation_and_causation_from_metadata(store):
    frame = pd.DataFrame(
        {
            "stream_id": ["s", "s"],
            "type": ["A", "B"],
            "data": [{}, {}],
            "metadata": [{"correlation_id": "corr-1", "causation_id": "cause-1"}, {}],
        }
    )
    store.append_frame(frame)
    [via_frame, plain] = store.read_all()
    # the same as store.append does with the same event
    [via_append] = store.append(
        "t", [el.Event("A", {}, metadata={"correlation_id": "corr-1", "causation_id": "cause-1"})]
    )
    assert (via_append.correlation_id, via_append.causation_id) == ("corr-1", "cause-1")
    assert (via_frame.correlation_id, via_frame.causation_id) == ("corr-1", "cause-1")
    assert (plain.correlation_id, plain.causation_id) == (None, None)


def test_append_frame_correlation_columns(store):
    frame = pd.DataFrame(
        {
            "stream_id": ["s"],
            "type": ["A"],
            "data": [{}],
            "correlation_id": ["corr-1"],
            "causation_id": ["cause-1"],
        }
    )
    store.append_frame(frame)
    [record] = store.read_all()
    assert (record.correlation_id, record.causation_id) == ("corr-1", "cause-1")


def test_append_frame_id_columns_win_over_metadata_and_fall_back_to_it(store):
    # The INSERT is built from the columns the frame has (see ingest._insert_sql).
    table = pa.table(
        {
            "stream_id": ["s", "s", "s"],
            "type": ["A", "A", "A"],
            "data": ["{}", "{}", "{}"],
            "metadata": [
                '{"correlation_id": "from-meta", "causation_id": "cause-meta"}',
                '{"correlation_id": "from-meta"}',
                None,
            ],
            "correlation_id": ["from-column", None, None],
        }
    )
    store.append_frame(table)
    assert [(r.correlation_id, r.causation_id) for r in store.read_all()] == [
        ("from-column", "cause-meta"),
        ("from-meta", None),
        (None, None),
    ]
    assert [r.metadata for r in store.read_all()][1:] == [{"correlation_id": "from-meta"}, {}]


def test_append_frame_without_optional_columns_stores_their_defaults(store):
    table = pa.table({"stream_id": ["s", "t"], "type": ["A", "B"], "data": ['{"i":1}', "{}"]})
    store.append_frame(table)
    stored = store.sql(
        "SELECT metadata::VARCHAR AS m, correlation_id, causation_id, schema_version, "
        "json_type(metadata) AS kind FROM events ORDER BY position"
    )
    assert stored.to_dict("records") == [
        {"m": "{}", "correlation_id": None, "causation_id": None, "schema_version": 1,
         "kind": "OBJECT"},
    ] * 2  # fmt: skip


def test_append_frame_version_column_continuing_streams(store):
    store.append("a", [el.Event("A", {}), el.Event("A", {})])
    frame = pd.DataFrame(
        {
            "stream_id": ["a", "new", "a", "new"],
            "type": ["X"] * 4,
            "data": [{"n": n} for n in range(4)],
            "version": [3, 1, 4, 2],
        }
    )
    assert store.append_frame(frame) == 4
    assert rows(store)[2:] == [
        (3, "a", 3, "X", {"n": 0}),
        (4, "new", 1, "X", {"n": 1}),
        (5, "a", 4, "X", {"n": 2}),
        (6, "new", 2, "X", {"n": 3}),
    ]


@pytest.mark.parametrize(
    "versions, row, stream, expected, actual",
    [
        ([3, 1, 5], 2, "a", 4, 3),  # a gap in a: 5 expects a to be at 4
        ([2, 1, 3], 0, "a", 1, 2),  # a already has version 2
        ([3, 2, 4], 1, "new", 1, 0),  # new starts at 1
        ([3, 1, 3], 2, "a", 2, 3),  # a repeated version
    ],
)
def test_append_frame_bad_version_column_raises_and_writes_nothing(
    target, snapshot, versions, row, stream, expected, actual
):
    store = target
    before = snapshot(store)
    frame = pd.DataFrame(
        {
            "stream_id": ["a", "new", "a"],
            "type": ["X"] * 3,
            "data": [{}] * 3,
            "version": versions,
        }
    )
    with pytest.raises(el.ConcurrencyError) as info:
        store.append_frame(frame)
    error = info.value
    assert (error.stream_id, error.expected, error.actual) == (stream, expected, actual)
    assert f"row {row} gives version {versions[row]} for stream {stream!r}" in str(error)
    assert "Nothing was written" in str(error)
    before.assert_same(store)


@pytest.mark.parametrize("kind", ["pandas", "arrow"])
@pytest.mark.parametrize("missing", ["stream_id", "type", "data"])
def test_append_frame_missing_columns(target, snapshot, kind, missing):
    store = target
    columns = {"stream_id": ["s"], "type": ["A"], "data": ['{"i": 1}']}
    del columns[missing]
    frame = pd.DataFrame(columns) if kind == "pandas" else pa.table(columns)
    before = snapshot(store)
    with pytest.raises(el.MissingColumnsError) as info:
        store.append_frame(frame)
    assert f"lacks the required column(s) [{missing!r}]" in str(info.value)
    assert "['stream_id', 'type', 'data']" in str(info.value)  # what it needs
    before.assert_same(store)


def test_append_frame_unknown_columns(target, snapshot):
    store = target
    frame = pd.DataFrame({"stream_id": ["s"], "type": ["A"], "data": [{}], "amount": [3]})
    before = snapshot(store)
    with pytest.raises(el.MissingColumnsError) as info:
        store.append_frame(frame)
    assert "unknown column(s) ['amount']" in str(info.value)
    assert "move them into data" in str(info.value)
    before.assert_same(store)


@pytest.mark.parametrize(
    "column, value, fragment",
    [
        ("data", "{not json", "data must be a JSON object"),
        ("data", "[1, 2]", "data must be a JSON object"),
        ("data", '"text"', "data must be a JSON object"),
        ("data", "42", "data must be a JSON object"),
        ("data", 42, "data must be a dict or JSON text"),
        ("data", [1, 2], "data must be a dict or JSON text"),
        ("data", None, "data is missing"),
        ("data", {"when": datetime(2024, 1, 1)}, "data['when'] is not JSON-serialisable"),
        ("metadata", "[]", "metadata must be a JSON object"),
        ("metadata", "{bad", "metadata must be a JSON object"),
        ("occurred_at", "yesterday", "cannot read occurred_at as a timestamp"),
        ("occurred_at", "2024-13-45T00:00:00", "cannot read occurred_at as a timestamp"),
        ("stream_id", "", "stream_id is empty or missing"),
        ("stream_id", None, "stream_id is empty or missing"),
        ("type", "  ", "type is empty or missing"),
    ],
)
def test_append_frame_bad_row_names_the_row(target, snapshot, column, value, fragment):
    store = target
    good = {
        "stream_id": "s",
        "type": "A",
        "data": {"ok": True},
        "metadata": {},
        "occurred_at": "2024-01-01T00:00:00",
    }
    records = [dict(good), dict(good), dict(good)]
    records[2][column] = value
    frame = pd.DataFrame({name: [r[name] for r in records] for name in good})
    before = snapshot(store)
    with pytest.raises(el.InvalidEventError) as info:
        store.append_frame(frame)
    message = str(info.value)
    assert "row 2" in message
    assert fragment in message
    before.assert_same(store)


def test_append_frame_duplicate_event_ids_in_the_frame(target, snapshot):
    store = target
    frame = pd.DataFrame(
        {"stream_id": ["s", "t"], "type": ["A", "A"], "data": [{}, {}], "event_id": ["x", "x"]}
    )
    before = snapshot(store)
    with pytest.raises(el.DuplicateEventError, match="'x' appears more than once"):
        store.append_frame(frame)
    before.assert_same(store)


@pytest.mark.parametrize("absorbed", [False, True], ids=["buffered", "in-duckdb"])
def test_append_frame_event_id_already_stored(store, snapshot, absorbed):
    store.append("s", [el.Event("A", {}, event_id="x")])
    if absorbed:
        store.streams()
    before = snapshot(store)
    frame = pd.DataFrame(
        {"stream_id": ["s", "s"], "type": ["B", "A"], "data": [{}, {}], "event_id": ["y", "x"]}
    )
    with pytest.raises(el.DuplicateEventError, match="'x' is already stored"):
        store.append_frame(frame)
    before.assert_same(store)


def test_event_id_stored_by_a_frame_is_idempotent_for_append(store, snapshot):
    frame = pd.DataFrame(
        {"stream_id": ["s"], "type": ["A"], "data": ['{"b": 1, "a": [2]}'], "event_id": ["x"]}
    )
    store.append_frame(frame)
    [stored] = store.read_all()
    before = snapshot(store)
    # the same content as a dict (key order and spacing do not matter): a retry
    assert store.append("s", [el.Event("A", {"a": [2], "b": 1}, event_id="x")]) == [stored]
    with pytest.raises(el.DuplicateEventError, match="different content"):
        store.append("s", [el.Event("A", {"a": [3], "b": 1}, event_id="x")])
    before.assert_same(store)


def test_append_frame_generates_the_missing_event_ids(store):
    table = pa.table(
        {
            "stream_id": ["s"] * 4,
            "type": ["A"] * 4,
            "data": ["{}"] * 4,
            "event_id": ["e-1", None, "e-3", None],
        }
    )
    store.append_frame(table)
    [_, second, _, fourth] = ids = [r.event_id for r in store.read_all()]
    assert ids[0::2] == ["e-1", "e-3"]
    prefix = store._new_ids.prefix
    # One id reserved per row, so rows 1 and 3 get counters 1 and 3.
    assert (second, fourth) == (f"{prefix}{1:012x}", f"{prefix}{3:012x}")
    assert str(uuid.UUID(second)) == second and uuid.UUID(second).version == 8


@pytest.mark.parametrize("first", [0, 250, 4095, 65_530, 2**40 - 3])
def test_generated_ids_match_the_one_by_one_format(monkeypatch, first):
    monkeypatch.setattr(ingest, "_ID_CHUNK_ROWS", 4)  # several chunks, a short last one
    prefix = EventIds().prefix
    ids = ingest._generated_ids(prefix, first, 11)
    assert ids.num_chunks == 3
    assert ids.to_pylist() == [f"{prefix}{n:012x}" for n in range(first, first + 11)]


def test_append_frame_then_append_continues(store):
    store.append_frame(pd.DataFrame({"stream_id": ["s"], "type": ["A"], "data": [{}]}))
    [record] = store.append("s", [el.Event("B", {})], expected_version=1)
    assert (record.position, record.version) == (2, 2)
    with pytest.raises(el.ConcurrencyError):
        store.append("s", [el.Event("C", {})], expected_version=1)


def test_append_frame_of_no_rows(store, snapshot):
    before = snapshot(store)
    empty = pd.DataFrame(
        {name: pd.Series([], dtype=object) for name in ("stream_id", "type", "data")}
    )
    assert store.append_frame(empty) == 0
    before.assert_same(store)


def test_append_frame_on_a_file_store_persists(file_store, store_path):
    file_store.append("s", [el.Event("A", {})])
    file_store.append_frame(pd.DataFrame({"stream_id": ["s"], "type": ["B"], "data": [{"i": 1}]}))
    expected = file_store.sql(RAW)
    file_store.close()
    with el.EventStore(store_path) as reopened:
        pd.testing.assert_frame_equal(reopened.sql(RAW), expected)
        assert rows(reopened) == [(1, "s", 1, "A", {}), (2, "s", 2, "B", {"i": 1})]


def test_append_frame_rejects_other_objects(target, snapshot):
    store = target
    before = snapshot(store)
    with pytest.raises(el.EventlabError, match="pandas DataFrame or a pyarrow Table"):
        store.append_frame([{"stream_id": "s", "type": "A", "data": {}}])
    before.assert_same(store)


# ---------------------------------------------------------------------- a log to export


def fill_source(store: el.EventStore) -> el.EventStore:
    """Three days of events with every column filled; the clock crosses midnight UTC."""
    store.append(
        "order-1",
        [
            el.Event(
                "Placed",
                {"total": 12.5, "items": ["a", "b"], "note": "é ✓"},
                metadata={"correlation_id": "corr-1", "causation_id": "cmd-1", "by": "ann"},
                event_id="evt-1",
                occurred_at="2023-12-31T12:34:56.789012",
            ),
            el.Event("Paid", {"amount": 12.5}),
        ],
    )  # 22:00, 23:00 on Jan 1
    store.append("order-2", [el.Event("Placed", {"total": 3, "big": 2**60})])  # 00:00 Jan 2
    store.clock.advance(timedelta(days=1))
    store.append("order-1", [el.Event("Shipped", {"n": None, "ok": True})])  # Jan 3
    return store


def source_clock() -> el.SimulatedClock:
    return el.SimulatedClock("2024-01-01T22:00:00", step=timedelta(hours=1))


@pytest.fixture(scope="module")
def source():
    """The log to export, shared by the tests that only read it."""
    with el.EventStore(clock=source_clock()) as store:
        yield fill_source(store)


@pytest.fixture
def own_source():
    """The same log, for a test that writes to it."""
    with el.EventStore(clock=source_clock()) as store:
        yield fill_source(store)


def assert_same_log(copy: el.EventStore, original: el.EventStore) -> None:
    """Every column and value equal, seen through events() and through raw SQL."""
    pd.testing.assert_frame_equal(copy.events(), original.events())
    pd.testing.assert_frame_equal(copy.sql(RAW), original.sql(RAW))
    assert list(copy.read_all()) == list(original.read_all())
    assert copy.head == original.head
    assert {s: copy.version(s) for s in copy.streams()} == {
        s: original.version(s) for s in original.streams()
    }


# ---------------------------------------------------------------------- export_parquet


def test_export_plain(source, tmp_path):
    lake = tmp_path / "lake"
    assert source.export_parquet(lake) == lake
    assert files_under(lake) == ["events.parquet"]
    table = pq.read_table(lake / "events.parquet")
    assert table.column_names == COLUMNS
    assert table.column("position").to_pylist() == [1, 2, 3, 4]
    assert table.column("event_id").to_pylist()[0] == "evt-1"
    assert table.column("stream_id").to_pylist() == ["order-1", "order-1", "order-2", "order-1"]
    assert table.column("recorded_at").to_pylist()[0] == datetime(2024, 1, 1, 22, tzinfo=UTC)


def test_export_into_an_existing_empty_directory(source, tmp_path):
    lake = tmp_path / "lake"
    lake.mkdir()
    source.export_parquet(lake)
    assert files_under(lake) == ["events.parquet"]


def test_export_by_day_uses_the_utc_date_of_recorded_at(source, tmp_path):
    lake = tmp_path / "lake"
    source.export_parquet(lake, partition_by="day")
    directories = sorted(p.name for p in lake.iterdir())
    assert directories == ["day=2024-01-01", "day=2024-01-02", "day=2024-01-03"]
    positions = {
        name: sorted(pq.read_table(lake / name, partitioning=None).column("position").to_pylist())
        for name in directories
    }
    assert positions == {"day=2024-01-01": [1, 2], "day=2024-01-02": [3], "day=2024-01-03": [4]}


@pytest.mark.parametrize(
    "partition_by, directories",
    [
        ("stream_id", ["stream_id=order-1", "stream_id=order-2"]),
        ("type", ["type=Paid", "type=Placed", "type=Shipped"]),
        (["stream_id"], ["stream_id=order-1", "stream_id=order-2"]),
    ],
)
def test_export_by_column(source, tmp_path, partition_by, directories):
    lake = tmp_path / "lake"
    source.export_parquet(lake, partition_by=partition_by)
    assert sorted(p.name for p in lake.iterdir()) == directories
    for directory in lake.iterdir():
        column, value = directory.name.split("=")
        table = pq.read_table(directory, partitioning=None)
        assert set(table.column(column).to_pylist()) == {value}


def test_export_by_two_columns(source, tmp_path):
    lake = tmp_path / "lake"
    source.export_parquet(lake, partition_by=["stream_id", "type"])
    assert sorted(os.path.relpath(root, lake) for root, _, files in os.walk(lake) if files) == [
        "stream_id=order-1/type=Paid",
        "stream_id=order-1/type=Placed",
        "stream_id=order-1/type=Shipped",
        "stream_id=order-2/type=Placed",
    ]


@pytest.mark.parametrize("partition_by", ["nope", ["stream_id", "nope"], []])
def test_export_by_unknown_column_is_refused(source, tmp_path, partition_by):
    lake = tmp_path / "lake"
    with pytest.raises(el.ParquetError, match="cannot partition by"):
        source.export_parquet(lake, partition_by=partition_by)
    assert not lake.exists() or files_under(lake) == []


def test_export_leaves_the_store_as_it_was(source, tmp_path, snapshot):
    before = snapshot(source)
    source.export_parquet(tmp_path / "lake", partition_by="day")
    before.assert_same(source)


def test_export_into_a_non_empty_directory_is_refused(source, tmp_path):
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "notes.txt").write_text("mine")
    with pytest.raises(el.ParquetError) as info:
        source.export_parquet(lake)
    assert "is not empty" in str(info.value)
    assert "overwrite=True" in str(info.value)
    assert files_under(lake) == ["notes.txt"]
    assert (lake / "notes.txt").read_text() == "mine"


def test_export_again_is_refused_unless_overwrite(own_source, tmp_path):
    source = own_source
    lake = tmp_path / "lake"
    source.export_parquet(lake)
    first = (lake / "events.parquet").read_bytes()
    with pytest.raises(el.ParquetError, match="overwrite=True"):
        source.export_parquet(lake)
    assert (lake / "events.parquet").read_bytes() == first
    source.append("order-3", [el.Event("Placed", {})])
    source.export_parquet(lake, overwrite=True)
    assert files_under(lake) == ["events.parquet"]
    with el.EventStore.from_parquet(lake) as copy:
        assert_same_log(copy, source)
        assert copy.head == 5


def test_export_overwrite_with_other_partitions(source, tmp_path):
    lake = tmp_path / "lake"
    source.export_parquet(lake, partition_by="day")
    source.export_parquet(lake, partition_by="stream_id", overwrite=True)
    with el.EventStore.from_parquet(lake) as copy:
        assert_same_log(copy, source)  # no event read twice from the day=... files


def test_export_to_a_file_is_refused(source, tmp_path):
    target = tmp_path / "file.parquet"
    target.write_bytes(b"x")
    with pytest.raises(el.ParquetError, match="is a file"):
        source.export_parquet(target)
    assert target.read_bytes() == b"x"


# ---------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "partition_by, read_from",
    [
        (None, "directory"),
        ("day", "directory"),
        ("stream_id", "directory"),
        (["stream_id", "type"], "directory"),
        ("day", "glob"),
    ],
    ids=str,
)
def test_round_trip_preserves_every_column_and_value(source, tmp_path, partition_by, read_from):
    lake = tmp_path / "lake"
    source.export_parquet(lake, partition_by=partition_by)
    where = lake if read_from == "directory" else str(lake) + "/**/*.parquet"
    with el.EventStore.from_parquet(where) as copy:
        assert_same_log(copy, source)


def test_round_trip_from_a_file(source, tmp_path):
    lake = tmp_path / "lake"
    source.export_parquet(lake)
    with el.EventStore.from_parquet(str(lake / "events.parquet")) as copy:
        assert_same_log(copy, source)


def test_round_trip_values_in_detail(source, tmp_path):
    source.export_parquet(tmp_path / "lake")
    with el.EventStore.from_parquet(tmp_path / "lake") as copy:
        first = copy.read_stream("order-1")[0]
        assert first.to_dict() == source.read_stream("order-1")[0].to_dict()
        assert first.event_id == "evt-1"
        assert first.data == {"total": 12.5, "items": ["a", "b"], "note": "é ✓"}
        assert (first.correlation_id, first.causation_id) == ("corr-1", "cmd-1")
        assert first.occurred_at == datetime(2023, 12, 31, 12, 34, 56, 789012, tzinfo=UTC)
        assert first.recorded_at == datetime(2024, 1, 1, 22, tzinfo=UTC)
        assert copy.read_stream("order-2")[0].data["big"] == 2**60


def test_from_parquet_into_a_file_store(source, tmp_path):
    source.export_parquet(tmp_path / "lake")
    target = tmp_path / "copy.duckdb"
    with el.EventStore.from_parquet(tmp_path / "lake", target) as copy:
        assert copy.path == target
        assert_same_log(copy, source)
    with el.EventStore(target) as reopened:
        assert_same_log(reopened, source)
        [record] = reopened.append("order-1", [el.Event("Returned", {})], expected_version=3)
        assert (record.position, record.version) == (5, 4)


def test_from_parquet_of_an_empty_log(store, tmp_path):
    store.export_parquet(tmp_path / "lake")
    with el.EventStore.from_parquet(tmp_path / "lake") as copy:
        assert copy.head == 0
        assert copy.streams() == []


def test_round_trip_through_a_file_store(source, tmp_path):
    """Parquet -> file store -> close -> reopen -> Parquet -> memory: still the same log."""
    source.export_parquet(tmp_path / "one")
    with el.EventStore.from_parquet(tmp_path / "one", tmp_path / "s.duckdb") as middle:
        pass
    with el.EventStore(tmp_path / "s.duckdb") as middle:
        middle.export_parquet(tmp_path / "two", partition_by="day")
    with el.EventStore.from_parquet(tmp_path / "two") as copy:
        assert_same_log(copy, source)


# ---------------------------------------------------------------------- import_parquet


@pytest.mark.parametrize("read_from", ["file", "directory", "glob"])
def test_import_into_an_empty_store(source, tmp_path, read_from):
    source.export_parquet(tmp_path / "lake", partition_by="day")
    where = {
        "file": tmp_path / "lake" / "day=2024-01-02" / "data_0.parquet",
        "directory": tmp_path / "lake",
        "glob": str(tmp_path / "lake" / "day=2024-01-0[12]" / "*.parquet"),
    }[read_from]
    with el.EventStore() as store:
        count = store.import_parquet(where)
        if read_from == "directory":
            assert count == 4
            assert_same_log(store, source)
        elif read_from == "file":
            assert count == 1
            assert [(r.stream_id, r.version, r.type) for r in store.read_all()] == [
                ("order-2", 1, "Placed")
            ]
        else:
            assert count == 3
            assert [r.to_dict() for r in store.read_all()] == [
                r.to_dict() for r in source.read_all(until=3)
            ]


def test_import_into_a_store_with_other_streams(source, tmp_path, store):
    source.export_parquet(tmp_path / "lake")
    store.append("mine", [el.Event("Mine", {})])
    assert store.import_parquet(tmp_path / "lake") == 4
    imported = list(store.read_all(after=1))
    original = list(source.read_all())
    # positions continue the log; every other column is kept
    assert [r.position for r in imported] == [2, 3, 4, 5]
    assert [{**r.to_dict(), "position": None} for r in imported] == [
        {**r.to_dict(), "position": None} for r in original
    ]
    assert store.streams() == ["mine", "order-1", "order-2"]
    [record] = store.append("order-1", [el.Event("Next", {})], expected_version=3)
    assert (record.position, record.version) == (6, 4)


def test_import_that_does_not_continue_a_stream_writes_nothing(source, tmp_path, store, snapshot):
    source.export_parquet(tmp_path / "lake")
    store.append("order-2", [el.Event("Clash", {})])
    before = snapshot(store)
    with pytest.raises(el.ConcurrencyError) as info:
        store.import_parquet(tmp_path / "lake")
    assert (info.value.stream_id, info.value.expected, info.value.actual) == ("order-2", 0, 1)
    before.assert_same(store)


def test_import_of_already_stored_events_writes_nothing(own_source, tmp_path, snapshot):
    source = own_source
    source.export_parquet(tmp_path / "lake")
    before = snapshot(source)
    with pytest.raises(el.EventlabError):
        source.import_parquet(tmp_path / "lake")
    before.assert_same(source)


def test_import_a_minimal_parquet_file(store, tmp_path):
    path = tmp_path / "minimal.parquet"
    pq.write_table(
        pa.table(
            {
                "stream_id": ["a", "b", "a"],
                "type": ["X", "Y", "Z"],
                "data": ['{"i": 1}', '{"i": 2}', '{"i": 3}'],
                "note": ["extra", "columns", "are ignored"],
            }
        ),
        path,
    )
    assert store.import_parquet(path) == 3
    assert rows(store) == [
        (1, "a", 1, "X", {"i": 1}),
        (2, "b", 1, "Y", {"i": 2}),
        (3, "a", 2, "Z", {"i": 3}),
    ]
    assert [r.metadata for r in store.read_all()] == [{}, {}, {}]
    assert [r.occurred_at for r in store.read_all()] == [r.recorded_at for r in store.read_all()]


# ---------------------------------------------------------------------- bad Parquet


@pytest.mark.parametrize(
    "where",
    ["missing.parquet", "missing-dir", "empty-dir", "nothing-*.parquet", "empty-dir/**/*.parquet"],
)
def test_missing_parquet_raises(tmp_path, target, snapshot, where):
    store = target
    (tmp_path / "empty-dir").mkdir()
    before = snapshot(store)
    with pytest.raises(el.ParquetError) as info:
        store.import_parquet(tmp_path / where)
    assert "no Parquet files at" in str(info.value)
    assert str(tmp_path / where) in str(info.value)
    assert "a glob such as" in str(info.value)
    before.assert_same(store)
    with pytest.raises(el.ParquetError):
        el.EventStore.from_parquet(tmp_path / where)


def test_failed_from_parquet_releases_its_store_file(tmp_path):
    path = tmp_path / "copy.duckdb"
    with pytest.raises(el.ParquetError):
        el.EventStore.from_parquet(tmp_path / "missing", path)
    # the store it began is closed again, so the file can be opened (or created) here
    with el.EventStore(path) as store:
        assert store.head == 0


def _corrupt_files(tmp_path, source):
    source.export_parquet(tmp_path / "good")
    real = (tmp_path / "good" / "events.parquet").read_bytes()
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"this is not a parquet file" * 40)
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(real[: len(real) // 2])
    headless = tmp_path / "headless.parquet"
    headless.write_bytes(b"\0" * 8 + real[8:])
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.parquet").write_bytes(real)
    (mixed / "b.parquet").write_bytes(real[:-20])
    return {"garbage": garbage, "truncated": truncated, "headless": headless, "mixed": mixed}


@pytest.mark.parametrize("kind", ["garbage", "truncated", "headless", "mixed"])
def test_corrupt_parquet_raises(tmp_path, source, target, snapshot, kind):
    store = target
    path = _corrupt_files(tmp_path, source)[kind]
    before = snapshot(store)
    with pytest.raises(el.ParquetError) as info:
        store.import_parquet(path)
    assert "Parquet" in str(info.value)
    assert str(path) in str(info.value) or str(path / "b.parquet") in str(info.value)
    assert "Re-export it" in str(info.value)  # the fix
    before.assert_same(store)
    with pytest.raises(el.ParquetError):
        el.EventStore.from_parquet(path)


@pytest.mark.parametrize("missing", ["stream_id", "type", "data"])
def test_parquet_missing_required_columns(tmp_path, target, snapshot, missing):
    store = target
    columns = {"stream_id": ["s"], "type": ["A"], "data": ['{"i": 1}'], "version": [1]}
    del columns[missing]
    path = tmp_path / "partial.parquet"
    pq.write_table(pa.table(columns), path)
    before = snapshot(store)
    with pytest.raises(el.MissingColumnsError) as info:
        store.import_parquet(path)
    assert f"lacks the required column(s) [{missing!r}]" in str(info.value)
    assert str(path) in str(info.value)
    before.assert_same(store)
    with pytest.raises(el.MissingColumnsError):
        el.EventStore.from_parquet(path)


def test_parquet_bad_row_is_named(tmp_path, target, snapshot):
    store = target
    path = tmp_path / "bad.parquet"
    pq.write_table(
        pa.table({"stream_id": ["s", "s"], "type": ["A", "A"], "data": ['{"i": 1}', "[2]"]}), path
    )
    before = snapshot(store)
    with pytest.raises(el.InvalidEventError, match="Parquet row 1: data must be a JSON object"):
        store.import_parquet(path)
    before.assert_same(store)


# ---------------------------------------------------------------------- bad frames, named


SURROGATE = "id-\ud800"  # a lone surrogate, as json.loads('"\\ud800"') can produce


@pytest.mark.parametrize(
    "columns, message",
    [
        ({"stream_id": [1]}, "column 'stream_id' must hold text (str), not int64"),
        ({"type": [True]}, "column 'type' must hold text (str), not bool"),
        ({"event_id": [7]}, "column 'event_id' must hold text (str), not int64"),
        ({"event_id": [""]}, "frame row 0: event_id is empty"),
        ({"event_id": ["  "]}, "frame row 0: event_id is empty"),
        ({"stream_id": ["s", 3]}, "column 'stream_id' cannot be read as one type"),
        ({"type": ["A", 3.5]}, "column 'type' cannot be read as one type"),
        ({"occurred_at": [pd.Timestamp("2024-01-01"), "x"]}, "column 'occurred_at' cannot be"),
        ({"version": ["x"]}, "column 'version' must hold numbers, not"),
        ({"version": [True]}, "column 'version' must hold numbers, not bool"),
        ({"schema_version": ["x"]}, "column 'schema_version' must hold numbers, not"),
        ({"schema_version": [1.5]}, "column 'schema_version' must hold whole numbers"),
        # (object columns: pandas' own string columns refuse such a str already)
        (
            {"stream_id": pd.Series([SURROGATE], dtype=object)},
            "column 'stream_id' holds a str that holds a lone surrogate",
        ),
        (
            {"data": pd.Series(['{"a": "\ud800"}'], dtype=object)},
            "column 'data' holds a str that holds a lone surrogate",
        ),
        ({"data": [{"a": "\ud800"}]}, "row 0 data['a'] holds a lone surrogate"),
        ({"occurred_at": ["infinity"]}, "frame row 0: occurred_at is not a date from year 1"),
        ({"occurred_at": ["294247-01-10"]}, "occurred_at is not a date from year 1 to 9999"),
        ({"recorded_at": ["-infinity"]}, "recorded_at is not a date from year 1 to 9999"),
    ],
)
def test_append_frame_refuses_bad_columns_by_name(target, snapshot, columns, message):
    store = target
    frame = {"stream_id": ["s"], "type": ["A"], "data": [{}]}
    rows_given = len(next(iter(columns.values())))
    frame = {name: values * rows_given for name, values in frame.items()} | columns
    before = snapshot(store)
    with pytest.raises(el.InvalidEventError, match=re.escape(message)):
        store.append_frame(pd.DataFrame(frame))
    before.assert_same(store)


@pytest.mark.parametrize("kind", ["pandas", "arrow"])
def test_append_frame_refuses_duplicate_column_names(target, snapshot, kind):
    store = target
    values = [["s"], ["A"], ["{}"], ["t"]]
    names = ["stream_id", "type", "data", "stream_id"]
    if kind == "pandas":
        frame = pd.DataFrame(dict(enumerate(values)))
        frame.columns = names
    else:
        frame = pa.Table.from_arrays([pa.array(v) for v in values], names=names)
    before = snapshot(store)
    with pytest.raises(el.InvalidEventError, match="more than one column named 'stream_id'"):
        store.append_frame(frame)
    before.assert_same(store)


def test_append_frame_still_takes_text_like_columns(store):
    frame = pd.DataFrame(
        {
            "stream_id": pd.Series(["s", "t"], dtype="category"),
            "type": pd.Series(["A", "B"], dtype="string"),
            "data": [{}, {}],
            "event_id": [None, "given"],
            "version": [1.0, float("nan")],
            "schema_version": [1, 2],
        }
    )
    assert store.append_frame(frame) == 2
    records = list(store.read_all())
    assert [(r.stream_id, r.type, r.version, r.schema_version) for r in records] == [
        ("s", "A", 1, 1),
        ("t", "B", 1, 2),
    ]
    assert records[1].event_id == "given"
    assert records[0].event_id != "given"


@pytest.mark.parametrize("missing", [None, pd.NaT])
@pytest.mark.parametrize("dtype", ["datetime64[us]", "object"])
def test_append_frame_missing_occurred_at_values_take_the_recorded_time(store, missing, dtype):
    # In a frame a missing occurred_at (None or NaT) means "not given", as in a column
    # left out: the event occurred when it was recorded.
    occurred = pd.Series([pd.Timestamp("2020-05-01"), missing], dtype=dtype)
    store.append_frame(
        pd.DataFrame({"stream_id": ["s", "s"], "type": ["A", "B"], "data": [{}, {}]}).assign(
            occurred_at=occurred
        )
    )
    first, second = store.read_all()
    assert first.occurred_at == datetime(2020, 5, 1, tzinfo=UTC)
    assert second.occurred_at == second.recorded_at == START + timedelta(seconds=1)


def test_a_rejected_frame_leaves_the_simulated_clock_and_ids_alone():
    def run(fail: bool) -> list[tuple]:
        store = el.EventStore(clock=el.SimulatedClock("2024-01-01", step=timedelta(minutes=1)))
        store.seed_event_ids(1)
        store.append("a", el.Event("A", {}))
        if fail:
            for bad in ("{oops", "[1]", '{"x": NaN}'):
                with pytest.raises(el.InvalidEventError):
                    store.append_frame(
                        pd.DataFrame(
                            {"stream_id": ["a"] * 3, "type": ["B"] * 3, "data": ["{}", "{}", bad]}
                        )
                    )
        store.append_frame(pd.DataFrame({"stream_id": ["a"], "type": ["C"], "data": ["{}"]}))
        store.append("a", el.Event("D", {}))
        return [(e.event_id, e.recorded_at) for e in store.read_all()] + [store.clock.current]

    assert run(True) == run(False)


@pytest.mark.parametrize(
    "column, value",
    [
        ("data", pa.array([{"x": 1.0}, {"x": float("nan")}])),  # DuckDB writes NaN for it
        ("data", pa.array([{"x": 1.0}, {"x": float("-inf")}])),
        ("data", pa.array(['{"x": 1}', '{"x": NaN}'])),  # as Python's json.dumps writes it
        ("data", pa.array(['{"x": 1}', '{"x": [1, -Infinity]}'])),
        ("metadata", pa.array(["{}", '{"m": Infinity}'])),
    ],
)
def test_payloads_with_nan_or_infinity_are_refused(target, snapshot, column, value):
    store = target
    columns = {"stream_id": ["s", "s"], "type": ["A", "A"], "data": ["{}", "{}"]}
    table = pa.table(columns | {column: value})
    before = snapshot(store)
    with pytest.raises(
        el.InvalidEventError, match=f"frame row 1: {column} holds NaN or an infinity"
    ):
        store.append_frame(table)
    before.assert_same(store)


def test_a_malformed_payload_beside_the_word_nan_in_a_string_is_named(target, snapshot):
    store = target
    table = pa.table(
        {"stream_id": ["s", "s"], "type": ["A", "A"], "data": ['{"x": "NaN"}', "{bad"]}
    )
    before = snapshot(store)
    with pytest.raises(el.InvalidEventError, match="frame row 1: data must be a JSON object"):
        store.append_frame(table)
    before.assert_same(store)


def test_the_words_nan_and_infinity_in_strings_are_kept(store):
    texts = ['{"x": "NaN"}', '{"Infinity": "a NaN b", "y": [1.5]}']
    store.append_frame(pa.table({"stream_id": ["s", "s"], "type": ["A", "B"], "data": texts}))
    assert [e.data for e in store.read_all()] == [
        {"x": "NaN"},
        {"Infinity": "a NaN b", "y": [1.5]},
    ]


# ---------------------------------------------------------------------- Parquet written elsewhere


def test_import_parquet_written_by_pandas_with_dict_payloads(tmp_path, store):
    path = tmp_path / "events.parquet"
    pd.DataFrame(
        {
            "stream_id": ["order-1", "order-1"],
            "type": ["Placed", "Paid"],
            "data": [{"total": 12.5, "sku": "x"}, {"total": 12.5, "sku": "y"}],
            "metadata": [{"user": "ann"}, {"user": "bob"}],
        }
    ).to_parquet(path)
    assert pa.types.is_struct(pq.read_schema(path).field("data").type)
    assert store.import_parquet(path) == 2
    assert [(e.type, e.data, e.metadata) for e in store.read_all()] == [
        ("Placed", {"total": 12.5, "sku": "x"}, {"user": "ann"}),
        ("Paid", {"total": 12.5, "sku": "y"}, {"user": "bob"}),
    ]
    # the same as append_frame makes of the same table
    other = el.EventStore(clock=el.SimulatedClock("2024-01-01"))
    other.append_frame(pq.read_table(path))
    assert [e.data for e in other.read_all()] == [e.data for e in store.read_all()]
    with el.EventStore.from_parquet(path) as built:
        assert built.head == 2


def test_import_parquet_with_a_map_payload(tmp_path, store):
    path = tmp_path / "events.parquet"
    data = pa.array([[("a", 1), ("b", 2)]], pa.map_(pa.string(), pa.int64()))
    pq.write_table(pa.table({"stream_id": ["s"], "type": ["A"], "data": data}), path)
    assert store.import_parquet(path) == 1
    assert next(store.read_all()).data == {"a": 1, "b": 2}


@pytest.mark.parametrize("name", ["run[1]", "a*b?", "[x]"])
def test_import_from_a_directory_whose_name_looks_like_a_glob(source, tmp_path, name):
    directory = tmp_path / name
    source.export_parquet(directory)
    with el.EventStore.from_parquet(directory) as built:
        assert built.head == source.head
    store = el.EventStore()
    assert store.import_parquet(str(directory)) == source.head
