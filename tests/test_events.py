"""Event (what a caller appends), dict events, and RecordedEvent (what the store gives back)."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
import uuid
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta, timezone

import pytest
from contract import EVENT_COLUMNS
from hypothesis import given, settings
from hypothesis import strategies as st

import eventlab as el
from eventlab.events import EventIds

RECORD_FIELDS = EVENT_COLUMNS


# ---------------------------------------------------------------------- Event


def test_event_defaults():
    event = el.Event("OrderPlaced")
    assert event.type == "OrderPlaced"
    assert event.data == {}
    assert event.metadata is None
    assert event.event_id is None
    assert event.occurred_at is None


def test_event_keeps_its_fields():
    when = datetime(2024, 5, 1, 12, tzinfo=UTC)
    event = el.Event(
        "OrderPlaced", {"total": 12.5}, metadata={"user": "ann"}, event_id="e-1", occurred_at=when
    )
    assert (event.type, event.data, event.metadata, event.event_id, event.occurred_at) == (
        "OrderPlaced",
        {"total": 12.5},
        {"user": "ann"},
        "e-1",
        when,
    )


def test_event_is_frozen():
    event = el.Event("OrderPlaced", {"total": 1})
    with pytest.raises(FrozenInstanceError):
        event.type = "Other"  # type: ignore[misc]
    assert event.type == "OrderPlaced"


def test_event_default_data_is_a_new_dict_each_time():
    first, second = el.Event("T"), el.Event("T")
    first.data["x"] = 1
    assert second.data == {} and el.Event("T").data == {}


def test_event_is_still_a_dataclass_with_its_constructor():
    event = el.Event("T", {"a": 1}, {"m": 2}, "e-1", "2024-05-01T12:00:00Z")
    assert [f.name for f in dataclasses.fields(el.Event)] == [
        "type",
        "data",
        "metadata",
        "event_id",
        "occurred_at",
    ]
    assert event == el.Event(
        type="T", data={"a": 1}, metadata={"m": 2}, event_id="e-1", occurred_at=event.occurred_at
    )
    assert dataclasses.replace(event, type="U") == el.Event(
        "U", {"a": 1}, {"m": 2}, "e-1", event.occurred_at
    )
    assert pickle.loads(pickle.dumps(event)) == event
    assert repr(el.Event("T")) == (
        "Event(type='T', data={}, metadata=None, event_id=None, occurred_at=None)"
    )
    assert str(inspect.signature(el.Event).parameters["data"].default) == "dict()"
    with pytest.raises(TypeError):
        el.Event()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        el.Event("T", {}, None, None, None, "too many")  # type: ignore[call-arg]


def test_event_type_may_be_a_str_subclass():
    class Name(str):
        pass

    assert el.Event(Name("T")).type == "T"
    with pytest.raises(el.InvalidEventError, match="event type must be a non-empty string"):
        el.Event(Name("  "))


def test_event_uuid_event_id_becomes_a_string():
    event_id = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert el.Event("T", {}, event_id=event_id).event_id == "12345678-1234-5678-1234-567812345678"


@pytest.mark.parametrize(
    "occurred_at, expected",
    [
        (datetime(2024, 5, 1, 12, 0), datetime(2024, 5, 1, 12, 0, tzinfo=UTC)),
        (
            datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
            datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
        ),
        ("2024-05-01T12:00:00", datetime(2024, 5, 1, 12, 0, tzinfo=UTC)),
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, 0, tzinfo=UTC)),
        ("2024-05-01T12:00:00-03:00", datetime(2024, 5, 1, 15, 0, tzinfo=UTC)),
    ],
)
def test_event_occurred_at_is_read_as_utc(occurred_at, expected):
    value = el.Event("T", {}, occurred_at=occurred_at).occurred_at
    assert value == expected
    assert value.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"type": "", "data": {}}, "event type must be a non-empty string"),
        ({"type": "  ", "data": {}}, "event type must be a non-empty string"),
        ({"type": 3, "data": {}}, "event type must be a non-empty string, got int"),
        ({"type": None, "data": {}}, "event type must be a non-empty string, got NoneType"),
        ({"type": "T", "data": [1, 2]}, "event data must be a dict"),
        ({"type": "T", "data": "text"}, "event data must be a dict"),
        ({"type": "T", "data": {}, "metadata": ["x"]}, "event metadata must be a dict or None"),
        ({"type": "T", "data": {}, "event_id": ""}, "event_id must be a non-empty string"),
        ({"type": "T", "data": {}, "event_id": 7}, "event_id must be a non-empty string"),
        ({"type": "T", "data": {}, "occurred_at": "yesterday"}, "occurred_at"),
        ({"type": "T", "data": {}, "occurred_at": 17}, "occurred_at"),
    ],
)
def test_bad_event_is_rejected_at_construction(kwargs, fragment):
    with pytest.raises(el.InvalidEventError) as info:
        el.Event(**kwargs)
    assert fragment in str(info.value)


def test_a_mapping_json_cannot_encode_is_named_by_its_path(store, snapshot):
    import types

    before = snapshot(store)
    event = el.Event("T", {"a": types.MappingProxyType({"b": 1})})
    message = r"events\[0\]\.data\['a'\] is not JSON-serialisable \(mappingproxy: "
    with pytest.raises(el.InvalidEventError, match=message):
        store.append("s-1", event)
    before.assert_same(store)


def test_data_error_says_how_to_fix_it():
    with pytest.raises(el.InvalidEventError, match=r"wrap the value, e\.g\. \{'value': \.\.\.\}"):
        el.Event("T", 5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- dict events


def test_dict_event_is_appended_like_an_event(store):
    when = "2023-03-04T05:06:07Z"
    [from_dict] = store.append(
        "s-1",
        {
            "type": "Created",
            "data": {"n": 1},
            "metadata": {"by": "ann"},
            "event_id": "id-1",
            "occurred_at": when,
        },
    )
    [from_event] = store.append(
        "s-2",
        el.Event("Created", {"n": 1}, metadata={"by": "ann"}, event_id="id-2", occurred_at=when),
    )
    for record, stream, event_id in ((from_dict, "s-1", "id-1"), (from_event, "s-2", "id-2")):
        assert record.stream_id == stream
        assert record.event_id == event_id
        assert record.type == "Created"
        assert record.data == {"n": 1}
        assert record.metadata == {"by": "ann"}
        assert record.occurred_at == datetime(2023, 3, 4, 5, 6, 7, tzinfo=UTC)


def test_dict_event_without_data_has_empty_data(store):
    [record] = store.append("s", [{"type": "Pinged"}])
    assert record.data == {}
    assert record.metadata == {}


def test_mixed_list_of_events_and_dicts(store):
    records = store.append("s", [el.Event("A", {"i": 1}), {"type": "B", "data": {"i": 2}}])
    assert [(r.type, r.data, r.version) for r in records] == [
        ("A", {"i": 1}, 1),
        ("B", {"i": 2}, 2),
    ]


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ({"data": {}}, "an event dict needs a 'type'"),
        ({"type": "T", "payload": {}}, "unknown event key(s) ['payload']"),
        ({"type": "T", "data": 3}, "event data must be a dict"),
    ],
)
def test_bad_dict_event_is_rejected(store, snapshot, bad, fragment):
    before = snapshot(store)
    with pytest.raises(el.InvalidEventError) as info:
        store.append("s", [bad])
    assert fragment in str(info.value)
    before.assert_same(store)


@pytest.mark.parametrize("bad", [42, "OrderPlaced", b"bytes", None])
def test_events_argument_of_the_wrong_kind_is_rejected(store, snapshot, bad):
    before = snapshot(store)
    with pytest.raises(el.InvalidEventError, match="el.Event"):
        store.append("s", bad)
    before.assert_same(store)


# ---------------------------------------------------------------------- RecordedEvent


@pytest.fixture
def recorded(store):
    store.append("other", [el.Event("Noise", {})])
    [record] = store.append(
        "order-1",
        [
            el.Event(
                "OrderPlaced",
                {"total": 12.5, "items": ["a", "b"]},
                metadata={"correlation_id": "corr-1", "causation_id": "cause-1", "user": "ann"},
                event_id="evt-1",
                occurred_at="2023-12-31T23:00:00",
            )
        ],
    )
    return record


def test_recorded_event_fields(recorded):
    assert isinstance(recorded, el.RecordedEvent)
    assert recorded.to_dict() == {
        "position": 2,
        "event_id": "evt-1",
        "stream_id": "order-1",
        "version": 1,
        "type": "OrderPlaced",
        "data": {"total": 12.5, "items": ["a", "b"]},
        "metadata": {"correlation_id": "corr-1", "causation_id": "cause-1", "user": "ann"},
        "correlation_id": "corr-1",
        "causation_id": "cause-1",
        # the second event the clock stamps: START + 1 s
        "recorded_at": datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC),
        "occurred_at": datetime(2023, 12, 31, 23, 0, tzinfo=UTC),
        "schema_version": 1,
    }
    assert list(recorded.to_dict()) == RECORD_FIELDS


def test_recorded_event_timestamps_are_aware_utc(recorded):
    assert recorded.recorded_at.utcoffset() == timedelta(0)
    assert recorded.occurred_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize("name", RECORD_FIELDS + ["new_attribute"])
def test_recorded_event_is_immutable(recorded, name):
    before = recorded.to_dict()
    with pytest.raises(FrozenInstanceError):
        setattr(recorded, name, "changed")
    with pytest.raises(FrozenInstanceError):
        delattr(recorded, name)
    assert recorded.to_dict() == before


def test_recorded_event_pickles(recorded):
    clone = pickle.loads(pickle.dumps(recorded))
    assert type(clone) is el.RecordedEvent
    assert clone == recorded
    assert clone.to_dict() == recorded.to_dict()


def test_recorded_event_pattern_matching(recorded):
    match recorded:
        case el.RecordedEvent(position=position, stream_id="order-1", type="OrderPlaced"):
            matched = position
        case _:
            matched = None
    assert matched == 2


def test_recorded_event_equals_the_stored_one(store, recorded):
    assert store.read_stream("order-1") == [recorded]
    assert list(store.read_all(after=1)) == [recorded]


# ---------------------------------------------------------------------- generated ids


@given(counts=st.lists(st.integers(min_value=0, max_value=5000), max_size=12))
@settings(max_examples=60, deadline=None)
def test_generated_ids_are_the_counter_in_hex_whatever_the_takes(counts):
    # take() joins a cached block head to the last three digits, and formats each
    # id when a take crosses a block of 4096: both must give the same ids.
    ids = EventIds(seed=3)
    taken = [event_id for count in counts for event_id in ids.take(count)]
    assert taken == [f"{ids.prefix}{n:012x}" for n in range(sum(counts))]
    for event_id in taken[:3] + taken[-3:]:
        assert uuid.UUID(event_id).version == 8


def test_generated_ids_across_a_block_boundary_stay_consecutive():
    ids = EventIds(seed=3)
    ids.take(4094)
    assert [i[-12:] for i in ids.take(4)] == [
        "000000000ffe",
        "000000000fff",
        "000000001000",
        "000000001001",
    ]
    assert ids.take(1) == [f"{ids.prefix}000000001002"]
    assert ids.reserve(2) == 4099 and ids.take(1) == [f"{ids.prefix}000000001005"]


def test_generated_ids_given_back_are_handed_out_again():
    ids = EventIds(seed=3)
    first = ids.take(2)
    ids.take(3)
    ids.give_back(3)
    again = ids.take(3)
    assert again == EventIds(seed=3).take(5)[2:]
    assert first == EventIds(seed=3).take(2)
    start = ids.reserve(4)
    ids.give_back(4)
    assert ids.reserve(1) == start


_ID_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("take"), st.sampled_from([1, 2, 5, 6, 511, 512, 513, 4096, 5000])),
        st.tuples(st.just("give_back"), st.integers(1, 6)),
        st.tuples(st.just("reserve"), st.integers(1, 700)),
    ),
    max_size=60,
)


@given(
    start=st.sampled_from([0, 100, 4000, 4095, 8191, 2**40 - 3]),
    steps=_ID_STEPS,
)
@settings(max_examples=200, deadline=None)
def test_event_ids_are_the_counter_formatted_whatever_the_calls(start, steps):
    """Ids made ahead (a slice per append) or block by block are always the counter
    formatted, after any mix of takes, give-backs and reserves."""
    ids = EventIds(seed=9)
    ids._next = start
    handed: list[str | None] = []  # every id handed out by position, None if reserved
    for kind, count in steps:
        if kind == "take":
            handed += ids.take(count)
        elif kind == "reserve":
            first = ids.reserve(count)
            assert first == start + len(handed)
            handed += [None] * count
        elif handed and handed[-1] is not None:  # give back the last ids taken
            count = min(count, len(handed))
            ids.give_back(count)
            del handed[-count:]
    assert ids._next == start + len(handed)
    for n, given_id in enumerate(handed):
        if given_id is not None:
            assert given_id == f"{ids.prefix}{start + n:012x}"
