"""Reading ahead (eventlab.read_ahead) and the bulk conversion of read batches to records."""

from __future__ import annotations

import threading
import time

import duckdb
import numpy as np
import pyarrow as pa
import pytest

import eventlab as el
from eventlab.read_ahead import ReadAheads
from eventlab.reading import _int_values

THREAD = "eventlab-read-ahead"


def read_ahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD]


def batch(*values: int) -> pa.RecordBatch:
    return pa.record_batch({"n": pa.array(values, pa.int64())})


@pytest.fixture
def long_store(store_path, clock):
    """A file store of 50 streams of 6 events (300 events), closed by the test's end."""
    with el.EventStore(store_path, clock=clock) as store:
        store.append_frame(
            pa.table(
                {
                    "stream_id": [f"s{i // 6}" for i in range(300)],
                    "type": ["A", "B", "C"] * 100,
                    "data": [f'{{"i": {i}}}' for i in range(300)],
                }
            )
        )
        yield store


def test_a_long_read_reads_ahead_and_returns_every_event_in_order(long_store):
    expected = long_store.sql("SELECT position, event_id, data FROM events ORDER BY position")
    reader = long_store.read_all(batch_size=7)
    first = next(reader)
    assert len(read_ahead_threads()) == 1  # the read is longer than a batch
    records = [first, *reader]
    assert [r.position for r in records] == list(range(1, 301))
    assert [r.event_id for r in records] == expected["event_id"].tolist()
    assert [r.data["i"] for r in records] == list(range(300))
    assert [(r.stream_id, r.version) for r in records[:7]] == [
        ("s0", 1), ("s0", 2), ("s0", 3), ("s0", 4), ("s0", 5), ("s0", 6), ("s1", 1)
    ]  # fmt: skip
    assert read_ahead_threads() == []  # the thread ends with the read


def test_a_filtered_read_reads_ahead_too(long_store):
    # A filter can make DuckDB return batches shorter than batch_size mid-read.
    records = list(long_store.read_all(types=["B"], batch_size=8))
    assert [r.position for r in records] == list(range(2, 301, 3))


def test_a_read_within_one_batch_starts_no_thread(long_store):
    reader = long_store.read_all(after=290, batch_size=100)
    assert next(reader).position == 291
    assert read_ahead_threads() == []
    assert [r.position for r in reader] == list(range(292, 301))


def test_an_abandoned_read_stops_its_thread(long_store):
    reader = long_store.read_all(batch_size=5)
    assert [next(reader).position for _ in range(12)] == list(range(1, 13))
    assert len(read_ahead_threads()) == 1
    del reader  # the generator's cleanup stops the thread and waits for it
    assert read_ahead_threads() == []


def test_closing_the_store_mid_read_stops_the_thread_and_the_read(store_path, clock):
    store = el.EventStore(store_path, clock=clock)
    store.append_frame(
        pa.table({"stream_id": ["s"] * 100, "type": ["A"] * 100, "data": ["{}"] * 100})
    )
    reader = store.read_all(batch_size=10)
    assert next(reader).position == 1
    store.close()  # DuckDB would refuse while the thread fetches: the store stops it first
    assert read_ahead_threads() == []
    # The batch already converted is still handed out; then the read says why it ends.
    assert [r.position for r in (next(reader) for _ in range(9))] == list(range(2, 11))
    with pytest.raises(el.StoreClosedError, match="closed while this read_all"):
        next(reader)


def test_closing_after_the_last_batch_was_fetched_ends_the_read_normally(long_store):
    reader = long_store.read_all(batch_size=150)
    records = [next(reader) for _ in range(151)]  # into the second and last batch
    for thread in read_ahead_threads():
        thread.join()  # it has handed over the end of the results
    long_store.close()
    records += list(reader)  # the rest of the batch in hand, then the end: no error
    assert [r.position for r in records] == list(range(1, 301))


def test_a_fetch_error_reaches_the_reader_unchanged():
    def failing():
        yield batch(1, 2)
        yield batch(3, 4)
        raise duckdb.IOException("IO Error: the disk went away")

    got = []
    with pytest.raises(duckdb.IOException, match="the disk went away"):
        for b in ReadAheads().batches(failing(), 2):
            got.append(b["n"].to_pylist())
    assert got == [[1, 2], [3, 4]]
    assert read_ahead_threads() == []


@pytest.mark.parametrize("batch_size", [1, 100])  # read ahead, and one batch only
def test_prepare_makes_what_is_handed_out_from_every_batch_in_order(batch_size):
    made_by = []

    def prepare(b: pa.RecordBatch) -> tuple[int, ...]:
        made_by.append(threading.current_thread().name)
        return tuple(b["n"].to_pylist())

    source = [batch(i, i + 1) for i in range(0, 10, 2)] if batch_size == 1 else [batch(7)]
    handed = list(ReadAheads().batches(iter(source), batch_size, prepare))
    assert handed == [tuple(b["n"].to_pylist()) for b in source]
    if batch_size == 1:
        # The caller prepares what it fetched itself (a first full batch); the thread,
        # started meanwhile, the rest.
        assert sorted(made_by) == ["MainThread"] + [THREAD] * 4
    else:
        assert made_by == ["MainThread"]
    assert read_ahead_threads() == []


def test_a_prepare_error_reaches_the_reader_unchanged():
    def prepare(b: pa.RecordBatch) -> int:
        if b["n"][0].as_py() == 4:
            raise ValueError("cannot prepare batch 4")
        return b["n"][0].as_py()

    got = []
    with pytest.raises(ValueError, match="cannot prepare batch 4"):
        for n in ReadAheads().batches(iter([batch(i) for i in range(6)]), 1, prepare):
            got.append(n)
    assert got == [0, 1, 2, 3]
    assert read_ahead_threads() == []


def test_the_thread_fetches_at_most_two_batches_ahead():
    pulled = []

    def counted():
        for i in range(100):
            pulled.append(i)
            yield batch(i)

    batches = ReadAheads().batches(counted(), 1)
    assert next(batches)["n"].to_pylist() == [0]
    time.sleep(0.3)  # time enough for the thread to run ahead as far as it would
    # The batch handed out, the one in the slot, and one waiting for the slot.
    assert len(pulled) <= 4
    assert [b["n"][0].as_py() for b in batches] == list(range(1, 100))
    assert len(pulled) == 100


def test_every_store_stops_only_its_own_readers(tmp_path, clock):
    with el.EventStore(tmp_path / "a.duckdb", clock=clock) as a:
        with el.EventStore(tmp_path / "b.duckdb", clock=clock) as b:
            for store in (a, b):
                store.append("s", [el.Event("A", {"i": i}) for i in range(30)])
            from_a = a.read_all(batch_size=4)
            from_b = b.read_all(batch_size=4)
            assert (next(from_a).position, next(from_b).position) == (1, 1)
        assert [r.data["i"] for r in from_a] == list(range(1, 30))
        with pytest.raises(el.StoreClosedError):
            list(from_b)


# ---------------------------------------------------------------------- int columns


@pytest.mark.parametrize(
    "values",
    [
        [],
        [7],
        [5, 6, 7, 8],  # counting up: a range
        [2**40, 2**40 + 1, 2**40 + 2],
        [1, 3, 2, 4],  # first and last as if counting up, but not
        [9, 9, 9, 9, 3, 3],  # runs: shared objects
        [1, 2, 2, 2, 2, 2, 2, 5],
        [4, 1, 7, 1, 4],  # mostly distinct
        [-3, -2, -1, 0],
    ],
)
def test_int_columns_convert_to_the_same_ints(values):
    converted = _int_values(np.array(values, dtype=np.int64))
    assert converted == values
    assert all(type(v) is int for v in converted)


def test_repeated_ints_share_one_object():
    converted = _int_values(np.array([10**12] * 5 + [10**13] * 5, dtype=np.int64))
    assert converted == [10**12] * 5 + [10**13] * 5
    assert len({id(v) for v in converted}) == 2
