"""A stateful (model-based) test of EventStore: random interleavings checked against a model.

Hypothesis drives a file store through appends (with and without expected
versions and caller ids), idempotent and conflicting re-appends, transaction
blocks (open across steps, nested, committed or raising), absorbs forced at
random points (a tiny ``ABSORB_THRESHOLD``, reads, a background absorb held
back or left unjoined), read_all() iterators left part-way, bad payloads, clock
moves, close and reopen, read-only peeks, and crash copies of the files (the
journal recovery path). A plain-Python model holds the committed events in
position order and the events staged by the open transaction; every read is
compared with it.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import threading
import types
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import eventlab as el
import eventlab.absorber
import eventlab.pending
import eventlab.store
from eventlab.clock import from_micros, to_micros

STREAMS = ("acct-1", "acct-2", "ü-3", "x\x00y")
TYPES = ("Opened", "Deposited", "Closed ✓")
START = datetime(2024, 1, 1, tzinfo=UTC)
SURROGATE = json.loads('"\\ud800"')


class Boom(Exception):
    """Raised on purpose inside a transaction block."""


def canon(value: Any) -> str:
    """A JSON value's text with sorted keys: equal exactly when JSON says so (1, 1.0 and
    true differ; key order does not count)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# --------------------------------------------------------------------------- model


@dataclass
class Entry:
    """One stored (or staged) event as the model expects to read it back."""

    event_id: str
    stream: str
    type: str
    data: dict
    metadata: dict
    recorded_us: int
    occurred_us: int

    @property
    def correlation_id(self) -> str | None:
        value = self.metadata.get("correlation_id")
        return None if value is None else str(value)

    @property
    def causation_id(self) -> str | None:
        value = self.metadata.get("causation_id")
        return None if value is None else str(value)


class Model:
    """Committed entries in position order, the open transaction's staged entries, and
    the simulated clock's next reading."""

    def __init__(self) -> None:
        self.committed: list[Entry] = []
        self.staged: list[Entry] = []
        self.savepoints: list[int] = []  # len(staged) when each open block began
        self.clock_us = to_micros(START)
        self.step_us = 1_000_000
        self.serial = 0
        self.rolled_back: list[Entry] = []  # their ids are free again

    def next_id(self) -> str:
        self.serial += 1
        return f"ev-{self.serial}"

    @property
    def in_tx(self) -> bool:
        return bool(self.savepoints)

    def visible(self) -> list[Entry]:
        """What an append sees: committed and staged entries."""
        return self.committed + self.staged

    def version(self, stream: str, *, staged: bool = True) -> int:
        entries = self.visible() if staged else self.committed
        return sum(1 for entry in entries if entry.stream == stream)

    def find(self, event_id: str) -> tuple[int, Entry] | None:
        for position, entry in enumerate(self.visible(), start=1):
            if entry.event_id == event_id:
                return position, entry
        return None

    def begin(self) -> None:
        self.savepoints.append(len(self.staged))

    def end(self, *, raised: bool) -> None:
        savepoint = self.savepoints.pop()
        if raised:
            self.rolled_back.extend(self.staged[savepoint:])
            del self.staged[savepoint:]
        if not self.savepoints:
            self.committed.extend(self.staged)
            self.staged = []

    def add(self, entries: list[Entry]) -> None:
        (self.staged if self.in_tx else self.committed).extend(entries)


def same_content(entry: Entry, stream: str, event: el.Event) -> bool:
    """Whether re-appending ``event`` to ``stream`` repeats ``entry`` exactly."""
    return (
        entry.stream == stream
        and entry.type == event.type
        and canon(entry.data) == canon(dict(event.data))
        and canon(entry.metadata) == canon(event.metadata or {})
        and (event.occurred_at is None or to_micros(event.occurred_at) == entry.occurred_us)
    )


def predict(model: Model, stream: str, events: list[el.Event], expected: int | None) -> tuple:
    """What appending ``events`` should do: ("ok",), ("retry", positions), ("duplicate",
    part of the message) or ("conflict", actual)."""
    ids = [event.event_id for event in events if event.event_id is not None]
    if ids:
        if len(set(ids)) != len(ids):
            return ("duplicate", "appears twice in one append")
        found = {i: model.find(i) for i in ids if model.find(i) is not None}
        if found:
            if len(found) != len(events):
                return ("duplicate", "already stored but the other events of this append are not")
            positions = []
            for event in events:
                position, entry = found[event.event_id]
                if not same_content(entry, stream, event):
                    return ("duplicate", f"event_id {event.event_id!r} is already stored as")
                positions.append(position)
            return ("retry", positions)
    current = model.version(stream)
    if expected is not None and expected != current:
        return ("conflict", current)
    return ("ok",)


def record_matches(record: el.RecordedEvent, position: int, version: int, entry: Entry) -> None:
    assert record.position == position
    assert record.event_id == entry.event_id
    assert record.stream_id == entry.stream
    assert record.version == version
    assert record.type == entry.type
    assert canon(record.data) == canon(entry.data)
    assert canon(record.metadata) == canon(entry.metadata)
    assert record.correlation_id == entry.correlation_id
    assert record.causation_id == entry.causation_id
    assert record.recorded_at == from_micros(entry.recorded_us)
    assert record.occurred_at == from_micros(entry.occurred_us)
    assert record.schema_version == 1


def numbered(entries: list[Entry]) -> list[tuple[int, int, Entry]]:
    """(position, version, entry) for entries laid out from position 1."""
    versions: dict[str, int] = {}
    out = []
    for position, entry in enumerate(entries, start=1):
        versions[entry.stream] = versions.get(entry.stream, 0) + 1
        out.append((position, versions[entry.stream], entry))
    return out


def check_reads(
    store: el.EventStore, model: Model, data: st.DataObject | None = None, *, own: bool = True
) -> None:
    """Every read of ``store`` against the model's committed entries (reads absorb).

    With the open transaction (``own``), ``version()`` and ``read_stream()`` of the
    store count its staged appends (read-your-writes on one stream); whole-log reads,
    and another store (a copy, a reader), see committed events only.
    """
    expected = numbered(model.committed)
    # What one-stream reads see: staged entries continue the committed positions.
    streamed = numbered(model.visible()) if own else expected
    records = list(store.read_all())
    assert len(records) == len(expected)
    for record, (position, version, entry) in zip(records, expected, strict=True):
        record_matches(record, position, version, entry)
    assert len({record.event_id for record in records}) == len(records)
    assert store.streams() == sorted({entry.stream for entry in model.committed})
    assert store.head == len(model.committed)
    for stream in STREAMS:
        assert store.version(stream) == model.version(stream, staged=own)
        in_stream = [(p, v, e) for p, v, e in streamed if e.stream == stream]
        got = store.read_stream(stream)
        assert [(r.position, r.version) for r in got] == [(p, v) for p, v, _ in in_stream]
    check_frame(store, expected)
    if data is None:
        return
    # Ranges and filters, drawn.
    stream = data.draw(st.sampled_from(STREAMS), label="range stream")
    count = model.version(stream, staged=own)
    low = data.draw(st.integers(0, count + 2), label="from_version")
    high = data.draw(st.none() | st.integers(0, count + 2), label="to_version")
    got = store.read_stream(stream, from_version=low, to_version=high)
    want = [
        (p, v)
        for p, v, e in streamed
        if e.stream == stream and v >= low and (high is None or v <= high)
    ]
    assert [(r.position, r.version) for r in got] == want
    after = data.draw(st.integers(0, len(expected) + 1), label="after")
    kinds = data.draw(st.none() | st.lists(st.sampled_from(TYPES), max_size=2), label="types")
    until_kind = data.draw(st.sampled_from(["none", "position", "time"]), label="until")
    until: int | datetime | None = None
    if until_kind == "position":
        until = data.draw(st.integers(0, len(expected) + 1), label="until position")
    elif until_kind == "time" and expected:
        stamps = sorted({e.recorded_us for _, _, e in expected})
        chosen = data.draw(st.sampled_from(stamps), label="until time")
        until = from_micros(chosen + data.draw(st.sampled_from([-1, 0, 1]), label="nudge"))

    def wanted(position: int, entry: Entry) -> bool:
        if position <= after or (kinds is not None and entry.type not in kinds):
            return False
        if isinstance(until, int):
            return position <= until
        if isinstance(until, datetime):
            return entry.recorded_us <= to_micros(until)
        return True

    got_all = list(store.read_all(after=after, types=kinds, until=until, batch_size=2))
    assert [r.position for r in got_all] == [p for p, _, e in expected if wanted(p, e)]
    frame = store.events(after=after, types=kinds, until=until)
    assert frame["position"].tolist() == [p for p, _, e in expected if wanted(p, e)]


def check_frame(store: el.EventStore, expected: list[tuple[int, int, Entry]]) -> None:
    frame = store.events()
    assert len(frame) == len(expected)
    assert frame["position"].tolist() == [p for p, _, _ in expected]
    for row, (_, version, entry) in zip(frame.itertuples(index=False), expected, strict=True):
        assert (row.event_id, row.stream_id, row.version, row.type) == (
            entry.event_id,
            entry.stream,
            version,
            entry.type,
        )
        assert canon(row.data) == canon(entry.data)
        assert canon(row.metadata) == canon(entry.metadata)
        assert _missing(row.correlation_id) == entry.correlation_id
        assert _missing(row.causation_id) == entry.causation_id
        # (Timestamps as datetimes: .value would overflow beyond pandas' nanosecond range.)
        assert row.recorded_at.to_pydatetime() == from_micros(entry.recorded_us)
        assert row.occurred_at.to_pydatetime() == from_micros(entry.occurred_us)


def _missing(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


# --------------------------------------------------------------------------- strategies

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
payloads = st.dictionaries(
    st.sampled_from(["n", "text", "k", "\x00", "é"]), json_values, max_size=3
)
ids_in_metadata = st.none() | st.text(min_size=1, max_size=4) | st.integers(0, 9)
metadatas = st.one_of(
    st.none(),
    st.just({}),
    st.fixed_dictionaries(
        {},
        optional={
            "correlation_id": ids_in_metadata,
            "causation_id": ids_in_metadata,
            "user": st.text(max_size=3),
        },
    ),
)
occurred = (
    st.none()
    | st.integers(0, 10**6).map(lambda s: datetime(2023, 6, 1, tzinfo=UTC) + timedelta(seconds=s))
    | st.datetimes(timezones=st.just(UTC))
    | st.datetimes()  # naive: read as UTC
)
BAD_VALUES = [
    {1, 2},
    math.nan,
    -math.inf,
    SURROGATE,
    b"bytes",
    {SURROGATE: 1},
    {(1, 2): 3},
    object(),
]


def circular() -> dict:
    value: dict = {}
    value["self"] = value
    return value


# --------------------------------------------------------------------------- the machine


class StoreMachine(RuleBasedStateMachine):
    """A file store and its model, driven by the rules below; ``head_and_versions`` is
    checked after every step, every read against the model where a rule reads."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="eventlab-stateful-"))
        self.path = self.directory / "store.duckdb"
        self.model = Model()
        self.clock = el.SimulatedClock(START)
        self.sync = False  # configure may reopen the store with sync=True
        self.store = el.EventStore(self.path, clock=self.clock, sync=self.sync)
        self.scopes: list = []
        self.copies = 0
        self.saved = (
            eventlab.store.ABSORB_THRESHOLD,
            eventlab.pending.ARROW_COMMIT_ROWS,
            eventlab.absorber.write_batch,
            eventlab.absorber.Absorber.finish,
            eventlab.absorber.Absorber.abandon,
            eventlab.absorber.Absorber.start,
        )
        # Background absorbs wait for this gate before they write to DuckDB (see
        # configure): cleared, it holds one with its rows in the renamed journal only.
        self.gate = threading.Event()
        self.gate.set()
        # read_all() iterators left part-way: (iterator, records still expected).
        self.readers: list[tuple[Any, list[tuple[int, int, Entry]]]] = []

    # ------------------------------------------------------------------ helpers

    def new_event(self, data: st.DataObject, *, with_id: bool | None = None) -> el.Event:
        if with_id is None:
            with_id = data.draw(st.booleans(), label="caller id")
        return el.Event(
            data.draw(st.sampled_from(TYPES), label="type"),
            data.draw(payloads, label="data"),
            metadata=data.draw(metadatas, label="metadata"),
            event_id=self.model.next_id() if with_id else None,
            occurred_at=data.draw(occurred, label="occurred_at"),
        )

    def expected_version(self, data: st.DataObject, stream: str) -> int | None:
        current = self.model.version(stream)
        mode = data.draw(st.sampled_from(["none", "right", "wrong"]), label="expected mode")
        if mode == "none":
            return None
        if mode == "right":
            return current
        return data.draw(st.integers(0, current + 2).filter(lambda v: v != current), label="wrong")

    def do_append(self, stream: str, events: list[el.Event], expected: int | None) -> None:
        """Append, check the outcome against the model's prediction, update the model."""
        model, store = self.model, self.store
        outcome = predict(model, stream, events, expected)
        head, version, clock_us = store.head, model.version(stream), self.clock.peek_micros()
        if outcome[0] == "duplicate":
            with pytest.raises(el.DuplicateEventError) as caught:
                store.append(stream, events, expected_version=expected)
            assert outcome[1] in str(caught.value)
        elif outcome[0] == "conflict":
            with pytest.raises(el.ConcurrencyError) as caught:
                store.append(stream, events, expected_version=expected)
            assert (caught.value.stream_id, caught.value.expected) == (stream, expected)
            assert caught.value.actual == outcome[1]
        elif outcome[0] == "retry":
            recorded = store.append(stream, events, expected_version=expected)
            visible = numbered(model.visible())
            assert len(recorded) == len(outcome[1])
            for record, position in zip(recorded, outcome[1], strict=True):
                record_matches(record, *visible[position - 1])
        if outcome[0] != "ok":
            # Nothing written, and the clock did not move.
            assert store.head == head
            assert store.version(stream) == version
            assert self.clock.peek_micros() == clock_us
            return
        recorded = store.append(stream, events, expected_version=expected)
        first = len(model.visible()) + 1
        entries = []
        for index, (event, record) in enumerate(zip(events, recorded, strict=True)):
            recorded_us = model.clock_us + index * model.step_us
            if event.event_id is None:
                assert len(record.event_id) == 36 and model.find(record.event_id) is None
            entries.append(
                Entry(
                    event_id=event.event_id or record.event_id,
                    stream=stream,
                    type=event.type,
                    data=dict(event.data),
                    metadata=dict(event.metadata or {}),
                    recorded_us=recorded_us,
                    occurred_us=recorded_us
                    if event.occurred_at is None
                    else to_micros(event.occurred_at),
                )
            )
        model.clock_us += len(events) * model.step_us
        assert len(recorded) == len(events)
        for index, (record, entry) in enumerate(zip(recorded, entries, strict=True)):
            record_matches(record, first + index, version + index + 1, entry)
        assert len({e.event_id for e in entries}) == len(entries)
        model.add(entries)
        assert self.clock.peek_micros() == model.clock_us

    def retry_batch(self, data: st.DataObject, *, identical: bool) -> tuple[str, list[el.Event]]:
        """Events repeating stored or staged ones (identically, or with a change)."""
        visible = self.model.visible()
        first = data.draw(st.sampled_from(visible), label="retried")
        same_stream = [e for e in visible if e.stream == first.stream and e is not first]
        others = data.draw(
            st.lists(st.sampled_from(same_stream), max_size=2, unique_by=id)
            if same_stream
            else st.just([]),
            label="retried too",
        )
        chosen = [first, *others]
        stream = first.stream
        events = [self.repeat(entry, data) for entry in chosen]
        if not identical:
            index = data.draw(st.integers(0, len(events) - 1), label="changed")
            change = data.draw(
                st.sampled_from(
                    ["type", "data", "number", "metadata", "occurred", "stream", "new"]
                ),
                label="change",
            )
            event = events[index]
            if change == "type":
                events[index] = el.Event(
                    next(t for t in TYPES if t != event.type),
                    event.data,
                    event.metadata,
                    event.event_id,
                    event.occurred_at,
                )
            elif change in ("data", "number"):
                changed = dict(event.data)
                # 1 and 1.0 are different JSON: the retry must be refused either way.
                changed["n"] = 1.0 if change == "number" and changed.get("n") == 1 else 1
                if canon(changed) == canon(event.data):
                    changed["n"] = True
                events[index] = el.Event(
                    event.type, changed, event.metadata, event.event_id, event.occurred_at
                )
            elif change == "metadata":
                metadata = {**(event.metadata or {}), "correlation_id": "changed"}
                if canon(metadata) == canon(event.metadata or {}):
                    metadata["extra"] = 1
                events[index] = el.Event(
                    event.type, event.data, metadata, event.event_id, event.occurred_at
                )
            elif change == "occurred":
                entry = chosen[index]
                events[index] = el.Event(
                    event.type,
                    event.data,
                    event.metadata,
                    event.event_id,
                    from_micros(entry.occurred_us + 1),
                )
            elif change == "stream":
                stream = next(s for s in STREAMS if s != stream)
            else:  # a new event among the retried ones: a partial retry
                events.insert(index, self.new_event(data))
        return stream, events

    @staticmethod
    def repeat(entry: Entry, data: st.DataObject) -> el.Event:
        """An event with ``entry``'s content, written in another (equivalent) way."""
        payload = dict(reversed(list(entry.data.items())))  # key order does not count
        metadata: dict | None = dict(entry.metadata)
        if not metadata and data.draw(st.booleans(), label="metadata None"):
            metadata = None
        occurred_at = None
        if data.draw(st.booleans(), label="repeat occurred_at"):
            occurred_at = from_micros(entry.occurred_us)
        return el.Event(entry.type, payload, metadata, entry.event_id, occurred_at)

    # ------------------------------------------------------------------ setup

    @initialize(
        threshold=st.sampled_from([1, 1, 2, 3, 5, 100_000]),
        arrow_rows=st.sampled_from([2, 64]),
        hold=st.booleans(),
        sync=st.sampled_from([False, False, True]),
    )
    def configure(self, threshold: int, arrow_rows: int, hold: bool, sync: bool) -> None:
        """A small threshold makes commits hand their rows to background absorbs; a small
        ``ARROW_COMMIT_ROWS`` makes them journal and buffer Arrow batches; ``hold`` keeps
        each background absorb waiting until a rule, a read or close lets it go.

        ``sync=False`` (no flush per commit, and uncompressed Arrow records in the
        journal) keeps most runs fast; the flushed, LZ4-compressed journal is drawn too.
        """
        if sync:
            self.store.close()
            self.sync = True
            self.store = el.EventStore(self.path, clock=self.clock, sync=True)
        eventlab.store.ABSORB_THRESHOLD = threshold
        eventlab.pending.ARROW_COMMIT_ROWS = arrow_rows
        write_batch, finish, abandon, start = self.saved[2:]
        gate = self.gate

        def gated_write(con, batch, writers):
            if threading.current_thread().name == "eventlab-absorb" and hold:
                gate.wait(timeout=60)  # (a timeout, so a mistake fails instead of hanging)
            write_batch(con, batch, writers)

        def closing_start(absorber, con, batch, writers):
            if hold:
                gate.clear()
            start(absorber, con, batch, writers)

        def opening_finish(absorber, con):
            gate.set()
            finish(absorber, con)

        def opening_abandon(absorber):
            gate.set()
            abandon(absorber)

        eventlab.absorber.write_batch = gated_write
        eventlab.absorber.Absorber.finish = opening_finish
        eventlab.absorber.Absorber.abandon = opening_abandon
        eventlab.absorber.Absorber.start = closing_start

    # ------------------------------------------------------------------ appends

    @rule(data=st.data())
    def append(self, data: st.DataObject) -> None:
        stream = data.draw(st.sampled_from(STREAMS), label="stream")
        count = data.draw(st.integers(0, 3), label="count")
        events = [self.new_event(data) for _ in range(count)]
        self.do_append(stream, events, self.expected_version(data, stream))

    # Appends are what everything else reads: more rules raise their share.
    append_more = append
    append_again = append

    @rule(data=st.data())
    def append_many(self, data: st.DataObject) -> None:
        """A batch big enough to be journalled and buffered as one Arrow batch."""
        stream = data.draw(st.sampled_from(STREAMS), label="stream")
        with_ids = data.draw(st.booleans(), label="caller ids")
        events = [
            el.Event(
                TYPES[i % 3],
                {"i": i},
                {"correlation_id": "c"} if i % 2 else None,
                self.model.next_id() if with_ids else None,
            )
            for i in range(data.draw(st.integers(60, 70), label="count"))
        ]
        self.do_append(stream, events, self.expected_version(data, stream))

    @rule(data=st.data())
    @precondition(lambda self: self.model.visible())
    def reappend_identical(self, data: st.DataObject) -> None:
        stream, events = self.retry_batch(data, identical=True)
        self.do_append(stream, events, self.expected_version(data, stream))

    @rule(data=st.data())
    @precondition(lambda self: self.model.visible())
    def reappend_changed(self, data: st.DataObject) -> None:
        stream, events = self.retry_batch(data, identical=False)
        self.do_append(stream, events, self.expected_version(data, stream))

    @rule(data=st.data(), same=st.booleans())
    @precondition(lambda self: self.model.rolled_back)
    def reuse_a_rolled_back_id(
        self, data: st.DataObject, same: bool, candidates: list[Entry] | None = None
    ) -> None:
        """The id of an event whose transaction block raised is free: a new event may
        take it (with the same content or another)."""
        candidates = candidates or self.model.rolled_back
        entry = data.draw(st.sampled_from(candidates), label="rolled back")
        if self.model.find(entry.event_id) is None:
            event = self.repeat(entry, data) if same else self.new_event(data, with_id=True)
            event = el.Event(event.type, event.data, event.metadata, entry.event_id)
            stream = entry.stream if same else data.draw(st.sampled_from(STREAMS))
            self.do_append(stream, [event], None)

    @rule(data=st.data())
    @precondition(lambda self: not self.scopes and self.absorb_held())
    def append_while_an_absorb_is_held(self, data: st.DataObject) -> None:
        """Commits while a background absorb holds the renamed journal go to a new one.

        Without caller ids: looking one up in DuckDB would wait for the absorb."""
        stream = data.draw(st.sampled_from(STREAMS), label="stream")
        self.do_append(stream, [self.new_event(data, with_id=False)], None)

    @rule(data=st.data())
    def append_same_id_twice(self, data: st.DataObject) -> None:
        first = self.new_event(data, with_id=True)
        second = el.Event("Deposited", {"n": 2}, event_id=first.event_id)
        self.do_append(data.draw(st.sampled_from(STREAMS)), [first, second], None)

    @rule(data=st.data())
    def append_bad_payload(self, data: st.DataObject) -> None:
        """A value JSON cannot hold, anywhere in a batch: refused, nothing changes."""
        model, store = self.model, self.store
        stream = data.draw(st.sampled_from(STREAMS), label="stream")
        events = [self.new_event(data) for _ in range(data.draw(st.integers(0, 2)))]
        bad = data.draw(st.sampled_from([*BAD_VALUES, "circular", "proxy"]), label="bad value")
        where = data.draw(st.sampled_from(["data", "metadata"]), label="where")
        if bad == "circular":
            payload = circular()
        elif bad == "proxy":
            payload = types.MappingProxyType({"n": 1})
        else:
            payload = {"n": 1, "bad": [bad]}
        if where == "data" or bad == "proxy":
            bad_event = el.Event("Deposited", payload, event_id=self.model.next_id())
        else:
            bad_event = el.Event("Deposited", {"n": 1}, metadata=payload)
        if data.draw(st.booleans(), label="reuse id") and model.visible():
            # The id of a stored event: the payload check must still come first.
            entry = data.draw(st.sampled_from(model.visible()), label="reused")
            bad_event = el.Event(entry.type, bad_event.data, bad_event.metadata, entry.event_id)
            events = []
        events.insert(data.draw(st.integers(0, len(events))), bad_event)
        compare = not model.in_tx and data.draw(st.booleans(), label="compare reads")
        if compare:
            before = store.events()
        head, clock_us = store.head, self.clock.peek_micros()
        versions = {s: store.version(s) for s in STREAMS}
        with pytest.raises(el.EventlabError) as caught:
            # (A wrong expected version would be refused first, and rightly.)
            store.append(stream, events, expected_version=model.version(stream))
        assert "events[" in str(caught.value)
        assert store.head == head
        assert {s: store.version(s) for s in STREAMS} == versions
        assert self.clock.peek_micros() == clock_us
        if compare:
            pd.testing.assert_frame_equal(store.events(), before)

    @rule(data=st.data())
    def append_bad_arguments(self, data: st.DataObject) -> None:
        head, clock_us = self.store.head, self.clock.peek_micros()
        stream, expected = "acct-1", None
        case = data.draw(st.sampled_from(["stream", "expected", "events"]), label="bad argument")
        events: Any = [el.Event("Opened", {})]
        if case == "stream":
            stream = data.draw(st.sampled_from(["", " ", SURROGATE, "a" + SURROGATE, 5, None]))
        elif case == "expected":
            expected = data.draw(st.sampled_from([-1, True, "1", 1.0]))
        else:
            events = data.draw(
                st.sampled_from(["Opened", 7, [{"data": {}}], [{"type": "A", "x": 1}]])
            )
        with pytest.raises(el.EventlabError):
            self.store.append(stream, events, expected_version=expected)
        assert self.store.head == head
        assert self.clock.peek_micros() == clock_us

    # ------------------------------------------------------------------ transactions

    @rule()
    @precondition(lambda self: len(self.scopes) < 3)
    def begin(self) -> None:
        scope = self.store.transaction()
        scope.__enter__()
        self.scopes.append(scope)
        self.model.begin()

    @rule(raised=st.booleans())
    @precondition(lambda self: self.scopes)
    def end(self, raised: bool) -> None:
        scope = self.scopes.pop()
        if raised:
            assert scope.__exit__(Boom, Boom(), None) is False
        else:
            scope.__exit__(None, None, None)
        self.model.end(raised=raised)

    end_more = end  # blocks commit more often than they open

    @rule(data=st.data())
    def block(self, data: st.DataObject) -> None:
        """A ``with store.transaction():`` block with appends and nested blocks; a block
        that raises is caught by its parent (or here)."""
        try:
            self.run_block(data, depth=0)
        except Boom:
            pass

    def run_block(self, data: st.DataObject, depth: int) -> None:
        self.model.begin()
        raised = False
        try:
            with self.store.transaction():
                for _ in range(data.draw(st.integers(0, 3), label="items")):
                    kind = data.draw(
                        st.sampled_from(["append", "append", "block"])
                        if depth < 2
                        else st.just("append")
                    )
                    if kind == "block":
                        undone = len(self.model.rolled_back)
                        try:
                            self.run_block(data, depth + 1)
                        except Boom:
                            if data.draw(st.booleans(), label="propagate"):
                                raise
                            # The ids the inner block took are free again, right away.
                            just_undone = [
                                e
                                for e in self.model.rolled_back[undone:]
                                if e.event_id.startswith("ev-")  # a caller's id
                            ]
                            if just_undone and data.draw(st.booleans(), label="reuse"):
                                same = data.draw(st.booleans(), label="same content")
                                self.reuse_a_rolled_back_id(data, same, just_undone)
                    else:
                        self.append(data)
                    assert self.store.head == len(self.model.committed)
                if data.draw(st.booleans(), label="raise"):
                    raise Boom
        except Boom:
            raised = True
            raise
        finally:
            self.model.end(raised=raised)

    end_more = end  # blocks commit more often than they open

    @rule()
    @precondition(lambda self: self.scopes)
    def close_inside_a_transaction(self) -> None:
        with pytest.raises(el.EventlabError, match="inside a store.transaction"):
            self.store.close()
        assert not self.store.closed

    # ------------------------------------------------------------------ absorbing and clock

    @rule()
    def absorb_by_reading(self) -> None:
        count = self.store.sql("SELECT count(*) AS n FROM events")["n"][0]
        assert count == len(self.model.committed)

    @rule()
    def let_background_absorb_run(self) -> None:
        """Release a held background absorb: it runs while the next steps do."""
        if self.gate.is_set():
            self.quiesce()
        self.gate.set()

    def quiesce(self) -> None:
        """Let a background absorb finish (without the store collecting it), so that the
        files hold still while they are copied."""
        self.gate.set()
        thread = self.store._absorber._thread
        if thread is not None:
            thread.join()

    @rule(data=st.data())
    @precondition(lambda self: not self.scopes)
    def check_everything(self, data: st.DataObject) -> None:
        check_reads(self.store, self.model, data)

    @rule(data=st.data())
    @precondition(lambda self: self.scopes)
    def read_inside_a_transaction(self, data: st.DataObject) -> None:
        # Reads see committed events; version() sees the transaction's own appends.
        check_reads(self.store, self.model, data)

    @rule(step_ms=st.sampled_from([0, 1, 1000]), jump_s=st.integers(0, 100))
    def move_clock(self, step_ms: int, jump_s: int) -> None:
        self.clock.advance(timedelta(seconds=jump_s))
        self.clock.step = timedelta(milliseconds=step_ms)
        self.model.clock_us += jump_s * 1_000_000
        self.model.step_us = step_ms * 1000

    @rule(seed=st.integers(0, 3))
    @precondition(lambda self: not self.scopes)
    def seed_ids(self, seed: int) -> None:
        self.store.seed_event_ids(seed)

    @rule(data=st.data())
    @precondition(lambda self: len(self.readers) < 2)
    def start_reading(self, data: st.DataObject) -> None:
        """Start a read_all() and take a few records; the rest is read in a later step,
        after whatever else happened meanwhile (it must still be the log as it was)."""
        batch_size = data.draw(st.sampled_from([1, 2, 100]), label="batch size")
        expected = numbered(self.model.committed)
        reader = self.store.read_all(batch_size=batch_size)
        taken = data.draw(st.integers(0, len(expected)), label="taken")
        for (position, version, entry), record in zip(expected[:taken], reader, strict=False):
            record_matches(record, position, version, entry)
        self.readers.append((reader, expected[taken:]))

    @rule(data=st.data())
    @precondition(lambda self: self.readers)
    def finish_reading(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.readers) - 1), label="reader")
        reader, expected = self.readers.pop(index)
        rest = list(reader)
        assert len(rest) == len(expected)
        for record, (position, version, entry) in zip(rest, expected, strict=True):
            record_matches(record, position, version, entry)

    def drop_readers(self) -> None:
        """The store is closing: a reader gives the rest of its records or stops with
        StoreClosedError (a read-ahead thread cannot outlive the connection)."""
        for reader, expected in self.readers:
            got: list[el.RecordedEvent] = []
            try:
                got.extend(reader)
            except el.StoreClosedError:
                # (Also after the last record, when the end was still to be fetched.)
                assert len(got) <= len(expected)
            else:
                assert len(got) == len(expected)
            for record, (position, version, entry) in zip(got, expected, strict=False):
                record_matches(record, position, version, entry)
        self.readers = []

    @rule(read_only=st.booleans())
    def second_store_is_refused(self, read_only: bool) -> None:
        with pytest.raises(el.StoreLockedError, match="already open in this process"):
            el.EventStore(self.path, read_only=read_only)
        assert not self.store.closed

    # ------------------------------------------------------------------ close, reopen, crash

    @rule(peek=st.booleans(), twice=st.booleans())
    @precondition(lambda self: not self.scopes)
    def close_and_reopen(self, peek: bool, twice: bool) -> None:
        self.store.close()
        self.drop_readers()
        if twice:
            self.store.close()
        assert not self.path.with_name(self.path.name + ".journal").exists()
        with pytest.raises(el.StoreClosedError):
            self.store.append("acct-1", el.Event("Opened", {}))
        with pytest.raises(el.StoreClosedError):
            self.store.streams()
        with pytest.raises(el.StoreClosedError):
            self.store.transaction()
        if peek:
            with el.EventStore(self.path, read_only=True) as reader:
                check_reads(reader, self.model, own=False)
                with pytest.raises(el.ReadOnlyError):
                    reader.append("acct-1", el.Event("Opened", {}))
        self.store = el.EventStore(self.path, clock=self.clock, sync=self.sync)
        assert self.store.head == len(self.model.committed)

    @rule(peek=st.booleans(), switch=st.booleans(), stale_journal=st.booleans())
    def crash(self, peek: bool, switch: bool, stale_journal: bool) -> None:
        """Copy the files of the open store (a crash image) and open the copy.

        With ``stale_journal`` the journal is copied before an absorb and the database
        after it: a crash between DuckDB's commit and the journal being emptied.
        """
        self.copies += 1
        target = self.directory / f"copy-{self.copies}" / "store.duckdb"
        target.parent.mkdir()
        journals = (".journal", ".journal.absorbing")
        if self.absorb_held():
            # A held absorb has not touched DuckDB: its rows are in the renamed journal,
            # later commits in the journal. Recovery reads both, in that order.
            assert self.path.with_name(self.path.name + ".journal.absorbing").exists()
            stale_journal = False
        else:
            self.quiesce()
        if stale_journal:
            self.copy_files(target, journals)
            self.absorb_by_reading()
            self.quiesce()
            self.copy_files(target, ("", ".wal"))
        else:
            self.copy_files(target, ("", ".wal", *journals))
        if peek:
            with el.EventStore(target, read_only=True) as reader:
                check_reads(reader, self.model, own=False)
        switch = switch and not self.scopes
        copy = el.EventStore(target, clock=self.clock, sync=self.sync)
        try:
            assert copy.head == len(self.model.committed)
            # Recovery absorbed the renamed journal's rows, and removed it.
            assert not target.with_name(target.name + ".journal.absorbing").exists()
            check_reads(copy, self.model, own=False)
        except BaseException:
            copy.close()
            raise
        if not switch:
            copy.close()
            return
        self.store.close()
        self.drop_readers()
        self.store, self.path = copy, target

    def absorb_held(self) -> bool:
        thread = self.store._absorber._thread
        return not self.gate.is_set() and thread is not None and thread.is_alive()

    @rule(data=st.data(), peek=st.booleans(), switch=st.booleans(), commits=st.integers(0, 2))
    @precondition(lambda self: self.absorb_held())
    def crash_while_absorbing(
        self, data: st.DataObject, peek: bool, switch: bool, commits: int
    ) -> None:
        """A crash with rows in the renamed journal and (after ``commits``) the new one."""
        for _ in range(commits if not self.scopes else 0):
            self.append_while_an_absorb_is_held(data)
        self.crash(peek=peek, switch=switch, stale_journal=False)

    def copy_files(self, target: Path, suffixes: tuple[str, ...]) -> None:
        for suffix in suffixes:
            source = self.path.with_name(self.path.name + suffix)
            if source.exists():
                shutil.copyfile(source, target.with_name(target.name + suffix))

    # ------------------------------------------------------------------ invariants

    @invariant()
    def head_and_versions(self) -> None:
        # Neither read absorbs once the versions are loaded: rows stay pending.
        assert self.store.head == len(self.model.committed)
        for stream in STREAMS:
            assert self.store.version(stream) == self.model.version(stream)

    def teardown(self) -> None:
        try:
            while self.scopes:
                self.scopes.pop().__exit__(Boom, Boom(), None)
                self.model.end(raised=True)
            if not self.store.closed:
                self.store.close()
                self.drop_readers()
                with el.EventStore(self.path, read_only=True) as reader:
                    check_reads(reader, self.model, own=False)
        finally:
            eventlab.store.ABSORB_THRESHOLD = self.saved[0]
            eventlab.pending.ARROW_COMMIT_ROWS = self.saved[1]
            self.gate.set()
            eventlab.absorber.write_batch = self.saved[2]
            eventlab.absorber.Absorber.finish = self.saved[3]
            eventlab.absorber.Absorber.abandon = self.saved[4]
            eventlab.absorber.Absorber.start = self.saved[5]
            shutil.rmtree(self.directory, ignore_errors=True)


# About 10 s here. Hunting locally, raise max_examples and stateful_step_count (runs of
# 200 to 300 examples of 60 to 80 steps found nothing more).
StoreMachine.TestCase.settings = settings(
    max_examples=12,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
TestStoreMachine = StoreMachine.TestCase
