"""EventStore: append, optimistic concurrency, idempotency, transactions, reading, lifecycle."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
import pytest
from contract import EVENT_COLUMNS

import eventlab as el

# The conftest's clock: 2024-01-01T00:00:00Z, one second per event.
START = datetime(2024, 1, 1, tzinfo=UTC)


def make_clock() -> el.SimulatedClock:
    return el.SimulatedClock(START, step=timedelta(seconds=1))


COLUMNS = EVENT_COLUMNS


def at(seconds: int) -> datetime:
    """The time the test clock stamps on its ``seconds``-th event (counting from 0)."""
    return START + timedelta(seconds=seconds)


def history(store: el.EventStore) -> list[tuple]:
    """The whole log as (position, stream_id, version, type, data) tuples."""
    return [(r.position, r.stream_id, r.version, r.type, r.data) for r in store.read_all()]


# ---------------------------------------------------------------------- append


def test_append_returns_the_recorded_events(store):
    records = store.append("order-1", [el.Event("Placed", {"n": 1}), el.Event("Paid", {"n": 2})])
    assert [(r.position, r.stream_id, r.version, r.type, r.data) for r in records] == [
        (1, "order-1", 1, "Placed", {"n": 1}),
        (2, "order-1", 2, "Paid", {"n": 2}),
    ]
    assert [r.recorded_at for r in records] == [at(0), at(1)]
    assert len({r.event_id for r in records}) == 2
    assert store.head == 2
    assert store.read_stream("order-1") == records


def test_append_a_single_event_or_dict(store):
    [one] = store.append("s", el.Event("A", {"i": 1}))
    [two] = store.append("s", {"type": "B", "data": {"i": 2}})
    assert (one.version, two.version) == (1, 2)
    assert history(store) == [(1, "s", 1, "A", {"i": 1}), (2, "s", 2, "B", {"i": 2})]


def test_append_takes_any_iterable_of_events_and_dicts(store):
    # A list of Events only is used as given; other shapes are coerced into a new list.
    events = [el.Event("A", {"i": 1})]
    store.append("s", events)
    events.append(el.Event("Late", {}))  # changing the list afterwards changes nothing
    store.append("s", (el.Event("B", {"i": 2}), {"type": "C", "data": {"i": 3}}))
    store.append("s", (el.Event(t, {"i": i}) for i, t in [(4, "D"), (5, "E")]))
    store.append("s", [{"type": "F", "data": {"i": 6}}, el.Event("G", {"i": 7})])
    assert history(store) == [(n, "s", n, t, {"i": n}) for n, t in enumerate("ABCDEFG", start=1)]


def test_append_nothing_writes_nothing(store, snapshot):
    store.append("s", [el.Event("A", {})])
    before = snapshot(store)
    assert store.append("s", []) == []
    before.assert_same(store)


def test_positions_are_global_and_versions_per_stream(store):
    store.append("a", [el.Event("A1", {})])
    store.append("b", [el.Event("B1", {}), el.Event("B2", {})])
    store.append("a", [el.Event("A2", {})])
    assert history(store) == [
        (1, "a", 1, "A1", {}),
        (2, "b", 1, "B1", {}),
        (3, "b", 2, "B2", {}),
        (4, "a", 2, "A2", {}),
    ]


def test_multi_event_append_is_one_block_of_consecutive_versions(store):
    store.append("s", [el.Event("Before", {})])
    records = store.append("s", [el.Event(f"E{i}", {"i": i}) for i in range(5)])
    assert [r.version for r in records] == [2, 3, 4, 5, 6]
    assert [r.position for r in records] == [2, 3, 4, 5, 6]
    assert store.version("s") == 6


def test_multi_event_append_is_atomic(store, snapshot):
    store.append("s", [el.Event("Before", {})])
    before = snapshot(store)
    with pytest.raises(el.InvalidEventError):
        store.append("s", [el.Event("Good", {}), el.Event("Bad", {"x": {1, 2}})])
    before.assert_same(store)
    # the failed call left no gap behind it
    [record] = store.append("s", [el.Event("After", {})])
    assert (record.position, record.version) == (2, 2)


def test_occurred_at_is_kept_and_defaults_to_recorded_at(store):
    [given, default] = store.append(
        "s", [el.Event("A", {}, occurred_at="2020-02-02T02:02:02.000002"), el.Event("B", {})]
    )
    assert given.occurred_at == datetime(2020, 2, 2, 2, 2, 2, 2, tzinfo=UTC)
    assert given.recorded_at == at(0)
    assert default.occurred_at == default.recorded_at == at(1)


def test_payload_keeps_json_values(store):
    data = {"s": "é ✓", "i": 2**53 + 1, "f": 0.1, "b": False, "n": None, "l": [1, [2, {"x": 3}]]}
    store.append("s", [el.Event("T", data, metadata={"m": [1, 2]})])
    [record] = store.read_stream("s")
    assert record.data == data
    assert record.metadata == {"m": [1, 2]}


# ---------------------------------------------------------------------- expected_version


def test_expected_version_none_appends_at_any_version(store):
    store.append("s", [el.Event("A", {})], expected_version=None)
    store.append("s", [el.Event("B", {})], expected_version=None)
    assert store.version("s") == 2


def test_expected_version_zero_creates_a_new_stream(store):
    [record] = store.append("s", [el.Event("Created", {})], expected_version=0)
    assert record.version == 1


def test_expected_version_n_appends_at_exactly_n(store):
    store.append("s", [el.Event("A", {}), el.Event("B", {})])
    records = store.append("s", [el.Event("C", {}), el.Event("D", {})], expected_version=2)
    assert [r.version for r in records] == [3, 4]
    store.append("s", [el.Event("E", {})], expected_version=4)
    assert store.version("s") == 5


@pytest.mark.parametrize(
    "existing, expected",
    [
        (0, 1),  # the stream does not exist yet
        (0, 5),
        (2, 0),  # 0 requires a new stream
        (2, 1),  # behind
        (2, 3),  # ahead
    ],
)
def test_wrong_expected_version_raises_and_writes_nothing(store, snapshot, existing, expected):
    store.append("other", [el.Event("Noise", {})])
    if existing:
        store.append("s", [el.Event("E", {}) for _ in range(existing)])
    before = snapshot(store)
    with pytest.raises(el.ConcurrencyError) as info:
        store.append("s", [el.Event("New", {}), el.Event("New", {})], expected_version=expected)
    error = info.value
    assert (error.stream_id, error.expected, error.actual) == ("s", expected, existing)
    message = str(error)
    assert f"stream 's' is at version {existing}" in message
    assert f"expected version {expected}" in message
    assert f"expected_version={existing}" in message  # the fix
    before.assert_same(store)


def test_two_writers_one_wins(store):
    """The textbook race: both read version 1, both decide, the second append loses."""
    store.append("account-1", [el.Event("Opened", {})])
    seen_by_a = store.version("account-1")
    seen_by_b = store.version("account-1")
    store.append("account-1", [el.Event("Withdrawn", {"by": "a"})], expected_version=seen_by_a)
    with pytest.raises(el.ConcurrencyError) as info:
        store.append("account-1", [el.Event("Withdrawn", {"by": "b"})], expected_version=seen_by_b)
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert [r.data for r in store.read_stream("account-1")] == [{}, {"by": "a"}]


# ---------------------------------------------------------------------- idempotency


def _absorb(store: el.EventStore) -> None:
    """Make sure earlier appends sit in DuckDB, not only in the store's buffers."""
    store.streams()


@pytest.mark.parametrize("absorbed", [False, True], ids=["buffered", "in-duckdb"])
def test_identical_reappend_returns_the_stored_records(store, snapshot, absorbed):
    events = [
        el.Event("A", {"i": 1}, event_id="id-1", metadata={"correlation_id": "c"}),
        el.Event("B", {"i": 2}, event_id="id-2", occurred_at="2020-01-01T00:00:00"),
    ]
    original = store.append("s", events)
    if absorbed:
        _absorb(store)
    before = snapshot(store)
    again = store.append("s", events)
    assert again == original
    assert [r.to_dict() for r in again] == [r.to_dict() for r in original]
    before.assert_same(store)


def test_identical_reappend_of_a_new_event_object_is_idempotent(store, snapshot):
    [original] = store.append("s", [el.Event("A", {"i": 1, "f": 1.5}, event_id="id-1")])
    before = snapshot(store)
    # a retry builds its event anew; same id and same content
    [again] = store.append("s", [{"type": "A", "data": {"f": 1.5, "i": 1}, "event_id": "id-1"}])
    assert again == original
    before.assert_same(store)


def test_retry_with_its_original_expected_version_is_idempotent(store, snapshot):
    original = store.append("s", [el.Event("A", {}, event_id="id-1")], expected_version=0)
    before = snapshot(store)
    assert store.append("s", [el.Event("A", {}, event_id="id-1")], expected_version=0) == original
    before.assert_same(store)


def test_idempotent_reappend_after_reopen(store_path, snapshot):
    with el.EventStore(store_path, clock=make_clock()) as store:
        original = store.append("s", [el.Event("A", {"i": 1}, event_id="id-1")])
    with el.EventStore(store_path, clock=make_clock()) as store:
        before = snapshot(store)
        assert store.append("s", [el.Event("A", {"i": 1}, event_id="id-1")]) == original
        before.assert_same(store)


@pytest.mark.parametrize(
    "stream, event",
    [
        ("s", el.Event("A", {"i": 2}, event_id="id-1")),  # other data
        ("s", el.Event("Other", {"i": 1}, event_id="id-1")),  # other type
        ("t", el.Event("A", {"i": 1}, event_id="id-1")),  # other stream
        ("s", el.Event("A", {"i": 1}, event_id="id-1", metadata={"x": 1})),  # other metadata
        ("s", el.Event("A", {"i": 1}, event_id="id-1", occurred_at="1999-01-01")),  # other time
    ],
    ids=["data", "type", "stream", "metadata", "occurred_at"],
)
@pytest.mark.parametrize("absorbed", [False, True], ids=["buffered", "in-duckdb"])
def test_same_event_id_with_different_content_raises(store, snapshot, stream, event, absorbed):
    store.append("s", [el.Event("A", {"i": 1}, event_id="id-1")])
    if absorbed:
        _absorb(store)
    before = snapshot(store)
    with pytest.raises(el.DuplicateEventError) as info:
        store.append(stream, [event])
    assert "'id-1'" in str(info.value)
    assert "different content" in str(info.value)
    before.assert_same(store)


def test_partly_stored_batch_raises(store, snapshot):
    store.append("s", [el.Event("A", {}, event_id="id-1")])
    before = snapshot(store)
    with pytest.raises(el.DuplicateEventError, match="id-1"):
        store.append("s", [el.Event("A", {}, event_id="id-1"), el.Event("B", {}, event_id="id-2")])
    before.assert_same(store)


def test_same_event_id_twice_in_one_append_raises(store, snapshot):
    before = snapshot(store)
    with pytest.raises(el.DuplicateEventError, match="twice"):
        store.append("s", [el.Event("A", {}, event_id="x"), el.Event("B", {}, event_id="x")])
    before.assert_same(store)


def test_idempotency_inside_a_transaction(store):
    with store.transaction():
        first = store.append("s", [el.Event("A", {}, event_id="id-1")])
        assert store.append("s", [el.Event("A", {}, event_id="id-1")]) == first
        with pytest.raises(el.DuplicateEventError):
            store.append("s", [el.Event("A", {"other": 1}, event_id="id-1")])
    assert history(store) == [(1, "s", 1, "A", {})]


def test_event_id_of_a_rolled_back_transaction_is_free(store):
    with pytest.raises(KeyError):
        with store.transaction():
            store.append("s", [el.Event("A", {}, event_id="id-1")])
            raise KeyError("boom")
    [record] = store.append("s", [el.Event("B", {"new": True}, event_id="id-1")])
    assert (record.position, record.type, record.data) == (1, "B", {"new": True})


# Where an event with a generated id can be when a caller gives that id back: staged in the
# open transaction, pending as rows (a small commit), pending as an Arrow batch (a big one),
# or absorbed into DuckDB.
_WHERE = ["staged", "pending-rows", "pending-batch", "in-duckdb"]


def _generated(store: el.EventStore, where: str) -> el.RecordedEvent:
    """Append events with generated ids and return one of them, left ``where``."""
    count = 100 if where == "pending-batch" else 2
    records = [store.append(f"g-{i}", el.Event("G", {"i": i}))[0] for i in range(count)]
    if where == "in-duckdb":
        _absorb(store)
    return records[1]


@pytest.mark.parametrize("where", _WHERE)
@pytest.mark.parametrize("file", [False, True], ids=["memory", "file"])
def test_a_generated_event_id_given_back_is_idempotent_or_a_duplicate(
    file, store_path, clock, snapshot, where
):
    with el.EventStore(store_path if file else None, clock=clock) as store:
        with contextlib.ExitStack() as block:
            if where == "staged":
                block.enter_context(store.transaction())
            elif where == "pending-batch":
                block.enter_context(store.transaction())  # 100 events: one Arrow batch
            original = _generated(store, where)
            if where == "pending-batch":
                block.close()
            # an identical retry with the id the store gave it: nothing new
            retry = el.Event("G", {"i": 1}, event_id=original.event_id)
            assert store.append("g-1", retry) == [original]
            # the same id for another event: refused
            other = el.Event("Other", {"x": 9}, event_id=original.event_id)
            with pytest.raises(el.DuplicateEventError, match="different content"):
                store.append("b", other)
            with pytest.raises(el.DuplicateEventError, match="different content"):
                store.append("g-1", el.Event("G", {"i": 2}, event_id=original.event_id))
        before = snapshot(store)
        ids = store.sql("SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM events")
        assert ids.values.tolist() == [[store.head, store.head]]
        assert store.version("g-1") == 1
        before.assert_same(store)


def test_a_seeded_generated_event_id_given_back_is_found(store):
    store.append("a", el.Event("A", {}))
    store.seed_event_ids(7)
    [seeded] = store.append("b", el.Event("B", {}))
    with pytest.raises(el.DuplicateEventError, match=seeded.event_id):
        store.append("c", el.Event("C", {}, event_id=seeded.event_id))
    assert store.append("b", el.Event("B", {}, event_id=seeded.event_id)) == [seeded]
    assert store.head == 2


@pytest.mark.parametrize("absorbed", [False, True], ids=["buffered", "in-duckdb"])
def test_a_retry_is_compared_with_what_was_stored_not_with_a_changed_record(store, absorbed):
    [record] = store.append("cart-1", el.Event("ItemAdded", {"qty": 1}, event_id="cmd-7"))
    record.data["qty"] += 5  # e.g. a reducer that built its state on the event's dict
    if absorbed:
        _absorb(store)
    # (No read before the retries: a read would absorb the buffered record.)
    [again] = store.append("cart-1", el.Event("ItemAdded", {"qty": 1}, event_id="cmd-7"))
    assert (again.position, again.event_id) == (1, "cmd-7")
    with pytest.raises(el.DuplicateEventError, match="different content"):
        store.append("cart-1", el.Event("ItemAdded", {"qty": 6}, event_id="cmd-7"))
    assert store.head == 1
    assert history(store) == [(1, "cart-1", 1, "ItemAdded", {"qty": 1})]


@pytest.mark.parametrize(
    "stored, retried",
    [
        ({"on": True}, {"on": 1}),
        ({"on": True}, {"on": 1.0}),
        ({"n": 1}, {"n": 1.0}),
        ({"n": 0}, {"n": False}),
        ({"n": None}, {}),
        ({"n": [1]}, {"n": [True]}),
    ],
)
@pytest.mark.parametrize("absorbed", [False, True], ids=["buffered", "in-duckdb"])
def test_a_retry_whose_values_differ_in_type_is_a_duplicate(store, absorbed, stored, retried):
    store.append("a", el.Event("Flag", stored, event_id="e1"))
    if absorbed:
        _absorb(store)
    with pytest.raises(el.DuplicateEventError, match="'e1'.*different content"):
        store.append("a", el.Event("Flag", retried, event_id="e1"))
    assert store.append("a", el.Event("Flag", dict(stored), event_id="e1"))[0].data == stored
    assert history(store) == [(1, "a", 1, "Flag", stored)]


def test_a_retry_with_metadata_matches_what_the_stamp_made_of_it(store, snapshot):
    # Metadata is compared as it was stored: with the store's stamp (a command's ids).
    store._stamp = store._make_stamp({"causation_id": "cmd-1", "correlation_id": "tx-1"})
    try:
        event = el.Event("A", {}, metadata={"user": "ann"}, event_id="e1")
        [original] = store.append("s", event)
        assert original.metadata == {
            "user": "ann",
            "causation_id": "cmd-1",
            "correlation_id": "tx-1",
        }
        assert store.append("s", event) == [original]
        store._stamp = store._make_stamp({"causation_id": "cmd-2", "correlation_id": "tx-1"})
        before = snapshot(store)
        with pytest.raises(el.DuplicateEventError, match="different content"):
            store.append("s", event)
        before.assert_same(store)
    finally:
        store._stamp = None


# ---------------------------------------------------------------------- correlation


def test_correlation_and_causation_come_from_metadata(store):
    metadata = {"correlation_id": "corr-1", "causation_id": "cause-1", "user": "ann"}
    [linked, plain, numeric] = store.append(
        "s",
        [
            el.Event("A", {}, metadata=metadata),
            el.Event("B", {}),
            el.Event("C", {}, metadata={"correlation_id": 42}),
        ],
    )
    assert (linked.correlation_id, linked.causation_id) == ("corr-1", "cause-1")
    assert linked.metadata == metadata  # the keys stay in metadata too
    assert (plain.correlation_id, plain.causation_id) == (None, None)
    assert (numeric.correlation_id, numeric.causation_id) == ("42", None)
    frame = store.sql("select correlation_id, causation_id from events order by position")
    assert frame["correlation_id"].tolist()[0] == "corr-1"
    assert frame["causation_id"].tolist()[0] == "cause-1"
    assert frame["correlation_id"].isna().tolist() == [False, True, False]
    assert frame["causation_id"].isna().tolist() == [False, True, True]


# ---------------------------------------------------------------------- transactions


def test_transaction_commits_all_appends(store):
    store.append("a", [el.Event("A0", {})])
    with store.transaction() as same:
        assert same is store
        store.append("a", [el.Event("A1", {})], expected_version=1)
        store.append("b", [el.Event("B1", {}), el.Event("B2", {})])
        store.append("a", [el.Event("A2", {})], expected_version=2)
    assert history(store) == [
        (1, "a", 1, "A0", {}),
        (2, "a", 2, "A1", {}),
        (3, "b", 1, "B1", {}),
        (4, "b", 2, "B2", {}),
        (5, "a", 3, "A2", {}),
    ]
    assert store.head == 5


def test_transaction_that_raises_writes_nothing(store, snapshot):
    store.append("a", [el.Event("A0", {})])
    before = snapshot(store)
    with pytest.raises(KeyError, match="boom"):
        with store.transaction():
            store.append("a", [el.Event("A1", {})])
            store.append("c", [el.Event("C1", {})])
            raise KeyError("boom")
    before.assert_same(store)
    # positions and versions carry on as if the block had never run
    [c] = store.append("c", [el.Event("C1", {})], expected_version=0)
    [a] = store.append("a", [el.Event("A1", {})], expected_version=1)
    assert [(c.position, c.version), (a.position, a.version)] == [(2, 1), (3, 2)]


def test_transaction_that_raises_an_eventlab_error_writes_nothing(store, snapshot):
    store.append("a", [el.Event("A0", {})])
    before = snapshot(store)
    with pytest.raises(el.ConcurrencyError):
        with store.transaction():
            store.append("b", [el.Event("B1", {})])
            store.append("a", [el.Event("A1", {})], expected_version=0)
    before.assert_same(store)


def test_transaction_sees_its_own_versions(store):
    store.append("a", [el.Event("A0", {})])
    with store.transaction():
        store.append("a", [el.Event("A1", {})])
        assert store.version("a") == 2
        assert store.head == 1  # the last *committed* position
    assert store.head == 2


def test_caught_error_inside_a_transaction_keeps_the_rest(store):
    with store.transaction():
        store.append("q", [el.Event("Q1", {})])
        with pytest.raises(el.ConcurrencyError):
            store.append("q", [el.Event("Lost", {})], expected_version=0)
        store.append("q", [el.Event("Q2", {})], expected_version=1)
    assert history(store) == [(1, "q", 1, "Q1", {}), (2, "q", 2, "Q2", {})]


def test_nested_block_that_raises_undoes_only_its_own_appends(store):
    with store.transaction():
        store.append("a", [el.Event("Kept1", {})])
        with pytest.raises(KeyError):
            with store.transaction():
                store.append("b", [el.Event("Undone", {})])
                store.append("a", [el.Event("Undone", {})])
                raise KeyError("inner")
        assert store.version("a") == 1
        assert store.version("b") == 0
        store.append("a", [el.Event("Kept2", {})], expected_version=1)
    # positions stay gapless: the undone events leave no hole
    assert history(store) == [(1, "a", 1, "Kept1", {}), (2, "a", 2, "Kept2", {})]
    assert store.head == 2
    assert store.streams() == ["a"]


def test_nested_block_undone_then_next_append_continues_positions(store):
    store.append("a", [el.Event("A0", {})])
    with store.transaction():
        with pytest.raises(KeyError):
            with store.transaction():
                store.append("b", [el.Event("Undone", {})])
                raise KeyError("inner")
    assert store.head == 1
    [record] = store.append("b", [el.Event("B1", {})])
    assert (record.position, record.version) == (2, 1)
    assert [r.position for r in store.read_all()] == [1, 2]


def test_outer_block_that_raises_undoes_committed_inner_blocks(store, snapshot):
    store.append("a", [el.Event("A0", {})])
    before = snapshot(store)
    with pytest.raises(KeyError):
        with store.transaction():
            with store.transaction():
                store.append("a", [el.Event("Inner", {})])
            store.append("b", [el.Event("Outer", {})])
            raise KeyError("outer")
    before.assert_same(store)


def test_transaction_on_a_file_store_persists(store_path):
    with el.EventStore(store_path, clock=make_clock()) as store:
        with store.transaction():
            store.append("a", [el.Event("A", {})])
            store.append("b", [el.Event("B", {})])
        with pytest.raises(KeyError):
            with store.transaction():
                store.append("c", [el.Event("C", {})])
                raise KeyError
    with el.EventStore(store_path, read_only=True) as store:
        assert history(store) == [(1, "a", 1, "A", {}), (2, "b", 1, "B", {})]


# ---------------------------------------------------------------------- reading


def fill(store: el.EventStore) -> el.EventStore:
    """Stream a: 5 events, stream b: 2, interleaved; types A/B/C; clock +1 s per event."""
    store.append("a", [el.Event("A", {"i": 1}), el.Event("B", {"i": 2})])  # positions 1, 2
    store.append("b", [el.Event("A", {"i": 3})])  # 3
    store.append("a", [el.Event("C", {"i": 4}), el.Event("A", {"i": 5})])  # 4, 5
    store.append("b", [el.Event("B", {"i": 6})])  # 6
    store.append("a", [el.Event("B", {"i": 7})])  # 7
    return store


@pytest.fixture(scope="module")
def filled():
    """A filled store shared by the tests that only read it."""
    with el.EventStore(clock=make_clock()) as store:
        yield fill(store)


@pytest.fixture
def own_filled(store):
    """A filled store of the test's own, for tests that write or may write."""
    return fill(store)


@pytest.mark.parametrize(
    "kwargs, versions",
    [
        ({}, [1, 2, 3, 4, 5]),
        ({"from_version": 2}, [2, 3, 4, 5]),
        ({"to_version": 3}, [1, 2, 3]),
        ({"from_version": 2, "to_version": 4}, [2, 3, 4]),
        ({"from_version": 3, "to_version": 3}, [3]),
        ({"from_version": 6}, []),
        ({"from_version": 4, "to_version": 2}, []),
    ],
)
def test_read_stream_ranges(filled, kwargs, versions):
    records = filled.read_stream("a", **kwargs)
    assert [r.version for r in records] == versions
    assert all(isinstance(r, el.RecordedEvent) and r.stream_id == "a" for r in records)


def test_read_stream_in_version_order(filled):
    assert [(r.version, r.position, r.data["i"]) for r in filled.read_stream("a")] == [
        (1, 1, 1),
        (2, 2, 2),
        (3, 4, 4),
        (4, 5, 5),
        (5, 7, 7),
    ]
    assert [(r.version, r.position) for r in filled.read_stream("b")] == [(1, 3), (2, 6)]


def test_read_stream_of_a_missing_stream_is_empty(filled):
    assert filled.read_stream("nope") == []


def test_read_all_in_position_order(filled):
    records = list(filled.read_all())
    assert [r.position for r in records] == [1, 2, 3, 4, 5, 6, 7]
    assert [r.data["i"] for r in records] == [1, 2, 3, 4, 5, 6, 7]
    assert [r.recorded_at for r in records] == [at(i) for i in range(7)]


def test_read_all_is_a_lazy_iterator(filled):
    reader = filled.read_all(batch_size=2)
    assert iter(reader) is reader
    assert next(reader).position == 1
    assert [r.position for r in reader] == [2, 3, 4, 5, 6, 7]


def test_read_all_survives_writes_and_reads_while_it_iterates(own_filled):
    reader = own_filled.read_all(batch_size=2)
    assert next(reader).position == 1
    own_filled.append("c", [el.Event("New", {})])
    assert own_filled.streams() == ["a", "b", "c"]  # a read in between (absorbs the append)
    assert [r.position for r in own_filled.read_all(after=6)] == [7, 8]
    # the open iterator goes on over the log as it was when it started
    assert [r.position for r in reader] == [2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 7, 100])
def test_read_all_batches_do_not_change_the_result(filled, batch_size):
    assert [r.position for r in filled.read_all(batch_size=batch_size)] == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize("batch_size", [1, 2, 4, 5, 64, 1000])
def test_read_all_records_equal_each_streams_records(store, batch_size):
    # Stream ids in runs of several lengths and interleaved, few and many types,
    # business time given for some events: read_all shares repeated values
    # between records (see reading._batch_values), which must not change them.
    t = datetime(2020, 1, 1, tzinfo=UTC)
    for stream, types in [
        ("a", ["Placed", "Paid", "Paid", "Paid"]),
        ("b", ["Placed", "Shipped"]),
        ("c", ["Placed", "Placed", "Paid", "Shipped"]),
    ]:
        store.append(stream, [el.Event(kind, {"i": i}) for i, kind in enumerate(types)])
    for i in range(12):
        store.append(f"s{i % 3}", [el.Event(f"T{i}", {"i": i}, occurred_at=t if i % 4 else None)])
    store.append("one", [el.Event("Placed", {}, metadata={"correlation_id": "c"})])
    store.append("a", [el.Event("Paid", {}), el.Event("Paid", {})])
    expected = sorted(
        (r for stream in store.streams() for r in store.read_stream(stream)),
        key=lambda r: r.position,
    )
    records = list(store.read_all(batch_size=batch_size))
    assert records == expected
    assert [r.to_dict() for r in records] == [r.to_dict() for r in expected]


@pytest.mark.parametrize(
    "kwargs, positions",
    [
        ({"after": 0}, [1, 2, 3, 4, 5, 6, 7]),
        ({"after": 3}, [4, 5, 6, 7]),
        ({"after": 7}, []),
        ({"after": 100}, []),
        ({"types": "A"}, [1, 3, 5]),
        ({"types": ["B", "C"]}, [2, 4, 6, 7]),
        ({"types": []}, []),
        ({"types": ["Nope"]}, []),
        ({"until": 4}, [1, 2, 3, 4]),
        ({"until": 0}, []),
        ({"until": at(2)}, [1, 2, 3]),  # knowledge time, inclusive
        ({"until": at(2) - timedelta(microseconds=1)}, [1, 2]),
        ({"until": "2024-01-01T00:00:04"}, [1, 2, 3, 4, 5]),  # naive ISO: UTC
        ({"until": datetime(2024, 1, 1, 1, 0, 1, tzinfo=timezone(timedelta(hours=1)))}, [1, 2]),
        ({"after": 1, "types": "A", "until": 4}, [3]),
        ({"after": 2, "types": ["A", "B"], "until": at(5)}, [3, 5, 6]),
    ],
)
def test_read_all_filters(filled, kwargs, positions):
    assert [r.position for r in filled.read_all(**kwargs)] == positions


def test_read_all_of_an_empty_store(store):
    assert list(store.read_all()) == []


def test_version(filled):
    assert filled.version("a") == 5
    assert filled.version("b") == 2
    assert filled.version("nope") == 0


def test_version_of_a_reopened_store(store_path):
    with el.EventStore(store_path) as store:
        store.append("a", [el.Event("A", {}), el.Event("A", {})])
    with el.EventStore(store_path) as store:
        assert store.version("a") == 2
        assert store.version("b") == 0


def test_streams(own_filled):
    assert own_filled.streams() == ["a", "b"]
    own_filled.append("0-first", [el.Event("A", {})])
    assert own_filled.streams() == ["0-first", "a", "b"]


def test_streams_of_an_empty_store(store):
    assert store.streams() == []


def test_events_frame(filled):
    frame = filled.events()
    assert isinstance(frame, pd.DataFrame)
    assert frame.columns.tolist() == COLUMNS
    records = list(filled.read_all())
    assert frame.to_dict("records") == [r.to_dict() for r in records]
    assert frame["position"].tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert frame["data"].tolist() == [{"i": i} for i in range(1, 8)]
    assert frame["metadata"].tolist() == [{}] * 7
    assert frame["recorded_at"].tolist() == [at(i) for i in range(7)]
    assert str(frame["recorded_at"].dt.tz) in ("UTC", "Etc/UTC")
    assert str(frame["occurred_at"].dt.tz) in ("UTC", "Etc/UTC")


@pytest.mark.parametrize(
    "args, kwargs, positions",
    [
        (("a",), {}, [1, 2, 4, 5, 7]),
        (("b",), {"types": "B"}, [6]),
        ((), {"types": ["A"]}, [1, 3, 5]),
        ((), {"after": 5}, [6, 7]),
        ((), {"until": 2}, [1, 2]),
        ((), {"until": at(3)}, [1, 2, 3, 4]),
        (("nope",), {}, []),
    ],
)
def test_events_frame_filters(filled, args, kwargs, positions):
    frame = filled.events(*args, **kwargs)
    assert frame.columns.tolist() == COLUMNS
    assert frame["position"].tolist() == positions


def test_events_frame_of_an_empty_store(store):
    frame = store.events()
    assert frame.columns.tolist() == COLUMNS
    assert len(frame) == 0


def test_sql_returns_a_frame(filled):
    frame = filled.sql(
        "select stream_id, count(*) as n, max(version) as v from events "
        "group by stream_id order by stream_id"
    )
    assert isinstance(frame, pd.DataFrame)
    assert frame.to_dict("records") == [
        {"stream_id": "a", "n": 5, "v": 5},
        {"stream_id": "b", "n": 2, "v": 2},
    ]


def test_sql_with_parameters(filled):
    by_position = filled.sql("select count(*) as n from events where stream_id = $1", ["b"])
    by_name = filled.sql("select count(*) as n from events where type = $t", {"t": "A"})
    assert by_position["n"].tolist() == [2]
    assert by_name["n"].tolist() == [3]


def test_sql_sees_every_acknowledged_event(store):
    store.append("a", [el.Event("A", {})])
    assert store.sql("select count(*) as n from events")["n"].tolist() == [1]
    store.append("a", [el.Event("A", {})])
    assert store.sql("select count(*) as n from events")["n"].tolist() == [2]


@pytest.mark.parametrize(
    "query",
    [
        "insert into events select * from events",
        "update events set type = 'X'",
        "delete from events",
        "drop table events",
        "create table notes (t varchar)",
        "alter table events add column x int",
        "copy events to '/tmp/eventlab-test-should-not-exist.csv'",
        "select 1; delete from events",
        "truncate events",
    ],
)
def test_sql_rejects_writes(own_filled, snapshot, query):
    before = snapshot(own_filled)
    with pytest.raises(el.EventlabError) as info:
        own_filled.sql(query)
    assert "store.sql() is for reading" in str(info.value)
    assert "store.append()" in str(info.value)
    before.assert_same(own_filled)


@pytest.mark.parametrize(
    "query", ["SET GLOBAL TimeZone='Asia/Kolkata'", "SET TimeZone='America/New_York'"]
)
def test_sql_cannot_take_the_store_out_of_utc(own_filled, tmp_path, query):
    # sql() may refuse the statement or run it harmlessly; either way every
    # timestamp the store gives out afterwards is still UTC.
    with contextlib.suppress(el.EventlabError):
        own_filled.sql(query)
    assert own_filled.sql("select current_setting('TimeZone') as tz")["tz"].tolist() == ["UTC"]
    frame = own_filled.events()
    assert str(frame["recorded_at"].dt.tz) in ("UTC", "Etc/UTC")
    assert [t.isoformat() for t in frame["recorded_at"]][:1] == [START.isoformat()]
    clock = own_filled.clock
    clock.advance(datetime(2024, 1, 1, 23, 59, 59, tzinfo=UTC) - clock.current)
    own_filled.append("late", [el.Event("L", {}), el.Event("L", {})])  # 23:59:59, 00:00:00
    own_filled.export_parquet(tmp_path / "lake", partition_by="day")
    assert sorted(p.name for p in (tmp_path / "lake").iterdir()) == [
        "day=2024-01-01",
        "day=2024-01-02",
    ]


def test_sql_errors_are_eventlab_errors(filled):
    with pytest.raises(el.EventlabError, match="cannot parse the SQL query"):
        filled.sql("selec 1")
    with pytest.raises(el.EventlabError, match="SQL query failed"):
        filled.sql("select * from no_such_table")


# ---------------------------------------------------------------------- file stores


def test_file_store_is_created_on_first_use(store_path):
    assert not store_path.exists()
    with el.EventStore(store_path) as store:
        assert store.head == 0
        assert store.streams() == []
    assert store_path.exists()


def test_file_store_persists_across_close_and_reopen(file_store, store_path):
    file_store.append("a", [el.Event("A", {"i": 1}, metadata={"correlation_id": "c"})])
    file_store.append("b", [el.Event("B", {"i": 2}, occurred_at="2020-01-01")])
    before = file_store.sql("select * from events order by position")
    records = list(file_store.read_all())
    file_store.close()
    with el.EventStore(store_path, clock=el.SimulatedClock("2030-01-01")) as reopened:
        after = reopened.sql("select * from events order by position")
        pd.testing.assert_frame_equal(after, before)
        assert list(reopened.read_all()) == records
        assert reopened.head == 2
        assert reopened.streams() == ["a", "b"]
        [more] = reopened.append("a", [el.Event("A", {"i": 3})], expected_version=1)
        assert (more.position, more.version) == (3, 2)
        assert more.recorded_at == datetime(2030, 1, 1, tzinfo=UTC)
    with el.EventStore(store_path) as again:
        assert history(again) == [
            (1, "a", 1, "A", {"i": 1}),
            (2, "b", 1, "B", {"i": 2}),
            (3, "a", 2, "A", {"i": 3}),
        ]


def test_file_store_accepts_a_string_path(store_path):
    with el.EventStore(str(store_path)) as store:
        store.append("a", [el.Event("A", {})])
    with el.EventStore(store_path) as store:
        assert store.version("a") == 1


def test_context_manager_closes_the_store(store_path):
    with el.EventStore(store_path) as store:
        assert not store.closed
        store.append("a", [el.Event("A", {})])
    assert store.closed
    with pytest.raises(el.StoreClosedError):
        store.append("a", [el.Event("A", {})])


def test_context_manager_closes_on_error(store_path):
    with pytest.raises(KeyError):
        with el.EventStore(store_path) as store:
            store.append("a", [el.Event("A", {})])
            raise KeyError
    assert store.closed
    # what was appended before the error is kept, and the file is free again
    with el.EventStore(store_path) as store:
        assert store.version("a") == 1


def test_close_twice_is_harmless(store):
    store.close()
    store.close()
    assert store.closed


# ---------------------------------------------------------------------- read-only


@pytest.fixture(scope="module")
def read_only_file(tmp_path_factory):
    """A store file with three events, and a Parquet export to try importing."""
    where = tmp_path_factory.mktemp("read_only")
    path = where / "store.duckdb"
    with el.EventStore(path, clock=make_clock()) as writer:
        writer.append("a", [el.Event("A", {"i": 1}), el.Event("B", {"i": 2})])
        writer.append("b", [el.Event("C", {"i": 3})])
    with el.EventStore(clock=make_clock()) as other:
        other.append("z", [el.Event("Z", {})])
        other.export_parquet(where / "lake")
    return path


@pytest.fixture(scope="module")
def read_only_store(read_only_file):
    """Shared: the tests that use it only read, or fail to write."""
    with el.EventStore(read_only_file, read_only=True) as store:
        yield store


def test_read_only_store_reads(read_only_store):
    assert read_only_store.read_only
    assert history(read_only_store) == [
        (1, "a", 1, "A", {"i": 1}),
        (2, "a", 2, "B", {"i": 2}),
        (3, "b", 1, "C", {"i": 3}),
    ]
    assert read_only_store.version("a") == 2
    assert read_only_store.streams() == ["a", "b"]
    assert read_only_store.events()["position"].tolist() == [1, 2, 3]
    assert read_only_store.sql("select count(*) as n from events")["n"].tolist() == [3]
    assert [r.version for r in read_only_store.read_stream("a", from_version=2)] == [2]


WRITE_ATTEMPTS = {
    "append": lambda s: s.append("a", [el.Event("X", {})]),
    "append new stream": lambda s: s.append("new", [el.Event("X", {})], expected_version=0),
    "append with event_id": lambda s: s.append("a", [el.Event("X", {}, event_id="new")]),
    "transaction": lambda s: s.transaction().__enter__(),
    "append_frame": lambda s: s.append_frame(
        pd.DataFrame({"stream_id": ["new"], "type": ["X"], "data": [{}]})
    ),
    "import_parquet": lambda s: s.import_parquet(s.path.parent / "lake"),
}


@pytest.mark.parametrize("operation", list(WRITE_ATTEMPTS))
def test_read_only_store_refuses_writes(read_only_store, snapshot, operation):
    before = snapshot(read_only_store)
    with pytest.raises(el.ReadOnlyError) as info:
        WRITE_ATTEMPTS[operation](read_only_store)
    assert "read_only=True" in str(info.value)
    assert "without read_only" in str(info.value)
    before.assert_same(read_only_store)


def test_read_only_file_is_unchanged_after_refused_writes(tmp_path, snapshot):
    path = tmp_path / "store.duckdb"
    with el.EventStore(path, clock=make_clock()) as writer:
        writer.append("a", [el.Event("A", {"i": 1})])
        writer.export_parquet(tmp_path / "lake")  # for the import attempt
        before = snapshot(writer)
    with el.EventStore(path, read_only=True) as reader:
        for attempt in WRITE_ATTEMPTS.values():
            with pytest.raises(el.ReadOnlyError):
                attempt(reader)
    with el.EventStore(path) as writer:
        before.assert_same(writer)


def test_in_memory_store_cannot_be_read_only():
    with pytest.raises(el.EventlabError) as info:
        el.EventStore(read_only=True)
    assert "in-memory store cannot be read-only" in str(info.value)
    assert "path" in str(info.value)


def test_read_only_open_of_a_missing_file_is_refused(tmp_path):
    missing = tmp_path / "missing.duckdb"
    with pytest.raises(el.EventlabError, match="no store at"):
        el.EventStore(missing, read_only=True)
    assert not missing.exists()


# ---------------------------------------------------------------------- closed stores


CLOSED_OPERATIONS = {
    "append": lambda s, lake: s.append("a", [el.Event("A", {})]),
    "transaction": lambda s, lake: s.transaction().__enter__(),
    "read_stream": lambda s, lake: s.read_stream("a"),
    "read_all": lambda s, lake: list(s.read_all()),
    "version": lambda s, lake: s.version("a"),
    "streams": lambda s, lake: s.streams(),
    "events": lambda s, lake: s.events(),
    "sql": lambda s, lake: s.sql("select 1"),
    "append_frame": lambda s, lake: s.append_frame(
        pd.DataFrame({"stream_id": ["a"], "type": ["A"], "data": [{}]})
    ),
    "export_parquet": lambda s, lake: s.export_parquet(lake),
}


@pytest.fixture(scope="module")
def closed_stores(tmp_path_factory):
    """A closed in-memory store and a closed file store, both with one event."""
    stores = {}
    for kind in ("memory", "file"):
        path = None if kind == "memory" else tmp_path_factory.mktemp("closed") / "s.duckdb"
        store = el.EventStore(path)
        store.append("a", [el.Event("A", {})])
        store.version("a")  # warm whatever caches the store keeps
        store.close()
        stores[kind] = store
    return stores


@pytest.mark.parametrize("operation", sorted(CLOSED_OPERATIONS))
@pytest.mark.parametrize("kind", ["memory", "file"])
def test_closed_store_raises(closed_stores, tmp_path, operation, kind):
    store = closed_stores[kind]
    with pytest.raises(el.StoreClosedError) as info:
        CLOSED_OPERATIONS[operation](store, tmp_path / "lake")
    assert "closed" in str(info.value)
    assert "el.EventStore(" in str(info.value)  # the fix: open a new one


def test_sync_false_writes_the_journal_without_flushing_it(store_path, monkeypatch):
    import os

    flushes: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (flushes.append(fd), real(fd)))
    with el.EventStore(store_path, sync=False) as store:
        store.append("a", [el.Event("Created", {})])
        assert flushes == []
        journal = store_path.with_name(store_path.name + ".journal")
        assert journal.stat().st_size > 0  # written, for a crash to recover
    with el.EventStore(store_path) as store:
        store.append("a", [el.Event("Changed", {})])
        assert len(flushes) == 1
        assert [e.type for e in store.read_stream("a")] == ["Created", "Changed"]


def test_a_big_commit_runs_no_garbage_collection_while_converting_its_rows(tmp_path):
    """The transpose in rows_to_batch makes an iterator per row; a collection in the
    middle would move them all to the oldest generation (and so bring on a full
    collection of the heap later). The collector waits until the batch is built."""
    import gc

    from eventlab import schema

    collections: list[str] = []  # collections that met the transpose's iterators
    converting = []

    def watch(phase: str, info: dict) -> None:
        if phase == "start" and converting:
            young = gc.get_objects(0) + gc.get_objects(1)
            row_iterators = sum(type(o) is type(iter(())) for o in young)
            if row_iterators:
                collections.append(f"generation {info['generation']}: {row_iterators}")

    original = schema.rows_to_batch

    def rows_to_batch(rows):
        converting.append(True)
        try:
            return original(rows)
        finally:
            converting.pop()

    events = [el.Event("ItemAdded", {"n": n}) for n in range(3000)]
    threshold = gc.get_threshold()
    gc.callbacks.append(watch)
    gc.set_threshold(10)  # a collection every few allocations, were the collector on
    try:
        with el.EventStore(tmp_path / "s.duckdb") as store:
            import eventlab.pending

            eventlab.pending.rows_to_batch = rows_to_batch
            try:
                store.append("order-1", events)
            finally:
                eventlab.pending.rows_to_batch = original
            assert gc.isenabled()  # back on afterwards
            assert store.version("order-1") == 3000
    finally:
        gc.callbacks.remove(watch)
        gc.set_threshold(*threshold)
    assert collections == []


def test_rows_to_batch_leaves_a_collector_that_was_off_off():
    import gc

    from eventlab.schema import rows_to_batch

    gc.disable()
    try:
        rows_to_batch([(1, "e", "s", 1, "T", "{}", "{}", None, None, 0, 0, 1)])
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize("uniform", [False, True], ids=["varied", "uniform"])
def test_rows_to_batch_holds_exactly_the_rows(uniform):
    """Columns holding one value throughout (repeated by Arrow) and varied ones (read
    value by value) give the same batch as Arrow reading every row."""
    import pyarrow as pa

    from eventlab.schema import ARROW_SCHEMA, rows_to_batch

    def row(n: int) -> tuple:
        k = 0 if uniform else n
        return (
            7 + n,
            f"id-{n}",
            "order-1" if uniform else f"order-{n % 2}",
            1 + k,
            "Placed" if uniform else ["Placed", "Paid"][n % 2],
            '{"a":1}' if uniform else f'{{"a":{n}}}',
            "{}" if uniform else ["{}", '{"k":"v"}'][n % 2],
            None if uniform else [None, "c-1"][n % 2],
            None if uniform else ["x", None][n % 2],
            1_700_000_000_000_000 + k,
            1_700_000_000_000_000 - k,
            1 if uniform else 1 + n % 3,
        )

    rows = [row(n) for n in range(5)]
    batch = rows_to_batch(rows)
    assert batch.schema == ARROW_SCHEMA
    for name, values in zip(ARROW_SCHEMA.names, zip(*rows, strict=True), strict=True):
        column = batch.column(name)
        if name in ("recorded_at", "occurred_at"):
            column = column.cast(pa.int64())
        assert column.to_pylist() == list(values), name
