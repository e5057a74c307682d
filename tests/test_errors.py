"""Bad input: a clear EventlabError naming the problem and the fix, and nothing written."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime
from decimal import Decimal

import pandas as pd
import pytest

import eventlab as el

ERRORS = [
    "CircuitOpenError",
    "CommandError",
    "ConcurrencyError",
    "CsvError",
    "DuplicateEventError",
    "InvalidEventError",
    "JournalError",
    "MissingColumnsError",
    "ParquetError",
    "PlotError",
    "ProjectionError",
    "QueryError",
    "ReadOnlyError",
    "ReplayError",
    "ResilienceError",
    "SagaError",
    "StoreClosedError",
    "StoreLockedError",
    "UnknownEventError",
    "UpcastError",
    "VersionNotFoundError",
    "XesError",
]


def test_every_public_error_is_an_eventlab_error():
    public = sorted(name for name in el.__all__ if name.endswith("Error"))
    assert public == sorted(["EventlabError", *ERRORS])
    assert issubclass(el.EventlabError, Exception)
    for name in ERRORS:
        assert issubclass(getattr(el, name), el.EventlabError), name
    # Named for what happened rather than "...Error", as the issue spells it.
    assert issubclass(el.ConsistencyTimeout, el.EventlabError)
    assert issubclass(el.CommandRejected, el.EventlabError)


def test_concurrency_error_carries_its_numbers():
    error = el.ConcurrencyError("s", 1, 3)
    assert (error.stream_id, error.expected, error.actual) == ("s", 1, 3)
    assert "expected_version=3" in str(error)


# ---------------------------------------------------------------------- a store with history


@pytest.fixture(scope="module")
def busy():
    """A store with two streams, shared: every test here must leave it as it found it.

    Each test compares its own before/after snapshots, so a failing call that
    does write something fails that test, not the ones after it.
    """
    with el.EventStore(clock=el.SimulatedClock("2024-01-01")) as store:
        store.append("a", [el.Event("A", {"i": 1}), el.Event("B", {"i": 2})])
        store.append("b", [el.Event("A", {"i": 3})])
        store.streams()  # absorbed into DuckDB
        store.append("a", [el.Event("C", {"i": 4})])  # buffered until the first read
        yield store


class Unserialisable:
    def __repr__(self) -> str:
        return "<Unserialisable>"


# ---------------------------------------------------------------------- JSON payloads


@pytest.mark.parametrize(
    "data, metadata, key",
    [
        ({"when": datetime(2024, 1, 1, 12)}, None, "events[0].data['when']"),
        ({"a": {"b": object()}}, None, "events[0].data['a']['b']"),
        ({"ok": 1, "xs": [1, 2, {"deep": Unserialisable()}]}, None, "data['xs'][2]['deep']"),
        ({"price": Decimal("1.10")}, None, "events[0].data['price']"),
        ({"tags": {"x", "y"}}, None, "events[0].data['tags']"),
        ({"ratio": float("nan")}, None, "events[0].data['ratio']"),
        ({"ratio": float("inf")}, None, "events[0].data['ratio']"),
        ({(1, 2): "tuple key"}, None, "events[0].data key (1, 2)"),
        ({}, {"user": object()}, "events[0].metadata['user']"),
        ({}, {"trace": {"at": datetime(2024, 1, 1)}}, "events[0].metadata['trace']['at']"),
    ],
)
def test_unserialisable_payload_names_the_key(busy, snapshot, data, metadata, key):
    before = snapshot(busy)
    with pytest.raises(el.InvalidEventError) as info:
        busy.append("a", [el.Event("Bad", data, metadata=metadata)])
    message = str(info.value)
    assert key in message
    assert "is not JSON-serialisable" in message
    assert "store plain JSON values" in message  # the fix
    before.assert_same(busy)


def test_datetime_payload_error_says_how_to_convert(busy, snapshot):
    before = snapshot(busy)
    with pytest.raises(el.InvalidEventError, match=r"convert datetimes with \.isoformat\(\)"):
        busy.append("a", [el.Event("Bad", {"when": datetime(2024, 1, 1)})])
    before.assert_same(busy)


def test_bad_event_later_in_a_batch_writes_none_of_it(busy, snapshot):
    before = snapshot(busy)
    batch = [el.Event("Good", {}), el.Event("Good", {}), el.Event("Bad", {"x": object()})]
    with pytest.raises(el.InvalidEventError, match=r"events\[2\]\.data\['x'\]"):
        busy.append("a", batch, expected_version=busy.version("a"))
    before.assert_same(busy)


def test_self_referencing_payload_is_rejected(busy, snapshot):
    data: dict = {"name": "loop"}
    data["self"] = data
    before = snapshot(busy)
    with pytest.raises(el.InvalidEventError):
        busy.append("a", [el.Event("Bad", data)])
    before.assert_same(busy)


def test_payload_error_inside_a_transaction_writes_nothing(busy, snapshot):
    before = snapshot(busy)
    with pytest.raises(el.InvalidEventError):
        with busy.transaction():
            busy.append("c", [el.Event("Good", {})])
            busy.append("c", [el.Event("Bad", {"x": object()})])
    before.assert_same(busy)


# ---------------------------------------------------------------------- stream ids and types


@pytest.mark.parametrize("stream_id", ["", "   ", "\t\n", None, 42, b"a", ["a"], 1.5])
def test_bad_stream_id(busy, snapshot, stream_id):
    before = snapshot(busy)
    with pytest.raises(el.InvalidEventError) as info:
        busy.append(stream_id, [el.Event("A", {})])
    assert "stream_id must be a non-empty string" in str(info.value)
    assert repr(stream_id)[:20] in str(info.value)
    before.assert_same(busy)


def test_a_str_subclass_and_an_int_subclass_are_accepted(busy):
    # The hot path checks exact types first; a subclass goes through the full check.
    class StreamName(str):
        pass

    class Version(int):
        pass

    [record] = busy.append(StreamName("fresh-1"), [el.Event("A", {})], expected_version=Version(0))
    assert (record.stream_id, record.version) == ("fresh-1", 1)
    busy.append("fresh-1", [el.Event("B", {})], expected_version=Version(1))
    assert busy.version("fresh-1") == 2


@pytest.mark.parametrize("stream_id", ["", None, 7])
def test_bad_stream_id_in_reads(busy, stream_id):
    for read in (busy.read_stream, busy.version):
        with pytest.raises(el.InvalidEventError, match="stream_id must be a non-empty string"):
            read(stream_id)


@pytest.mark.parametrize("event_type", ["", "  ", None, 42, b"A"])
def test_bad_type_in_an_event_dict(busy, snapshot, event_type):
    before = snapshot(busy)
    with pytest.raises(el.InvalidEventError) as info:
        busy.append("a", [{"type": "Fine", "data": {}}, {"type": event_type, "data": {}}])
    assert "event type must be a non-empty string" in str(info.value)
    before.assert_same(busy)


@pytest.mark.parametrize("event_type", ["", None, 42])
def test_bad_type_in_an_event(event_type):
    with pytest.raises(el.InvalidEventError, match="event type must be a non-empty string"):
        el.Event(event_type, {})


# ---------------------------------------------------------------------- expected_version


@pytest.mark.parametrize("expected", [-1, -100, 1.5, 1.0, "1", True, False, [1], object()])
def test_bad_expected_version(busy, snapshot, expected):
    before = snapshot(busy)
    with pytest.raises(el.InvalidEventError) as info:
        busy.append("a", [el.Event("A", {})], expected_version=expected)
    message = str(info.value)
    assert message.startswith("expected_version must be None (any version), 0 (a new stream)")
    assert f"got {expected!r}" in message
    before.assert_same(busy)


def test_bad_expected_version_is_not_a_concurrency_error(busy):
    # a programming mistake, not a race: retrying cannot fix it
    with pytest.raises(el.InvalidEventError) as info:
        busy.append("a", [el.Event("A", {})], expected_version=-1)
    assert not isinstance(info.value, el.ConcurrencyError)


# ---------------------------------------------------------------------- read-only stores


def test_append_to_a_read_only_store(store_path, snapshot):
    with el.EventStore(store_path) as writer:
        writer.append("a", [el.Event("A", {"i": 1})])
    with el.EventStore(store_path, read_only=True) as reader:
        before = snapshot(reader)
        with pytest.raises(el.ReadOnlyError) as info:
            reader.append("a", [el.Event("A", {"i": 2})])
        message = str(info.value)
        assert "opened with read_only=True, so it cannot append" in message
        assert f"el.EventStore({str(store_path)!r}) without read_only" in message  # the fix
        before.assert_same(reader)
    with el.EventStore(store_path) as writer:
        before.assert_same(writer)


# ---------------------------------------------------------------------- frames


def test_frame_missing_columns_writes_nothing(busy, snapshot):
    before = snapshot(busy)
    with pytest.raises(el.MissingColumnsError) as info:
        busy.append_frame(pd.DataFrame({"stream_id": ["a"], "kind": ["A"]}))
    message = str(info.value)
    assert "lacks the required column(s) ['type', 'data']" in message
    assert "an event table needs ['stream_id', 'type', 'data']" in message
    before.assert_same(busy)


# ---------------------------------------------------------------------- the same file twice


@pytest.mark.parametrize("read_only", [False, True])
def test_second_store_on_an_open_file_in_this_process(store_path, read_only):
    with el.EventStore(store_path) as first:
        first.append("a", [el.Event("A", {})])
        with pytest.raises(el.StoreLockedError) as info:
            el.EventStore(store_path, read_only=read_only)
        assert "already open in this process" in str(info.value)
        assert "close it first" in str(info.value)
        # the first store is untouched and still works
        [record] = first.append("a", [el.Event("B", {})], expected_version=1)
        assert (record.position, record.version) == (2, 2)
    with el.EventStore(store_path, read_only=read_only) as again:
        assert [(r.position, r.type) for r in again.read_all()] == [(1, "A"), (2, "B")]


# ---------------------------------------------------------------------- a second process


HOLDER = textwrap.dedent(
    """
    import sys
    import eventlab as el

    store = el.EventStore(sys.argv[1])
    store.append("held", [el.Event("Held", {})])
    print("ready", flush=True)
    sys.stdin.read()  # hold the file until the parent closes our stdin
    store.close()
    """
)


def test_second_process_gets_store_locked_error(store_path):
    with el.EventStore(store_path) as store:
        store.append("a", [el.Event("A", {})])
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready", holder.stderr.read()
        for read_only in (False, True):
            with pytest.raises(el.StoreLockedError) as info:
                el.EventStore(store_path, read_only=read_only)
            message = str(info.value)
            assert "another process has it open" in message
            assert "one writing process per database file" in message
            assert "not even with read_only=True" in message
            # what to do
            assert "Close the store in the other process" in message
            assert "read_only=True if you only read" in message
            assert "copy of the file" in message
            assert "export_parquet" in message
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert holder.returncode == 0, holder.stderr.read()
    # the refused opens changed nothing: both writers' events are there
    with el.EventStore(store_path, read_only=True) as store:
        assert [(r.position, r.stream_id, r.type) for r in store.read_all()] == [
            (1, "a", "A"),
            (2, "held", "Held"),
        ]
