"""Property tests: random appends, transactions and reopens checked against a model.

The model is a plain list of committed events in position order. After each step
the store must hold exactly the model: same events, positions 1..N without gaps,
versions 1..k in every stream. A rejected append (ConcurrencyError) and a
transaction block that raises must leave no trace.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventlab as el
import eventlab.store

STREAMS = ("acct-0", "acct-1", "acct-2")
TYPES = ("Opened", "Deposited", "Withdrawn")

SETTINGS = settings(
    max_examples=35,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Boom(Exception):
    """Raised on purpose inside a transaction block."""


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class AppendSpec:
    stream: int
    events: tuple[tuple[str, str, bool], ...]  # (type, text, supply an event_id)
    mode: str  # "none" | "right" | "wrong"
    delta: int  # how far a wrong expected_version is off


@dataclass(frozen=True)
class Block:
    items: tuple  # AppendSpec | Block
    raise_at: int | None  # raise Boom before item i (len(items): after the last one)
    caught: bool  # a nested block's Boom is caught by its parent block


@dataclass(frozen=True)
class Reopen:
    read_only_peek: bool


@dataclass(frozen=True)
class Check:
    pass


def key(record: el.RecordedEvent) -> tuple:
    """Everything that identifies a stored event, decoded."""
    return (
        record.position,
        record.event_id,
        record.stream_id,
        record.version,
        record.type,
        record.data,
        record.metadata,
        record.recorded_at,
        record.occurred_at,
    )


class Model:
    """Committed events in position order, plus a serial for unique payloads."""

    def __init__(self) -> None:
        self.events: list[tuple] = []  # key() tuples
        self.serial = 0

    def version(self, stream: str) -> int:
        return sum(1 for event in self.events if event[2] == stream)

    def snapshot(self) -> int:
        return len(self.events)

    def restore(self, snapshot: int) -> None:
        del self.events[snapshot:]


def wrong_expected(current: int, delta: int) -> int:
    expected = current + delta
    if expected < 0 or expected == current:
        expected = current + abs(delta)
    return expected


def do_append(store: el.EventStore, model: Model, spec: AppendSpec) -> None:
    """Append per ``spec``, check the outcome against the model, and update it."""
    stream = STREAMS[spec.stream]
    current = model.version(stream)
    events = []
    payloads = []
    for event_type, text, supply_id in spec.events:
        model.serial += 1
        data = {"n": model.serial, "text": text}
        event_id = f"ev-{model.serial}" if supply_id else None
        events.append(el.Event(event_type, data, event_id=event_id))
        payloads.append((event_type, data, event_id))
    if spec.mode == "wrong":
        expected = wrong_expected(current, spec.delta)
        before = store.head
        with pytest.raises(el.ConcurrencyError) as caught:
            store.append(stream, events, expected_version=expected)
        assert caught.value.stream_id == stream
        assert caught.value.expected == expected
        assert caught.value.actual == current
        assert store.head == before
        return
    expected = current if spec.mode == "right" else None
    recorded = store.append(stream, events, expected_version=expected)
    first = len(model.events) + 1
    assert [r.position for r in recorded] == list(range(first, first + len(events)))
    assert [r.version for r in recorded] == list(range(current + 1, current + 1 + len(events)))
    assert [(r.stream_id, r.type, r.data, r.metadata) for r in recorded] == [
        (stream, t, d, {}) for t, d, _ in payloads
    ]
    for record, (_, _, event_id) in zip(recorded, payloads, strict=True):
        if event_id is not None:
            assert record.event_id == event_id
    model.events.extend(key(r) for r in recorded)


def run_block(store: el.EventStore, model: Model, block: Block) -> None:
    """Run a transaction block; raises Boom when the block (or an uncaught child) did."""
    saved = model.snapshot()
    try:
        with store.transaction():
            for index, item in enumerate(block.items):
                if block.raise_at == index:
                    raise Boom(index)
                if isinstance(item, Block):
                    try:
                        run_block(store, model, item)
                    except Boom:
                        if not item.caught:
                            raise
                else:
                    do_append(store, model, item)
            if block.raise_at == len(block.items):
                raise Boom(len(block.items))
    except Boom:
        model.restore(saved)
        raise


def assert_log_invariants(records: list[el.RecordedEvent]) -> None:
    assert [r.position for r in records] == list(range(1, len(records) + 1))
    seen: dict[str, int] = {}
    for record in records:
        seen[record.stream_id] = seen.get(record.stream_id, 0) + 1
        assert record.version == seen[record.stream_id]
    assert len({r.event_id for r in records}) == len(records)


def assert_store_matches(store: el.EventStore, model: Model) -> None:
    records = list(store.read_all())
    assert_log_invariants(records)
    assert [key(r) for r in records] == model.events
    for stream in STREAMS:
        assert [key(r) for r in store.read_stream(stream)] == [
            event for event in model.events if event[2] == stream
        ]
        assert store.version(stream) == model.version(stream)
    assert store.streams() == sorted({event[2] for event in model.events})
    assert store.head == len(model.events)


# --------------------------------------------------------------------------- strategies

event_specs = st.tuples(
    st.sampled_from(TYPES),
    st.text(max_size=8),
    st.booleans(),
)
append_specs = st.builds(
    AppendSpec,
    stream=st.integers(0, len(STREAMS) - 1),
    events=st.lists(event_specs, min_size=1, max_size=3).map(tuple),
    mode=st.sampled_from(["none", "right", "wrong"]),
    delta=st.sampled_from([-2, -1, 1, 2]),
)


def blocks(depth: int) -> st.SearchStrategy[Block]:
    item = append_specs if depth == 0 else st.one_of(append_specs, append_specs, blocks(depth - 1))
    return st.tuples(
        st.lists(item, min_size=1, max_size=4),
        st.one_of(st.none(), st.none(), st.integers(0, 4)),
        st.booleans() | st.just(True),
    ).map(
        lambda t: Block(
            items=tuple(t[0]),
            raise_at=None if t[1] is None else min(t[1], len(t[0])),
            caught=t[2],
        )
    )


def apply(store: el.EventStore, model: Model, op: AppendSpec | Block) -> None:
    if isinstance(op, Block):
        try:
            run_block(store, model, op)
        except Boom:
            pass
    else:
        do_append(store, model, op)


# --------------------------------------------------------------------------- (a) appends


@SETTINGS
@given(ops=st.lists(append_specs, min_size=1, max_size=20))
def test_interleaved_appends_match_the_model(ops: list[AppendSpec]) -> None:
    with el.EventStore() as store:
        model = Model()
        for op in ops:
            do_append(store, model, op)
            assert_store_matches(store, model)


# --------------------------------------------------------------------------- (b) transactions


@SETTINGS
@given(ops=st.lists(st.one_of(append_specs, blocks(2)), min_size=1, max_size=6))
def test_transactions_that_raise_leave_no_trace(ops: list[AppendSpec | Block]) -> None:
    with el.EventStore() as store:
        model = Model()
        for op in ops:
            apply(store, model, op)
            assert_store_matches(store, model)


def test_nested_block_that_raises_undoes_only_its_own_appends() -> None:
    # The smallest case of the property above, kept as a readable example.
    with el.EventStore() as store:
        with store.transaction():
            store.append("a", [el.Event("A", {"i": 1})])
            with pytest.raises(Boom):
                with store.transaction():
                    store.append("b", [el.Event("B", {"i": 2})])
                    raise Boom
            store.append("c", [el.Event("C", {"i": 3})], expected_version=0)
        assert [(r.position, r.stream_id, r.version, r.data) for r in store.read_all()] == [
            (1, "a", 1, {"i": 1}),
            (2, "c", 1, {"i": 3}),
        ]
        assert store.head == 2
        assert store.version("b") == 0


def test_outer_block_that_raises_after_a_caught_inner_raise_stores_nothing() -> None:
    with el.EventStore() as store:
        store.append("a", [el.Event("A", {"i": 0})])
        with pytest.raises(Boom):
            with store.transaction():
                store.append("a", [el.Event("A", {"i": 1})], expected_version=1)
                try:
                    with store.transaction():
                        store.append("b", [el.Event("B", {"i": 2})])
                        raise Boom
                except Boom:
                    pass
                store.append("c", [el.Event("C", {"i": 3})])
                raise Boom
        assert [(r.position, r.stream_id, r.version, r.data) for r in store.read_all()] == [
            (1, "a", 1, {"i": 0}),
        ]
        recorded = store.append("b", [el.Event("B", {"i": 4})], expected_version=0)
        assert [(r.position, r.version) for r in recorded] == [(2, 1)]


# --------------------------------------------------------------------------- (c) file store


file_ops = st.one_of(
    append_specs,
    append_specs,
    append_specs,
    blocks(1),
    st.builds(Reopen, read_only_peek=st.booleans()),
    st.just(Check()),
)


@settings(SETTINGS, max_examples=20)
@given(
    ops=st.lists(file_ops, min_size=1, max_size=15),
    threshold=st.sampled_from([1, 3, 50_000]),
)
def test_file_store_with_reopens_matches_the_model(ops: list, threshold: int) -> None:
    directory = Path(tempfile.mkdtemp(prefix="eventlab-prop-"))
    path = directory / "store.duckdb"
    store = el.EventStore(path)
    try:
        with mock.patch.object(eventlab.store, "ABSORB_THRESHOLD", threshold):
            model = Model()
            for op in ops:
                if isinstance(op, Reopen):
                    store.close()
                    if op.read_only_peek:
                        with el.EventStore(path, read_only=True) as reader:
                            assert_store_matches(reader, model)
                            with pytest.raises(el.ReadOnlyError):
                                reader.append(STREAMS[0], [el.Event("Opened", {})])
                    store = el.EventStore(path)
                    assert_store_matches(store, model)
                elif isinstance(op, Check):
                    assert_store_matches(store, model)
                else:
                    apply(store, model, op)
                    # Cheap after every step (no read of the log); the full history
                    # is compared at Check, at each reopen and at the end.
                    assert store.head == len(model.events)
                    for stream in STREAMS:
                        assert store.version(stream) == model.version(stream)
            store.close()
            store = el.EventStore(path)
            assert_store_matches(store, model)
    finally:
        store.close()
        shutil.rmtree(directory)
