"""EventStore.append_many: many streams in one atomic call, the same as a transaction of appends.

``store.append_many(streams, expected_versions=...)`` must store exactly what
``with store.transaction(): for s, events in streams.items(): store.append(s, events, ...)``
stores, return ``{stream_id: records}`` in input order, and write all of it or none.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventlab as el
from eventlab.events import EventIds

# The conftest's clock: 2024-01-01T00:00:00Z, one second per event.
START = datetime(2024, 1, 1, tzinfo=UTC)

# A str Python's json module produces from the text "\ud800": not encodable as UTF-8.
SURROGATE = json.loads('"\\ud800"')


def at(seconds: int) -> datetime:
    """The time the test clock stamps on its ``seconds``-th event (counting from 0)."""
    return START + timedelta(seconds=seconds)


def summary(stored: dict[str, list[el.RecordedEvent]]) -> dict[str, list[tuple]]:
    """Each stream's records as (position, stream_id, version, type, data)."""
    return {
        stream: [(r.position, r.stream_id, r.version, r.type, r.data) for r in records]
        for stream, records in stored.items()
    }


def history(store: el.EventStore) -> list[tuple]:
    """The whole log as (position, stream_id, version, type, data) tuples."""
    return [(r.position, r.stream_id, r.version, r.type, r.data) for r in store.read_all()]


def fields(record: el.RecordedEvent) -> tuple:
    """Every field of a record, decoded."""
    return tuple(record.to_dict().values())


def three_streams() -> dict[str, list[el.Event]]:
    return {
        "order-1": [el.Event("Placed", {"total": 5})],
        "order-2": [el.Event("Placed", {"total": 7}), el.Event("Paid", {"amount": 7})],
        "order-3": [el.Event("Placed", {"total": 9})],
    }


# ---------------------------------------------------------------------- equivalence property

STREAM_IDS = [f"order-{n}" for n in range(1, 7)]
TYPES = ("Placed", "Paid", "Shipped", "Cancelled")
STEPS = (timedelta(0), timedelta(seconds=1), timedelta(microseconds=250))

scalars = (
    st.integers(-(2**53), 2**53)
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=6)
    | st.floats(allow_nan=False, allow_infinity=False)
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=6)
datas = st.dictionaries(st.sampled_from(["total", "sku", "qty", "note", "lines"]), values)
metadatas = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "user": st.sampled_from(["ann", "bob"]),
        "correlation_id": st.sampled_from(["corr-1", "corr-2"]),
        "causation_id": st.sampled_from(["cause-1", "cause-2"]),
    },
)
occurred = st.none() | st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)
event_specs = st.tuples(st.sampled_from(TYPES), datas, metadatas, occurred)


@st.composite
def scenarios(draw):
    """Pre-existing streams, the append_many call, its expected_versions and the clock."""
    chosen = draw(st.lists(st.sampled_from(STREAM_IDS), min_size=1, max_size=6, unique=True))
    existing = draw(
        st.dictionaries(st.sampled_from(STREAM_IDS), st.integers(1, 3), max_size=4),
        label="existing",
    )
    supply_ids = draw(st.booleans(), label="supply event ids")
    streams = {}
    for stream in chosen:
        specs = draw(st.lists(event_specs, max_size=4), label=stream)
        streams[stream] = [
            el.Event(
                kind,
                data,
                metadata,
                event_id=f"id-{stream}-{index}" if supply_ids and index % 2 == 0 else None,
                occurred_at=when,
            )
            for index, (kind, data, metadata, when) in enumerate(specs)
        ]
    modes = ["none", "dict", "wrong"]
    if not set(chosen) & set(existing):
        modes.append("zero")
    mode = draw(st.sampled_from(modes), label="expected mode")
    if mode == "none":
        expected = None
    elif mode == "zero":
        expected = 0
    else:
        named = draw(st.lists(st.sampled_from(chosen), min_size=1, unique=True), label="named")
        expected = {stream: existing.get(stream, 0) for stream in named}
        if mode == "wrong":
            stream = draw(st.sampled_from(named), label="wrong stream")
            expected[stream] += draw(
                st.sampled_from([-1, 1, 2]).filter(lambda d: expected[stream] + d >= 0)
            )
    step = draw(st.sampled_from(STEPS), label="step")
    seed = draw(st.integers(0, 3), label="seed")
    return existing, streams, expected, step, seed


def expected_of(expected, stream: str) -> int | None:
    if expected is None or isinstance(expected, int):
        return expected
    return expected.get(stream)


def with_transaction_of_appends(store: el.EventStore, streams, expected):
    with store.transaction():
        return {
            stream: store.append(stream, events, expected_version=expected_of(expected, stream))
            for stream, events in streams.items()
        }


def with_append_many(store: el.EventStore, streams, expected):
    return store.append_many(streams, expected_versions=expected)


def run(write, existing, streams, expected, step, seed):
    """Build a store, set it up, seed its ids, write: (outcome, history, events frame)."""
    clock = el.SimulatedClock("2024-03-01T12:00:00", step=step)
    with el.EventStore(clock=clock) as store:
        store.seed_event_ids(seed)  # the setup's ids too, so whole histories compare
        for stream, count in existing.items():
            store.append(stream, [el.Event("Opened", {"i": i}) for i in range(count)])
        store.seed_event_ids(seed)
        try:
            stored = write(store, streams, expected)
        except el.ConcurrencyError as error:
            outcome = ("conflict", error.stream_id, error.expected, error.actual, str(error))
        else:
            outcome = ("ok", list(stored), {s: [tuple(r) for r in rs] for s, rs in stored.items()})
        return outcome, [tuple(r) for r in store.read_all()], store.events()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
def test_append_many_stores_what_a_transaction_of_appends_stores(scenario):
    existing, streams, expected, step, seed = scenario
    many = run(with_append_many, existing, streams, expected, step, seed)
    loop = run(with_transaction_of_appends, existing, streams, expected, step, seed)
    assert many[0] == loop[0]
    assert many[1] == loop[1]
    pd.testing.assert_frame_equal(many[2], loop[2])
    if many[0][0] == "ok":
        assert many[0][1] == list(streams)  # the keys in input order
        appended = sum(len(events) for events in streams.values())
        assert len(many[1]) == sum(existing.values()) + appended


# ---------------------------------------------------------------------- what it returns


def test_returns_each_streams_records_in_input_order(store):
    store.append("order-2", [el.Event("Placed", {"total": 1}), el.Event("Paid", {})])
    store.append("order-9", [el.Event("Placed", {})])
    stored = store.append_many(
        {
            "order-3": [el.Event("Placed", {"total": 3})],
            "order-2": [el.Event("Shipped", {"to": "Lyon"}), el.Event("Delivered", {})],
            "order-1": [el.Event("Placed", {"total": 1}), el.Event("Cancelled", {"why": "x"})],
        }
    )
    assert list(stored) == ["order-3", "order-2", "order-1"]
    assert summary(stored) == {
        "order-3": [(4, "order-3", 1, "Placed", {"total": 3})],
        "order-2": [
            (5, "order-2", 3, "Shipped", {"to": "Lyon"}),
            (6, "order-2", 4, "Delivered", {}),
        ],
        "order-1": [
            (7, "order-1", 1, "Placed", {"total": 1}),
            (8, "order-1", 2, "Cancelled", {"why": "x"}),
        ],
    }
    assert [r.recorded_at for rs in stored.values() for r in rs] == [at(n) for n in range(3, 8)]
    assert len({r.event_id for rs in stored.values() for r in rs}) == 5
    assert store.head == 8
    assert {s: store.version(s) for s in store.streams()} == {
        "order-1": 2,
        "order-2": 4,
        "order-3": 1,
        "order-9": 1,
    }
    for stream in stored:
        assert store.read_stream(stream)[-len(stored[stream]) :] == stored[stream]


def test_expected_versions_forms_that_succeed(store):
    store.append("order-1", [el.Event("Placed", {})])
    first = store.append_many(
        {"order-2": [el.Event("Placed", {})], "order-3": [el.Event("Placed", {})]},
        expected_versions=0,
    )
    assert summary(first) == {
        "order-2": [(2, "order-2", 1, "Placed", {})],
        "order-3": [(3, "order-3", 1, "Placed", {})],
    }
    second = store.append_many(
        {"order-1": [el.Event("Paid", {})], "order-2": [el.Event("Paid", {})]},
        expected_versions=1,
    )
    assert summary(second) == {
        "order-1": [(4, "order-1", 2, "Paid", {})],
        "order-2": [(5, "order-2", 2, "Paid", {})],
    }
    # A dict gives some streams theirs; the others append at any version.
    third = store.append_many(
        {"order-1": [el.Event("Shipped", {})], "order-3": [el.Event("Paid", {})]},
        expected_versions={"order-3": 1},
    )
    assert summary(third) == {
        "order-1": [(6, "order-1", 3, "Shipped", {})],
        "order-3": [(7, "order-3", 2, "Paid", {})],
    }
    # None in the dict means any version, as append's expected_version=None does.
    fourth = store.append_many(
        {"order-2": [el.Event("Shipped", {})]}, expected_versions={"order-2": None}
    )
    assert summary(fourth) == {"order-2": [(8, "order-2", 3, "Shipped", {})]}


def test_takes_what_append_takes_per_stream(store):
    stored = store.append_many(
        {
            "a": el.Event("One", {"i": 1}),  # a single event
            "b": {"type": "Two", "data": {"i": 2}},  # a single dict
            "c": (el.Event("Three", {"i": 3}), {"type": "Four", "data": {"i": 4}}),
            "d": (el.Event(t, {"i": i}) for i, t in [(5, "Five")]),  # a generator
            "e": [],  # nothing
        }
    )
    assert summary(stored) == {
        "a": [(1, "a", 1, "One", {"i": 1})],
        "b": [(2, "b", 1, "Two", {"i": 2})],
        "c": [(3, "c", 1, "Three", {"i": 3}), (4, "c", 2, "Four", {"i": 4})],
        "d": [(5, "d", 1, "Five", {"i": 5})],
        "e": [],
    }
    assert store.streams() == ["a", "b", "c", "d"]
    assert store.version("e") == 0


def test_nothing_to_append_writes_nothing(store, snapshot, clock):
    store.append("s", el.Event("A", {}))
    before = snapshot(store)
    assert store.append_many({}) == {}
    assert store.append_many({"s": [], "t": []}, expected_versions={"s": 1, "t": 0}) == {
        "s": [],
        "t": [],
    }
    before.assert_same(store)
    assert clock.current == at(1)


def test_metadata_columns_and_occurred_at(store):
    stored = store.append_many(
        {
            "order-1": [
                el.Event(
                    "Placed",
                    {"total": 5},
                    metadata={"correlation_id": "corr-1", "causation_id": "cmd-1", "user": "ann"},
                    occurred_at="2020-02-02T02:02:02.000002",
                )
            ],
            "order-2": [el.Event("Placed", {"total": 7})],
        }
    )
    [one], [two] = stored.values()
    assert (one.correlation_id, one.causation_id) == ("corr-1", "cmd-1")
    assert one.metadata == {"correlation_id": "corr-1", "causation_id": "cmd-1", "user": "ann"}
    assert one.occurred_at == datetime(2020, 2, 2, 2, 2, 2, 2, tzinfo=UTC)
    assert one.recorded_at == at(0)
    assert (two.correlation_id, two.causation_id, two.metadata) == (None, None, {})
    assert two.occurred_at == two.recorded_at == at(1)
    assert [fields(r) for r in store.read_all()] == [fields(one), fields(two)]


# ---------------------------------------------------------------------- atomicity


@pytest.mark.parametrize(
    "expected_versions, actual",
    [(0, 2), ({"order-3": 1}, 2), ({"order-1": 0, "order-3": 3}, 2)],
    ids=["int", "dict", "dict-of-two"],
)
def test_concurrency_error_on_the_third_stream_writes_nothing(
    store, snapshot, clock, expected_versions, actual
):
    store.append("order-3", [el.Event("Placed", {}), el.Event("Paid", {})])
    before = snapshot(store)
    clock_before = clock.current
    with pytest.raises(el.ConcurrencyError, match="stream 'order-3' is at version 2") as info:
        store.append_many(three_streams(), expected_versions=expected_versions)
    error = info.value
    wanted = (
        expected_versions if isinstance(expected_versions, int) else expected_versions["order-3"]
    )
    assert (error.stream_id, error.expected, error.actual) == ("order-3", wanted, actual)
    assert f"expected_version={actual}" in str(error)
    before.assert_same(store)
    assert clock.current == clock_before  # a rejected call does not move the clock
    # and the failed call leaves no gap behind it
    stored = store.append_many(three_streams(), expected_versions={"order-3": 2})
    assert [r.position for rs in stored.values() for r in rs] == [3, 4, 5, 6]
    assert [r.version for r in stored["order-3"]] == [3]


def test_concurrency_error_on_a_file_store_writes_nothing_even_after_reopen(
    file_store, store_path, snapshot, clock
):
    file_store.append("order-3", [el.Event("Placed", {}), el.Event("Paid", {})])
    before = snapshot(file_store)
    with pytest.raises(el.ConcurrencyError) as info:
        file_store.append_many(three_streams(), expected_versions=0)
    assert (info.value.stream_id, info.value.expected, info.value.actual) == ("order-3", 0, 2)
    before.assert_same(file_store)
    file_store.close()
    with el.EventStore(store_path, clock=clock) as reopened:
        assert history(reopened) == [(1, "order-3", 1, "Placed", {}), (2, "order-3", 2, "Paid", {})]
        assert reopened.streams() == ["order-3"]
        assert reopened.version("order-1") == reopened.version("order-2") == 0


# ---------------------------------------------------------------------- bad input


def _good_then(stream_id, events=None) -> dict:
    """A call whose first stream is fine and whose second is ``stream_id``."""
    return {"order-1": [el.Event("Placed", {})], stream_id: events or [el.Event("Placed", {})]}


BAD_CALLS = [
    pytest.param(
        lambda s: s.append_many([("order-1", [el.Event("Placed", {})])]),
        r"^streams must be a dict of stream id to events, e\.g\. .*; got list$",
        id="streams-a-list",
    ),
    pytest.param(
        lambda s: s.append_many(None),
        r"^streams must be a dict of stream id to events.*; got NoneType$",
        id="streams-none",
    ),
    pytest.param(
        lambda s: s.append_many("order-1"),
        r"^streams must be a dict of stream id to events.*; got str$",
        id="streams-a-str",
    ),
    pytest.param(
        lambda s: s.append_many(_good_then("")),
        r"^stream_id must be a non-empty string, got ''$",
        id="stream-id-empty",
    ),
    pytest.param(
        lambda s: s.append_many(_good_then("   ")),
        r"^stream_id must be a non-empty string, got '   '$",
        id="stream-id-whitespace",
    ),
    pytest.param(
        lambda s: s.append_many(_good_then(7)),
        r"^stream_id must be a non-empty string, got int: 7$",
        id="stream-id-int",
    ),
    pytest.param(
        lambda s: s.append_many(_good_then(None)),
        r"^stream_id must be a non-empty string, got NoneType: None$",
        id="stream-id-none",
    ),
    pytest.param(
        lambda s: s.append_many(_good_then("order-" + SURROGATE)),
        r"^stream_id .* holds a lone surrogate",
        id="stream-id-surrogate",
    ),
    pytest.param(
        lambda s: s.append_many(three_streams(), expected_versions="0"),
        r"^expected_versions must be None, an int for every stream, or a dict of stream id "
        r"to version; got str$",
        id="expected-a-str",
    ),
    pytest.param(
        lambda s: s.append_many(three_streams(), expected_versions=1.0),
        r"^expected_versions must be None, an int .*; got float$",
        id="expected-a-float",
    ),
    pytest.param(
        lambda s: s.append_many(three_streams(), expected_versions=[0, 0, 0]),
        r"^expected_versions must be None, an int .*; got list$",
        id="expected-a-list",
    ),
    pytest.param(
        lambda s: s.append_many(three_streams(), expected_versions=-1),
        r"^expected_version must be None \(any version\), 0 \(a new stream\) or a positive int "
        r"\(the stream's current version\), got -1$",
        id="expected-negative",
    ),
    pytest.param(
        lambda s: s.append_many(three_streams(), expected_versions=True),
        r"^expected_version must be None .*, got True$",
        id="expected-bool",
    ),
    pytest.param(
        lambda s: s.append_many(three_streams(), expected_versions={"order-2": -3}),
        r"^expected_version must be None .*, got -3$",
        id="expected-dict-negative",
    ),
    pytest.param(
        lambda s: s.append_many(three_streams(), expected_versions={"order-2": False}),
        r"^expected_version must be None .*, got False$",
        id="expected-dict-bool",
    ),
    pytest.param(
        lambda s: s.append_many(three_streams(), expected_versions={"order-2": "1"}),
        r"^expected_version must be None .*, got '1'$",
        id="expected-dict-str",
    ),
    pytest.param(
        lambda s: s.append_many(
            three_streams(), expected_versions={"order-1": 0, "order-9": 0, "order-4": 1}
        ),
        r"^expected_versions names streams that get no events: \['order-4', 'order-9'\]; "
        r"give versions only for the streams appended to$",
        id="expected-names-other-streams",
    ),
    pytest.param(
        lambda s: s.append_many(_good_then("order-2", "Placed")),
        r"^events must be an el\.Event, a dict, or a list of them; got str$",
        id="events-a-str",
    ),
    pytest.param(
        lambda s: s.append_many(_good_then("order-2", [{"data": {}}])),
        r"^an event dict needs a 'type'",
        id="event-without-type",
    ),
    pytest.param(
        lambda s: s.append_many(
            _good_then("order-2", [el.Event("Placed", {}), el.Event("Paid", {"at": {1, 2}})])
        ),
        r"^streams\['order-2'\]\[1\]\.data\['at'\] is not JSON-serialisable \(set: ",
        id="payload-data",
    ),
    pytest.param(
        lambda s: s.append_many(
            _good_then("order-2", [el.Event("Paid", {}, metadata={"user": object()})])
        ),
        r"^streams\['order-2'\]\[0\]\.metadata\['user'\] is not JSON-serialisable \(object: ",
        id="payload-metadata",
    ),
    pytest.param(
        lambda s: s.append_many(_good_then("order-2", [el.Event("Paid", {"x": SURROGATE})])),
        r"^streams\['order-2'\]\[0\]\.data\['x'\] holds a lone surrogate",
        id="payload-surrogate",
    ),
    pytest.param(
        lambda s: s.append_many({"order-2": [el.Event("Paid", {"x": float("nan")})]}),
        r"^events\[0\]\.data\['x'\] is not JSON-serialisable \(float: nan\)",
        id="payload-one-stream",  # one stream: named as append names it
    ),
]


@pytest.mark.parametrize("call, message", BAD_CALLS)
def test_bad_input_raises_and_leaves_the_store_as_it_was(store, snapshot, clock, call, message):
    store.append("order-1", [el.Event("Placed", {})])
    before = snapshot(store)
    ids_before = store._new_ids._next
    with pytest.raises(el.InvalidEventError, match=message):
        call(store)
    before.assert_same(store)
    assert clock.current == at(1)  # the clock did not move
    assert store._new_ids._next == ids_before  # nor did the ids
    # and the store goes on working
    [record] = store.append("order-2", el.Event("Placed", {}))
    assert (record.position, record.version, record.recorded_at) == (2, 1, at(1))


def test_invalid_event_error_is_an_eventlab_error():
    assert issubclass(el.InvalidEventError, el.EventlabError)


def test_bad_payload_names_its_stream_when_event_ids_are_supplied(store, snapshot):
    # Supplied ids take the stream-by-stream path; the message must still name the stream.
    before = snapshot(store)
    with pytest.raises(el.InvalidEventError, match=r"^streams\['order-2'\]\[0\]\.data\['x'\]"):
        store.append_many(
            {
                "order-1": [el.Event("Placed", {}, event_id="id-1")],
                "order-2": [el.Event("Placed", {"x": {1}})],
            }
        )
    before.assert_same(store)


def test_read_only_and_closed_stores_refuse(store_path, clock):
    with el.EventStore(store_path, clock=clock) as store:
        store.append("order-1", el.Event("Placed", {}))
    with pytest.raises(el.StoreClosedError):
        store.append_many(three_streams())
    with el.EventStore(store_path, read_only=True) as reader:
        with pytest.raises(el.ReadOnlyError):
            reader.append_many(three_streams())
        assert history(reader) == [(1, "order-1", 1, "Placed", {})]


# ---------------------------------------------------------------------- supplied event ids


def supplied() -> dict[str, list[el.Event]]:
    return {
        "order-1": [el.Event("Placed", {"total": 5}, event_id="id-1")],
        "order-2": [
            el.Event("Placed", {"total": 7}, event_id="id-2", metadata={"correlation_id": "c"}),
            el.Event("Paid", {"amount": 7}, event_id="id-3", occurred_at="2020-01-01"),
        ],
        "order-3": [el.Event("Placed", {"total": 9})],  # no id: a new event on every call
    }


def test_identical_retry_with_supplied_ids_returns_the_stored_records(store, snapshot):
    calls = {"order-1": supplied()["order-1"], "order-2": supplied()["order-2"]}
    original = store.append_many(calls, expected_versions=0)
    before = snapshot(store)
    again = store.append_many(
        {"order-1": supplied()["order-1"], "order-2": supplied()["order-2"]}, expected_versions=0
    )
    assert list(again) == ["order-1", "order-2"]
    assert again == original
    assert {s: [r.to_dict() for r in rs] for s, rs in again.items()} == {
        s: [r.to_dict() for r in rs] for s, rs in original.items()
    }
    before.assert_same(store)
    store.streams()  # absorbed into DuckDB: the retry finds them there too
    assert store.append_many(calls) == original
    before.assert_same(store)


def test_retry_of_some_streams_with_new_events_in_others(store):
    first = store.append_many({"order-1": supplied()["order-1"]})
    stored = store.append_many(supplied())
    assert stored["order-1"] == first["order-1"]  # the retried stream: its stored records
    assert summary(stored) == {
        "order-1": [(1, "order-1", 1, "Placed", {"total": 5})],
        "order-2": [
            (2, "order-2", 1, "Placed", {"total": 7}),
            (3, "order-2", 2, "Paid", {"amount": 7}),
        ],
        "order-3": [(4, "order-3", 1, "Placed", {"total": 9})],
    }
    assert [r.event_id for r in stored["order-2"]] == ["id-2", "id-3"]
    assert store.head == 4


@pytest.mark.parametrize(
    "change",
    [
        lambda streams: streams["order-2"].__setitem__(
            1, el.Event("Paid", {"amount": 8}, event_id="id-3")
        ),
        lambda streams: streams["order-2"].__setitem__(
            0, el.Event("Other", {"total": 7}, event_id="id-2")
        ),
        lambda streams: streams.update({"order-3": [el.Event("Placed", {}, event_id="id-1")]}),
    ],
    ids=["data", "type", "id-of-another-stream"],
)
def test_supplied_id_with_different_content_raises_and_writes_no_stream(store, snapshot, change):
    store.append_many({"order-1": supplied()["order-1"], "order-2": supplied()["order-2"]})
    before = snapshot(store)
    streams = {"order-0": [el.Event("Placed", {"total": 1})], **supplied()}
    change(streams)
    with pytest.raises(el.DuplicateEventError, match="different content"):
        store.append_many(streams)
    before.assert_same(store)  # order-0 (staged first) is undone with the rest
    assert store.version("order-0") == 0


def test_same_id_in_two_streams_of_one_call_raises(store, snapshot):
    before = snapshot(store)
    with pytest.raises(
        el.DuplicateEventError,
        match=r"event_id 'id-9' is already stored as Placed in stream 'order-1' \(version 1\)",
    ):
        store.append_many(
            {
                "order-1": [el.Event("Placed", {}, event_id="id-9")],
                "order-2": [el.Event("Placed", {}, event_id="id-9")],
            }
        )
    before.assert_same(store)


def test_supplied_ids_and_a_concurrency_error_write_nothing(store, snapshot):
    store.append("order-3", el.Event("Placed", {}))
    before = snapshot(store)
    with pytest.raises(el.ConcurrencyError) as info:
        store.append_many(supplied(), expected_versions=0)
    assert (info.value.stream_id, info.value.expected, info.value.actual) == ("order-3", 0, 1)
    before.assert_same(store)
    # the ids are free: the same events append once the versions are right
    stored = store.append_many(supplied(), expected_versions={"order-3": 1})
    assert [r.event_id for r in stored["order-2"]] == ["id-2", "id-3"]


# ---------------------------------------------------------------------- inside a transaction


@pytest.mark.parametrize("ids", [False, True], ids=["generated-ids", "supplied-ids"])
def test_failing_append_many_keeps_the_outer_transactions_appends(store, ids):
    store.append("order-3", el.Event("Placed", {}))
    streams = supplied() if ids else three_streams()
    with store.transaction():
        [kept] = store.append("order-1", el.Event("Noted", {"n": 1}))
        with pytest.raises(el.ConcurrencyError) as info:
            store.append_many(streams, expected_versions={"order-1": 1, "order-3": 0})
        assert (info.value.stream_id, info.value.expected, info.value.actual) == ("order-3", 0, 1)
        # Nothing of the call is staged: the outer block reads its own append only.
        assert store.version("order-1") == 1
        assert store.version("order-2") == 0
        assert store.read_stream("order-1") == [kept]
        [after] = store.append("order-2", el.Event("Noted", {"n": 2}))
        assert (after.position, after.version) == (3, 1)
    assert history(store) == [
        (1, "order-3", 1, "Placed", {}),
        (2, "order-1", 1, "Noted", {"n": 1}),
        (3, "order-2", 1, "Noted", {"n": 2}),
    ]


def test_failing_append_many_with_a_bad_payload_inside_a_transaction(store):
    with store.transaction():
        store.append("order-1", el.Event("Noted", {}))
        with pytest.raises(el.InvalidEventError, match=r"streams\['order-3'\]\[0\]\.data"):
            store.append_many(
                {"order-2": [el.Event("Placed", {})], "order-3": [el.Event("Placed", {"x": {1}})]}
            )
        assert store.version("order-2") == 0
    assert history(store) == [(1, "order-1", 1, "Noted", {})]


def test_succeeding_append_many_commits_with_the_block(store):
    with store.transaction():
        store.append("order-1", el.Event("Noted", {}))
        stored = store.append_many(three_streams(), expected_versions={"order-1": 1})
        assert store.head == 0  # nothing committed yet
        assert store.version("order-1") == 2  # but the block reads its own writes
        assert store.read_stream("order-2") == stored["order-2"]
        store.append("order-2", el.Event("Shipped", {}), expected_version=2)
    assert history(store) == [
        (1, "order-1", 1, "Noted", {}),
        (2, "order-1", 2, "Placed", {"total": 5}),
        (3, "order-2", 1, "Placed", {"total": 7}),
        (4, "order-2", 2, "Paid", {"amount": 7}),
        (5, "order-3", 1, "Placed", {"total": 9}),
        (6, "order-2", 3, "Shipped", {}),
    ]


def test_block_that_raises_undoes_the_append_many_and_the_appends(store, snapshot, clock):
    store.append("order-0", el.Event("Placed", {}))
    before = snapshot(store)
    with pytest.raises(KeyError, match="boom"):
        with store.transaction():
            store.append("order-1", el.Event("Noted", {}))
            store.append_many(three_streams())
            raise KeyError("boom")
    before.assert_same(store)
    [record] = store.append("order-1", el.Event("Again", {}))
    assert (record.position, record.version) == (2, 1)


def test_nested_block_that_raises_undoes_only_its_append_many(store):
    with store.transaction():
        store.append("order-1", el.Event("Noted", {}))
        with pytest.raises(KeyError):
            with store.transaction():
                store.append_many(three_streams())
                raise KeyError("inner")
        store.append_many({"order-2": [el.Event("Placed", {})]}, expected_versions=0)
    assert history(store) == [(1, "order-1", 1, "Noted", {}), (2, "order-2", 1, "Placed", {})]


# ---------------------------------------------------------------------- bus


@pytest.fixture
def bus_store(clock):
    bus = el.EventBus()
    with el.EventStore(clock=clock, bus=bus) as store:
        yield bus, store


def test_published_after_commit_in_position_order(bus_store):
    bus, store = bus_store
    seen = []
    bus.subscribe(lambda e: seen.append((e.position, e.stream_id, e.version, store.head)))
    store.append("order-2", el.Event("Placed", {}))
    seen.clear()
    store.append_many(three_streams())
    # Every event arrives once the whole call has committed (head 5 from the first one on).
    assert seen == [
        (2, "order-1", 1, 5),
        (3, "order-2", 2, 5),
        (4, "order-2", 3, 5),
        (5, "order-3", 1, 5),
    ]


def test_nothing_published_on_failure(bus_store, snapshot):
    bus, store = bus_store
    seen = []
    bus.subscribe(seen.append)
    store.append("order-3", el.Event("Placed", {}))
    seen.clear()
    before = snapshot(store)
    with pytest.raises(el.ConcurrencyError):
        store.append_many(three_streams(), expected_versions=0)
    with pytest.raises(el.InvalidEventError):
        store.append_many(_good_then("order-2", [el.Event("Paid", {"x": {1}})]))
    with pytest.raises(el.DuplicateEventError):
        store.append_many(
            {
                "order-1": [el.Event("Placed", {}, event_id="id-1")],
                "order-2": [el.Event("Placed", {}, event_id="id-1")],
            }
        )
    assert seen == []
    before.assert_same(store)


def test_published_when_the_outer_block_commits(bus_store):
    bus, store = bus_store
    seen = []
    bus.subscribe(lambda e: seen.append(e.position))
    with store.transaction():
        store.append("order-0", el.Event("Placed", {}))
        store.append_many(three_streams())
        assert seen == []
    assert seen == [1, 2, 3, 4, 5]
    with pytest.raises(KeyError):
        with store.transaction():
            store.append_many(three_streams())
            raise KeyError("boom")
    assert seen == [1, 2, 3, 4, 5]


# ---------------------------------------------------------------------- ids across blocks


def formatted(ids: EventIds, start: int, count: int) -> list[str]:
    return [f"{ids.prefix}{n:012x}" for n in range(start, start + count)]


@pytest.mark.parametrize(
    "start, count",
    [
        (0, 4096),  # exactly one block: no crossing
        (4095, 2),  # two blocks, one id each side
        (4000, 200),  # two blocks
        (4094, 4096 + 4),  # three blocks: 2 + 4096 + 2
        (8192 - 1, 2 * 4096 + 1),  # three blocks: 1 + 4096 + 4096
        (3 * 4096, 2 * 4096),  # two whole blocks from a boundary
        (2**40 - 5, 10),  # far up the counter
    ],
)
def test_take_crossing_blocks_formats_every_id(start, count):
    ids = EventIds(seed=7)
    ids._next = start
    taken = ids.take(count)
    assert taken == formatted(ids, start, count)
    assert ids._next == start + count
    # what follows is formatted the same way, within a block or across
    assert ids.take(3) == formatted(ids, start + count, 3)
    assert ids.take(5000) == formatted(ids, start + count + 3, 5000)
    assert ids._next == start + count + 5003


def test_ids_are_version_8_uuids_and_unique_across_blocks():
    ids = EventIds(seed="blocks")
    taken = ids.take(4090) + ids.take(10) + ids.take(9000) + ids.take(1)
    assert taken == formatted(ids, 0, 13101)
    assert len(set(taken)) == 13101
    for event_id in (taken[0], taken[4095], taken[4096], taken[-1]):
        parsed = uuid.UUID(event_id)
        assert str(parsed) == event_id
        assert parsed.version == 8


def test_a_big_call_gets_the_ids_one_by_one_appends_get():
    def build():
        store = el.EventStore(clock=el.SimulatedClock(START))
        store.seed_event_ids(3)
        store.append("warm-up", [el.Event("A", {}) for _ in range(5)])
        store.seed_event_ids(3)  # a fresh counter: the call takes ids 0 to 8999
        return store

    many, loop = build(), build()
    streams = {f"order-{n}": [el.Event("Placed", {"n": n})] * 3 for n in range(3000)}
    with many, loop:
        many.append_many(streams)
        with loop.transaction():
            for stream, events in streams.items():
                loop.append(stream, events)
        assert [tuple(r) for r in many.read_all()] == [tuple(r) for r in loop.read_all()]
        assert many.head == 5 + 9000


# ---------------------------------------------------------------------- a large call


def test_a_thousand_streams_on_a_file_store_survive_reopen(store_path, clock):
    streams = {
        f"order-{n}": [
            el.Event("Placed", {"order": n, "total": n * 1.5}),
            el.Event("LineAdded", {"sku": f"sku-{n % 17}", "qty": n % 5}),
            el.Event("LineAdded", {"sku": "sku-x", "qty": 1}, metadata={"correlation_id": f"c{n}"}),
            el.Event("Paid", {"amount": n * 1.5}),
            el.Event("Shipped", {"to": ["Lyon", n]}, occurred_at="2023-12-31T23:00:00"),
            el.Event("Delivered", {}),
        ]
        for n in range(1000)
    }
    with el.EventStore(store_path, clock=clock) as store:
        store.append("order-5", el.Event("Created", {}))
        stored = store.append_many(streams, expected_versions={"order-5": 1, "order-6": 0})
        assert list(stored) == list(streams)
        records = [r for rs in stored.values() for r in rs]
        assert [r.position for r in records] == list(range(2, 6002))
        assert [r.version for r in stored["order-5"]] == [2, 3, 4, 5, 6, 7]
        assert [r.version for r in stored["order-999"]] == [1, 2, 3, 4, 5, 6]
        assert records[-1].recorded_at == at(6000)
        assert len({r.event_id for r in records}) == 6000
        assert store.head == 6001
    with el.EventStore(store_path, clock=clock) as reopened:
        read = list(reopened.read_all(after=1))
        assert [tuple(r) for r in read] == [tuple(r) for r in records]
        assert [fields(r) for r in read] == [fields(r) for r in records]
        assert reopened.version("order-5") == 7
        assert len(reopened.streams()) == 1000
        assert reopened.read_stream("order-42") == stored["order-42"]


def test_no_garbage_collection_runs_while_a_call_makes_and_commits_its_records(tmp_path):
    """A big call makes thousands of records that stay alive through the commit; a
    collection meanwhile would walk them all (a fifth of the time) to free none."""
    import gc

    streams = {
        f"order-{n}": [el.Event("Placed", {"n": n}), el.Event("Paid", {})] for n in range(500)
    }
    collections: list[int] = []  # collections that met records, and how many
    calling = []

    def watch(phase: str, info: dict) -> None:
        if phase == "start" and calling:
            young = gc.get_objects(0) + gc.get_objects(1)
            records = sum(type(o) is el.RecordedEvent for o in young)
            if records:
                collections.append(records)

    threshold = gc.get_threshold()
    gc.callbacks.append(watch)
    gc.set_threshold(10)  # a collection every few allocations, were the collector on
    try:
        with el.EventStore(tmp_path / "s.duckdb") as store:
            calling.append(True)
            try:
                stored = store.append_many(streams, expected_versions=0)
            finally:
                calling.pop()
            assert gc.isenabled()  # back on afterwards
            assert store.head == 1000
            assert [e.version for e in stored["order-499"]] == [1, 2]
    finally:
        gc.callbacks.remove(watch)
        gc.set_threshold(*threshold)
    assert collections == []
