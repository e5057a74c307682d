"""Replay, time travel (version, business time, knowledge time), undo by revert, replay errors.

Function reducers are the subject here; tests/test_aggregate.py covers aggregates.
"""

from __future__ import annotations

import copy
import gc
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventlab as el
from eventlab.replay import paused_gc

# The conftest's clock: 2024-01-01T00:00:00Z, one second per event.
START = datetime(2024, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)


def at(seconds: float) -> datetime:
    """The time the test clock stamps on its ``seconds``-th event (counting from 0)."""
    return START + timedelta(seconds=seconds)


def add(total, event):
    return total + event.data["n"]


def added(*amounts: int) -> list[el.Event]:
    return [el.Event("Added", {"n": n}) for n in amounts]


def log(store: el.EventStore) -> list[tuple]:
    """The whole log as (position, stream_id, version, type, data) tuples."""
    return [(r.position, r.stream_id, r.version, r.type, r.data) for r in store.read_all()]


class Counter(el.Aggregate):
    def __init__(self, id):
        super().__init__(id)
        self.total = 0
        self.seen: list[int] = []

    def apply_Added(self, event):
        self.total += event.data["n"]
        self.seen.append(event.version)


@pytest.fixture
def counter(store):
    """Stream c-1: Added 1, 2, 4 (versions 1-3, positions 1-3, recorded at 0 s, 1 s, 2 s)."""
    store.append("c-1", added(1, 2, 4))
    return store


# ------------------------------------------------------------------------------ replay


def test_replay_folds_the_events_with_a_function_reducer_from_initial(counter):
    assert el.replay(counter.read_stream("c-1"), add, 10) == 17
    assert el.replay(counter.read_stream("c-1"), add, initial=0) == 7


def test_replay_hands_the_reducer_every_event_in_order(store):
    store.append("c-1", [el.Event("Opened", {"n": 0}), *added(5, 6)])
    steps = el.replay(
        store.read_stream("c-1"), lambda seen, e: seen + [(e.version, e.type, e.data)], []
    )
    assert steps == [(1, "Opened", {"n": 0}), (2, "Added", {"n": 5}), (3, "Added", {"n": 6})]


def test_replay_deep_copies_initial_so_a_mutating_reducer_never_changes_it(counter):
    initial = {"items": [], "totals": {"sum": 0}}
    pristine = copy.deepcopy(initial)

    def collect(state, event):
        state["items"].append(event.data["n"])
        state["totals"]["sum"] += event.data["n"]
        return state

    first = el.replay(counter.read_stream("c-1"), collect, initial)
    second = el.replay(counter.read_stream("c-1"), collect, initial)
    assert first == second == {"items": [1, 2, 4], "totals": {"sum": 7}}
    assert initial == pristine
    assert first is not second
    assert counter.state_at("c-1", collect, initial=initial) == first
    assert counter.state_at("c-1", collect, version=1, initial=initial) == {
        "items": [1],
        "totals": {"sum": 1},
    }
    assert initial == pristine


def test_replay_of_an_empty_history_gives_the_initial_state():
    initial = {"items": [1, 2]}
    state = el.replay([], lambda s, e: 1 / 0, initial)
    assert state == {"items": [1, 2]}
    state["items"].append(3)
    assert initial == {"items": [1, 2]}
    assert el.replay([], add) is None
    assert el.replay([], add, 5) == 5


def test_state_at_of_a_missing_stream_gives_the_initial_state(store):
    assert store.state_at("nobody-1", add, initial=42) == 42
    assert store.state_at("nobody-1", add, version=0, initial=42) == 42
    assert store.state_at("nobody-1", add) is None


def test_replay_with_an_aggregate_subclass(counter):
    result = el.replay(counter.read_stream("c-1"), Counter)
    assert isinstance(result, Counter)
    assert (result.id, result.version, result.total, result.seen) == ("c-1", 3, 7, [1, 2, 3])
    assert result.pending_events == []


def test_replay_with_an_aggregate_ignores_initial(counter):
    result = el.replay(counter.read_stream("c-1"), Counter, initial=100)
    assert (result.total, result.version) == (7, 3)


def test_replay_of_an_empty_history_with_an_aggregate_gives_a_blank_one():
    blank = el.replay([], Counter)
    assert isinstance(blank, Counter)
    assert (blank.version, blank.total, blank.seen, blank.pending_events) == (0, 0, [], [])


def test_replay_rejects_a_reducer_that_is_neither_a_function_nor_an_aggregate(counter):
    with pytest.raises(el.EventlabError, match=r"reducer .*got int: 42"):
        el.replay(counter.read_stream("c-1"), 42, 0)
    with pytest.raises(el.EventlabError, match=r"reducer .*got str: 'add'"):
        counter.state_at("c-1", "add", initial=0)


# ------------------------------------------------------------------------ version axis


@pytest.mark.parametrize(("version", "expected"), [(0, 0), (1, 1), (2, 3), (3, 7), (None, 7)])
def test_state_at_version_is_the_state_after_the_first_n_events(counter, version, expected):
    assert counter.state_at("c-1", add, version=version, initial=0) == expected


@pytest.mark.parametrize("stream_id", ["", " ", None, 123, ["c-1"]])
@pytest.mark.parametrize("version", [None, 0])
def test_state_at_with_a_bad_stream_id_raises_invalid_event_error(counter, stream_id, version):
    with pytest.raises(el.InvalidEventError, match="stream_id must be a non-empty string"):
        counter.state_at(stream_id, add, version=version, initial=0)
    with pytest.raises(el.InvalidEventError, match="stream_id must be a non-empty string"):
        counter.state_at(stream_id, Counter, version=version)


def test_state_at_with_a_bad_stream_id_and_snapshots_raises_invalid_event_error(counter):
    counter.rebuild_snapshots(el.Snapshots(add, every=1, name="totals"), initial=0)
    with pytest.raises(el.InvalidEventError, match="stream_id must be a non-empty string"):
        counter.state_at(None, el.Snapshots(add, every=1, name="totals"), initial=0)


def test_stream_history_checks_the_stream_id_without_a_version(counter):
    from eventlab.replay import stream_history

    with pytest.raises(el.InvalidEventError, match="stream_id must be a non-empty string"):
        stream_history(counter, 123)


def test_state_at_version_zero_is_the_initial_state(counter):
    assert counter.state_at("c-1", add, version=0, initial=-5) == -5
    assert counter.state_at("c-1", add, version=0) is None


def test_state_at_version_only_replays_the_stream_asked_for(counter):
    counter.append("c-2", added(100, 200))
    counter.append("c-1", added(8))
    assert counter.state_at("c-1", add, version=4, initial=0) == 15
    assert counter.state_at("c-2", add, version=1, initial=0) == 100


def test_state_at_a_version_beyond_the_end_raises_version_not_found(counter, snapshot):
    before = snapshot(counter)
    with pytest.raises(el.VersionNotFoundError) as caught:
        counter.state_at("c-1", add, version=4, initial=0)
    error = caught.value
    assert (error.stream_id, error.requested, error.current) == ("c-1", 4, 3)
    assert str(error) == (
        "stream 'c-1' has no version 4: it is at version 3. "
        "Ask for a version from 0 to 3, or leave version=None for the latest."
    )
    assert isinstance(error, el.EventlabError)
    before.assert_same(counter)


def test_state_at_a_version_of_a_missing_stream_raises_with_current_zero(store):
    with pytest.raises(el.VersionNotFoundError) as caught:
        store.state_at("nobody-1", add, version=1, initial=0)
    assert (caught.value.requested, caught.value.current) == (1, 0)
    assert store.head == 0
    assert store.streams() == []


@pytest.mark.parametrize("version", [-1, True, 1.5, "2"])
def test_state_at_rejects_a_version_that_is_not_a_non_negative_int(counter, version):
    with pytest.raises(el.EventlabError, match="version must be a non-negative int"):
        counter.state_at("c-1", add, version=version, initial=0)


# ------------------------------------------------------------------- business time axis


@pytest.fixture
def business(store):
    """c-1 recorded at 0 s, 1 s, 2 s but occurred at 10 s (+1), 5 s (+10) and 20 s (+100)."""
    store.append(
        "c-1",
        [
            el.Event("Added", {"n": 1}, occurred_at=at(10)),
            el.Event("Added", {"n": 10}, occurred_at=at(5)),
            el.Event("Added", {"n": 100}, occurred_at=at(20)),
        ],
    )
    return store


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (at(5) - US, 0),
        (at(5), 10),
        (at(10) - US, 10),
        (at(10), 11),
        (at(20) - US, 11),
        (at(20), 111),
        (at(3600), 111),
    ],
)
def test_state_at_business_time_keeps_events_that_occurred_by_then(business, when, expected):
    assert business.state_at("c-1", add, at=when, initial=0) == expected


def test_business_time_ignores_when_the_events_were_recorded(business):
    # Every event was recorded by 2 s; none had occurred by then.
    assert business.state_at("c-1", add, at=at(2), initial=0) == 0
    assert business.state_at("c-1", add, known_at=at(2), initial=0) == 111


def test_a_time_before_the_first_event_gives_the_initial_state(counter):
    before = START - timedelta(days=1)
    assert counter.state_at("c-1", add, at=before, initial=0) == 0
    assert counter.state_at("c-1", add, known_at=before, initial=0) == 0
    assert counter.state_at("c-1", add, at=before, known_at=before, initial="blank") == "blank"
    assert counter.state_at("c-1", add, at=START - US, initial=0) == 0


# ------------------------------------------------------------------ knowledge time axis


@pytest.mark.parametrize(
    ("when", "expected"),
    [(START - US, 0), (at(0), 1), (at(1) - US, 1), (at(1.5), 3), (at(2), 7), (at(99), 7)],
)
def test_state_at_knowledge_time_keeps_events_recorded_by_then(counter, when, expected):
    assert counter.state_at("c-1", add, known_at=when, initial=0) == expected


def test_knowledge_time_ignores_when_the_events_occurred(business):
    assert business.state_at("c-1", add, known_at=at(0), initial=0) == 1
    assert business.state_at("c-1", add, known_at=at(1), initial=0) == 11


def test_version_and_times_combine_as_the_tightest_limit(business):
    assert business.state_at("c-1", add, version=3, known_at=at(0), initial=0) == 1
    assert business.state_at("c-1", add, version=1, known_at=at(9), initial=0) == 1
    assert business.state_at("c-1", add, version=2, at=at(5), initial=0) == 10
    assert business.state_at("c-1", add, version=3, at=at(10), known_at=at(1), initial=0) == 11


# --------------------------------------------------------------------------- bitemporal


def day(n: int) -> datetime:
    return datetime(2024, 3, n, tzinfo=UTC)


@pytest.fixture
def late_correction():
    """Amounts recorded on days 1, 2, 3; on day 10 a correction that occurred on day 2."""
    clock = el.SimulatedClock(day(1), step=timedelta(days=1))
    with el.EventStore(clock=clock) as store:
        for amount in (100, 20, 3):
            store.append("acct-1", el.Event("Added", {"n": amount}))
        clock.advance(day(10) - clock.current)
        store.append("acct-1", el.Event("Corrected", {"n": -7}, occurred_at=day(2)))
        yield store


def test_the_late_correction_is_stored_as_recorded_on_day_10_and_occurred_on_day_2(
    late_correction,
):
    stamps = [
        (r.version, r.type, r.recorded_at, r.occurred_at)
        for r in late_correction.read_stream("acct-1")
    ]
    assert stamps == [
        (1, "Added", day(1), day(1)),
        (2, "Added", day(2), day(2)),
        (3, "Added", day(3), day(3)),
        (4, "Corrected", day(10), day(2)),
    ]


@pytest.mark.parametrize(
    ("at_", "known_at", "expected"),
    [
        (None, None, 116),
        (day(1), None, 100),
        (day(2), None, 113),  # the correction occurred on day 2: included
        (day(2), day(5), 120),  # ... but on day 5 nobody knew about it yet
        (day(2), day(9), 120),
        (day(2), day(10), 113),
        (day(3), day(5), 123),
        (None, day(5), 123),
        (None, day(10), 116),
        (day(1), day(1), 100),
        (day(3), day(1), 100),
    ],
)
def test_what_we_knew_at_k_about_the_state_at_t(late_correction, at_, known_at, expected):
    state = late_correction.state_at("acct-1", add, at=at_, known_at=known_at, initial=0)
    assert state == expected


# ------------------------------------------------------------------------- time as UTC


@pytest.mark.parametrize(
    "when",
    [
        at(1),
        datetime(2024, 1, 1, 0, 0, 1),  # naive: UTC
        datetime(2024, 1, 1, 2, 0, 1, tzinfo=timezone(timedelta(hours=2))),
        "2024-01-01T00:00:01",
        "2024-01-01 00:00:01",
        "2024-01-01T00:00:01Z",
        "2024-01-01T00:00:01+00:00",
        "2023-12-31T19:00:01-05:00",
    ],
)
def test_naive_datetimes_and_iso_strings_are_utc(counter, when):
    # Recorded (and occurred) at 0 s, 1 s, 2 s: one second after START sees two events.
    assert counter.state_at("c-1", add, known_at=when, initial=0) == 3
    assert counter.state_at("c-1", add, at=when, initial=0) == 3


@pytest.mark.parametrize(
    "when",
    [
        datetime(2024, 1, 1, 0, 0, 0, 999_999),
        "2024-01-01T00:00:00.999999",
        "2024-01-01T01:00:00.999999+01:00",
    ],
)
def test_a_microsecond_before_the_second_event_sees_only_the_first(counter, when):
    assert counter.state_at("c-1", add, known_at=when, initial=0) == 1
    assert counter.state_at("c-1", add, at=when, initial=0) == 1


@pytest.mark.parametrize("when", ["yesterday", "2024-13-01", 12345])
def test_an_unreadable_time_raises_an_eventlab_error(counter, when):
    with pytest.raises(el.EventlabError):
        counter.state_at("c-1", add, at=when, initial=0)
    with pytest.raises(el.EventlabError):
        counter.state_at("c-1", add, known_at=when, initial=0)


# -------------------------------------------------------------------------------- revert


def test_revert_appends_exactly_one_reverted_event_and_deletes_nothing(counter):
    original = log(counter)
    recorded = counter.revert("c-1", to_version=1, reason="typo")
    assert (recorded.position, recorded.stream_id, recorded.version, recorded.type) == (
        4,
        "c-1",
        4,
        "Reverted",
    )
    assert recorded.data == {"to_version": 1, "reason": "typo"}
    assert recorded.recorded_at == at(3)
    assert log(counter) == [
        *original,
        (4, "c-1", 4, "Reverted", {"to_version": 1, "reason": "typo"}),
    ]
    assert counter.version("c-1") == 4
    assert counter.head == 4


def test_revert_without_a_reason_stores_none(counter):
    recorded = counter.revert("c-1", 2)
    assert recorded.data == {"to_version": 2, "reason": None}


def test_replay_after_a_revert_gives_the_state_at_the_target_version(counter):
    counter.revert("c-1", to_version=1)
    assert counter.state_at("c-1", add, initial=0) == 1
    assert el.replay(counter.read_stream("c-1"), add, 0) == 1


@pytest.mark.parametrize(("target", "expected"), [(0, 0), (1, 1), (2, 3), (3, 7)])
def test_revert_to_any_version_returns_its_state(counter, target, expected):
    counter.revert("c-1", to_version=target)
    assert counter.state_at("c-1", add, initial=0) == expected
    assert el.replay(counter.read_stream("c-1"), add, 0) == expected
    assert counter.version("c-1") == 4


def test_revert_to_zero_gives_the_initial_state(counter):
    counter.revert("c-1", to_version=0)
    assert counter.state_at("c-1", add, initial={"blank": True}) == {"blank": True}


def test_reverting_the_revert_restores_the_state_before_it(counter):
    counter.revert("c-1", to_version=1, reason="oops")
    counter.revert("c-1", to_version=3, reason="undo the undo")
    assert counter.state_at("c-1", add, initial=0) == 7
    assert el.replay(counter.read_stream("c-1"), add, 0) == 7
    assert [(r.version, r.type, r.data) for r in counter.read_stream("c-1")] == [
        (1, "Added", {"n": 1}),
        (2, "Added", {"n": 2}),
        (3, "Added", {"n": 4}),
        (4, "Reverted", {"to_version": 1, "reason": "oops"}),
        (5, "Reverted", {"to_version": 3, "reason": "undo the undo"}),
    ]


def test_reverting_to_a_revert_version_gives_the_state_that_revert_made(counter):
    counter.revert("c-1", to_version=1)
    counter.append("c-1", added(10))  # v5: 11
    counter.revert("c-1", to_version=4)  # v6: back to the state at v4, i.e. 1
    assert counter.state_at("c-1", add, initial=0) == 1


def test_revert_to_the_current_version_changes_nothing_but_is_recorded(counter):
    counter.revert("c-1", to_version=3)
    assert counter.state_at("c-1", add, initial=0) == 7
    assert counter.version("c-1") == 4


def test_time_travel_to_versions_around_reverts_shows_each_state(counter):
    counter.revert("c-1", to_version=1)  # v4
    counter.append("c-1", added(10))  # v5
    counter.revert("c-1", to_version=3)  # v6
    counter.append("c-1", added(100))  # v7
    states = [counter.state_at("c-1", add, version=k, initial=0) for k in range(8)]
    assert states == [0, 1, 3, 7, 1, 11, 7, 107]


def test_appends_after_a_revert_build_on_the_reverted_state(counter):
    counter.revert("c-1", to_version=2)
    counter.append("c-1", added(10, 20))
    assert counter.state_at("c-1", add, initial=0) == 33
    assert el.replay(counter.read_stream("c-1"), add, 0) == 33
    assert counter.state_at("c-1", add, version=5, initial=0) == 13


def test_knowledge_and_business_time_before_a_revert_show_the_original_state(counter):
    counter.revert("c-1", to_version=0)  # recorded (and occurred) at 3 s
    for axis in ("at", "known_at"):
        assert counter.state_at("c-1", add, initial=0, **{axis: at(3) - US}) == 7
        assert counter.state_at("c-1", add, initial=0, **{axis: at(3)}) == 0


def test_a_revert_only_affects_its_own_stream(counter):
    counter.append("c-2", added(50, 60))
    counter.revert("c-1", to_version=1)
    counter.append("c-2", added(70))
    assert counter.state_at("c-2", add, initial=0) == 180

    def per_stream(state, event):
        return {**state, event.stream_id: state.get(event.stream_id, 0) + event.data["n"]}

    assert el.replay(counter.read_all(), per_stream, {}) == {"c-1": 1, "c-2": 180}


def test_reducers_never_see_reverted_events(counter):
    counter.revert("c-1", to_version=1)
    counter.append("c-1", added(10))
    counter.revert("c-1", to_version=5)
    counter.revert("c-1", to_version=0)
    counter.append("c-1", added(100))

    def record(seen, event):
        assert event.type == "Added", event.type
        return seen + [event.version]

    seen = {k: counter.state_at("c-1", record, version=k, initial=[]) for k in range(9)}
    assert seen == {
        0: [],
        1: [1],
        2: [1, 2],
        3: [1, 2, 3],
        4: [1],
        5: [1, 5],
        6: [1, 5],
        7: [],
        8: [8],
    }
    assert el.replay(counter.read_stream("c-1"), record, []) == [8]


def test_revert_beyond_the_current_version_raises_and_writes_nothing(counter, snapshot):
    before = snapshot(counter)
    with pytest.raises(el.VersionNotFoundError) as caught:
        counter.revert("c-1", to_version=4)
    assert (caught.value.stream_id, caught.value.requested, caught.value.current) == ("c-1", 4, 3)
    before.assert_same(counter)


def test_revert_of_a_missing_stream_to_a_positive_version_raises(store):
    with pytest.raises(el.VersionNotFoundError) as caught:
        store.revert("nobody-1", to_version=1)
    assert caught.value.current == 0
    assert store.head == 0


def test_revert_of_a_missing_stream_writes_nothing(store):
    with pytest.raises(el.InvalidEventError, match="'nobody-1' has no events"):
        store.revert("nobody-1", to_version=0)
    assert store.head == 0
    assert store.streams() == []


@pytest.mark.parametrize("target", [-1, 1.0, "1", True, None, [1]])
def test_revert_to_an_invalid_version_raises_and_writes_nothing(counter, snapshot, target):
    before = snapshot(counter)
    with pytest.raises(el.EventlabError, match=r"to_version must be .*\(0 to 3\)"):
        counter.revert("c-1", to_version=target)
    before.assert_same(counter)


def test_a_hand_written_reverted_event_without_a_target_fails_replay_clearly(counter):
    counter.append("c-1", el.Event("Reverted", {"version": 1}))
    with pytest.raises(el.EventlabError, match=r"position 4 .*no valid to_version: None"):
        counter.state_at("c-1", add, initial=0)


# ------------------------------------------------------------------------------ errors


class Broken(Exception):
    """What the failing reducer raises."""


@pytest.fixture
def broken(store):
    """c-1 v2 (position 4) is a Refunded event the reducer below cannot handle."""
    store.append("other-1", added(1, 2))
    store.append("c-1", [el.Event("Added", {"n": 5}), el.Event("Refunded", {"n": 5})])
    return store


def make_picky():
    cause = Broken("no refunds here")

    def picky(total, event):
        if event.type == "Refunded":
            raise cause
        return total + event.data["n"]

    return picky, cause


def check_replay_error(error: el.ReplayError, cause: BaseException) -> None:
    assert isinstance(error, el.EventlabError)
    assert (error.stream_id, error.version, error.position, error.event_type) == (
        "c-1",
        2,
        4,
        "Refunded",
    )
    assert error.__cause__ is cause
    message = str(error)
    for part in ("'c-1'", "version 2", "position 4", "Refunded", "no refunds here"):
        assert part in message


def test_a_failing_reducer_raises_replay_error_from_state_at(broken, snapshot):
    picky, cause = make_picky()
    before = snapshot(broken)
    with pytest.raises(el.ReplayError) as caught:
        broken.state_at("c-1", picky, initial=0)
    check_replay_error(caught.value, cause)
    assert "make_picky.<locals>.picky failed on Refunded" in str(caught.value)
    before.assert_same(broken)


def test_a_failing_reducer_raises_replay_error_from_replay(broken):
    picky, cause = make_picky()
    with pytest.raises(el.ReplayError) as caught:
        el.replay(broken.read_stream("c-1"), picky, 0)
    check_replay_error(caught.value, cause)


def test_replay_error_only_when_the_failing_event_is_replayed(broken):
    picky, _ = make_picky()
    assert broken.state_at("c-1", picky, version=1, initial=0) == 5
    broken.revert("c-1", to_version=1)
    assert broken.state_at("c-1", picky, initial=0) == 5
    with pytest.raises(el.ReplayError):
        broken.state_at("c-1", picky, version=2, initial=0)


def test_a_reducer_reading_a_missing_key_names_the_key_in_replay_error(store):
    store.append("c-1", el.Event("Added", {"amount": 3}))
    with pytest.raises(el.ReplayError, match=r"KeyError: 'n'") as caught:
        store.state_at("c-1", add, initial=0)
    assert isinstance(caught.value.__cause__, KeyError)
    assert (caught.value.version, caught.value.position) == (1, 1)


def test_reading_never_writes(counter, snapshot):
    counter.revert("c-1", to_version=1)
    counter.append("c-2", added(9))
    before = snapshot(counter)
    events_before = log(counter)
    el.replay(counter.read_stream("c-1"), add, 0)
    el.replay(counter.read_all(), add, 0)
    for kwargs in ({}, {"version": 2}, {"at": at(1)}, {"known_at": at(1)}, {"version": 0}):
        counter.state_at("c-1", add, initial=0, **kwargs)
        counter.state_at("nobody-1", add, initial=0, **({} if "version" in kwargs else kwargs))
    with pytest.raises(el.VersionNotFoundError):
        counter.state_at("c-1", add, version=9, initial=0)
    before.assert_same(counter)
    assert log(counter) == events_before
    assert counter.head == 5


# ----------------------------------------------------------------------- property test

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# An operation: ("add", [n, ...]) appends Added events in one call; ("revert", r) reverts to
# version r * current // 1000, some earlier version (0 to current), via store.revert.
operation = st.one_of(
    st.tuples(st.just("add"), st.lists(st.integers(-50, 50), min_size=1, max_size=3)),
    st.tuples(st.just("revert"), st.integers(0, 1000)),
)


class Model:
    """The state after every version: a revert to n copies state n, Added n adds n."""

    def __init__(self) -> None:
        self.states = [0]

    def add(self, n: int) -> None:
        self.states.append(self.states[-1] + n)

    def revert(self, to_version: int) -> None:
        self.states.append(self.states[to_version])


class ModelCounter(el.Aggregate):
    def __init__(self, id):
        super().__init__(id)
        self.total = 0

    def apply_Added(self, event):
        self.total += event.data["n"]


@SETTINGS
@given(operations=st.lists(operation, max_size=8))
def test_state_at_every_version_matches_a_model_of_states(operations):
    with el.EventStore(clock=el.SimulatedClock(START, step=timedelta(seconds=1))) as store:
        store.append("noise-1", added(1000))  # positions differ from versions
        model = Model()
        for kind, arg in operations:
            if kind == "add":
                store.append("c-1", added(*arg))
                for n in arg:
                    model.add(n)
            elif store.version("c-1") == 0:
                with pytest.raises(el.InvalidEventError, match="nothing to revert"):
                    store.revert("c-1", to_version=0)
            else:
                target = arg * store.version("c-1") // 1000
                store.revert("c-1", to_version=target)
                model.revert(target)
            store.append("noise-1", added(1000))
        current = len(model.states) - 1
        assert store.version("c-1") == current
        assert [r.version for r in store.read_stream("c-1")] == list(range(1, current + 1))
        states = [store.state_at("c-1", add, version=k, initial=0) for k in range(current + 1)]
        assert states == model.states
        assert store.state_at("c-1", add, initial=0) == model.states[-1]
        assert el.replay(store.read_stream("c-1"), add, 0) == model.states[-1]
        # Knowledge time: version k of c-1 was the last event recorded by its recorded_at.
        records = store.read_stream("c-1")
        known = [store.state_at("c-1", add, known_at=r.recorded_at, initial=0) for r in records]
        assert known == model.states[1:]
        loaded = ModelCounter.load(store, "c-1")
        assert (loaded.total, loaded.version) == (model.states[-1], current)


# ---------------------------------------------------------------------- paused_gc


def test_paused_gc_pauses_the_collector_and_restores_it_even_after_an_error():
    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
        with paused_gc():  # nested: the inner exit must not turn it back on
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(KeyError), paused_gc():
        raise KeyError("x")
    assert gc.isenabled()
    gc.disable()  # a caller's own pause is left as it was
    try:
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
