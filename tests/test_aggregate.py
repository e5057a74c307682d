"""Aggregate: commands emit events, save with optimistic concurrency, load at any point in time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import eventlab as el

START = datetime(2024, 1, 1, tzinfo=UTC)  # the conftest clock: one second per event
US = timedelta(microseconds=1)


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


class OrderError(Exception):
    """A domain rule was broken: the command is refused."""


class Order(el.Aggregate):
    def __init__(self, id):
        super().__init__(id)
        self.status = "new"
        self.customer = None
        self.lines: dict[str, int] = {}
        self.total = 0

    # commands
    def place(self, customer: str) -> None:
        if self.status != "new":
            raise OrderError(f"order {self.id} is already {self.status}")
        self.emit("OrderPlaced", {"customer": customer})

    def add_line(self, sku: str, qty: int, price: int) -> None:
        if self.status != "placed":
            raise OrderError(f"cannot add lines to a {self.status} order")
        if qty <= 0:
            raise OrderError(f"quantity must be positive, got {qty}")
        self.emit("LineAdded", {"sku": sku, "qty": qty, "price": price})

    def ship(self) -> None:
        if not self.lines:
            raise OrderError("cannot ship an empty order")
        self.emit("OrderShipped")

    # handlers
    def apply_OrderPlaced(self, event):
        self.status = "placed"
        self.customer = event.data["customer"]

    def apply_LineAdded(self, event):
        self.lines[event.data["sku"]] = self.lines.get(event.data["sku"], 0) + event.data["qty"]
        self.total += event.data["qty"] * event.data["price"]

    def apply_OrderShipped(self, event):
        self.status = "shipped"


class LenientOrder(Order):
    ignore_unknown = True


def state(order: Order) -> tuple:
    return (order.id, order.version, order.status, order.customer, order.lines, order.total)


def stored(store: el.EventStore, stream_id: str) -> list[tuple]:
    return [(r.position, r.version, r.type, r.data) for r in store.read_stream(stream_id)]


@pytest.fixture
def placed(store):
    """order-1 stored: placed by ada (v1), 2 x apple at 3 (v2), 1 x pear at 5 (v3)."""
    order = Order.load(store, "order-1")
    order.place("ada")
    order.add_line("apple", 2, 3)
    order.add_line("pear", 1, 5)
    order.save(store)
    return store


# ------------------------------------------------------------------------ load and emit


def test_load_of_a_missing_stream_gives_a_blank_aggregate_at_version_zero(store, snapshot):
    before = snapshot(store)
    order = Order.load(store, "order-1")
    assert isinstance(order, Order)
    assert state(order) == ("order-1", 0, "new", None, {}, 0)
    assert order.pending_events == []
    before.assert_same(store)


def test_a_command_emits_an_event_applied_at_once_and_queued(store):
    order = Order.load(store, "order-1")
    order.place("ada")
    assert (order.status, order.customer, order.version) == ("placed", "ada", 1)
    assert order.pending_events == [el.Event("OrderPlaced", {"customer": "ada"})]
    order.add_line("apple", 2, 3)
    assert (order.lines, order.total, order.version) == ({"apple": 2}, 6, 2)
    assert [(e.type, e.data) for e in order.pending_events] == [
        ("OrderPlaced", {"customer": "ada"}),
        ("LineAdded", {"sku": "apple", "qty": 2, "price": 3}),
    ]
    assert store.head == 0
    assert store.version("order-1") == 0


def test_emit_returns_the_event_and_pending_events_is_a_copy(store):
    order = Order.load(store, "order-1")
    event = order.emit("OrderPlaced", {"customer": "bob"})
    assert event == el.Event("OrderPlaced", {"customer": "bob"})
    order.pending_events.append(el.Event("OrderShipped"))
    order.pending_events.clear()
    assert order.pending_events == [event]
    assert order.version == 1


def test_a_refused_command_emits_nothing_and_changes_nothing(store):
    order = Order.load(store, "order-1")
    with pytest.raises(OrderError, match="cannot add lines to a new order"):
        order.add_line("apple", 1, 3)
    order.place("ada")
    with pytest.raises(OrderError, match="already placed"):
        order.place("bob")
    with pytest.raises(OrderError, match="quantity must be positive, got 0"):
        order.add_line("apple", 0, 3)
    with pytest.raises(OrderError, match="empty order"):
        order.ship()
    assert state(order) == ("order-1", 1, "placed", "ada", {}, 0)
    assert [e.type for e in order.pending_events] == ["OrderPlaced"]


def test_a_handler_that_raises_during_emit_queues_nothing(store):
    order = Order.load(store, "order-1")
    with pytest.raises(KeyError):
        order.emit("OrderPlaced", {"name": "ada"})  # the handler needs "customer"
    assert order.pending_events == []
    assert order.version == 0


# ---------------------------------------------------------------------------------- save


def test_save_appends_the_queue_to_the_aggregates_stream_and_clears_it(store):
    order = Order.load(store, "order-1")
    order.place("ada")
    order.add_line("apple", 2, 3)
    recorded = order.save(store)
    assert [(r.stream_id, r.version, r.type) for r in recorded] == [
        ("order-1", 1, "OrderPlaced"),
        ("order-1", 2, "LineAdded"),
    ]
    assert order.pending_events == []
    assert order.version == 2
    assert stored(store, "order-1") == [
        (1, 1, "OrderPlaced", {"customer": "ada"}),
        (2, 2, "LineAdded", {"sku": "apple", "qty": 2, "price": 3}),
    ]
    assert state(Order.load(store, "order-1")) == state(order)


def test_save_again_continues_the_stream(placed):
    order = Order.load(placed, "order-1")
    order.ship()
    recorded = order.save(placed)
    assert [(r.version, r.type) for r in recorded] == [(4, "OrderShipped")]
    assert (order.version, order.pending_events) == (4, [])
    assert order.save(placed) == []
    assert placed.version("order-1") == 4
    assert state(Order.load(placed, "order-1")) == (
        "order-1",
        4,
        "shipped",
        "ada",
        {"apple": 2, "pear": 1},
        11,
    )


def test_save_expects_the_version_the_aggregate_was_loaded_at(placed, monkeypatch):
    calls = []
    append = placed.append

    def spy(stream_id, events, **kwargs):
        calls.append((stream_id, [e.type for e in events], kwargs))
        return append(stream_id, events, **kwargs)

    monkeypatch.setattr(placed, "append", spy)
    order = Order.load(placed, "order-1")
    order.add_line("fig", 1, 1)
    order.add_line("fig", 1, 1)
    order.save(placed)
    order.ship()
    order.save(placed)
    assert calls == [
        ("order-1", ["LineAdded", "LineAdded"], {"expected_version": 3}),
        ("order-1", ["OrderShipped"], {"expected_version": 5}),
    ]


def test_a_concurrent_writer_between_load_and_save_gives_concurrency_error(placed, snapshot):
    mine = Order.load(placed, "order-1")
    theirs = Order.load(placed, "order-1")
    theirs.ship()
    theirs.save(placed)
    mine.add_line("fig", 1, 2)
    before = snapshot(placed)
    with pytest.raises(el.ConcurrencyError) as caught:
        mine.save(placed)
    assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == (
        "order-1",
        3,
        4,
    )
    before.assert_same(placed)
    assert [e.type for e in mine.pending_events] == ["LineAdded"]
    assert mine.version == 4
    # Reload, re-decide, save: the usual retry.
    retry = Order.load(placed, "order-1")
    assert retry.status == "shipped"
    with pytest.raises(OrderError):
        retry.place("ada")


def test_a_raw_append_to_the_stream_also_counts_as_a_concurrent_writer(placed, snapshot):
    order = Order.load(placed, "order-1")
    order.ship()
    placed.append("order-1", el.Event("LineAdded", {"sku": "kiwi", "qty": 1, "price": 1}))
    before = snapshot(placed)
    with pytest.raises(el.ConcurrencyError):
        order.save(placed)
    before.assert_same(placed)


def test_creating_a_stream_that_someone_else_created_first_is_a_conflict(store, snapshot):
    mine = Order.load(store, "order-1")
    theirs = Order.load(store, "order-1")
    theirs.place("bob")
    theirs.save(store)
    mine.place("ada")
    before = snapshot(store)
    with pytest.raises(el.ConcurrencyError) as caught:
        mine.save(store)
    assert (caught.value.expected, caught.value.actual) == (0, 1)
    before.assert_same(store)
    assert Order.load(store, "order-1").customer == "bob"


def test_an_aggregate_loaded_in_the_past_cannot_save_over_the_present(placed, snapshot):
    old = Order.load(placed, "order-1", version=2)
    old.add_line("fig", 1, 1)
    before = snapshot(placed)
    # Refused as loaded in the past, not as a conflict with someone else's write.
    with pytest.raises(el.EventlabError, match=r"loaded as of the past \(version=2\)") as caught:
        old.save(placed)
    assert not isinstance(caught.value, el.ConcurrencyError)
    assert "without version/at/known_at" in str(caught.value)
    before.assert_same(placed)


def test_an_aggregate_loaded_at_its_current_version_can_save(placed):
    order = Order.load(placed, "order-1", version=3)
    order.add_line("fig", 1, 1)
    order.save(placed)
    assert Order.load(placed, "order-1").lines == {"apple": 2, "pear": 1, "fig": 1}


def test_a_version_load_combined_with_a_time_names_both(placed):
    old = Order.load(placed, "order-1", version=1, at="2099-01-01")
    with pytest.raises(el.EventlabError, match=r"as of the past \(version=1, at=2099-01-01\)"):
        old.save(placed)


def test_the_aggregate_id_is_its_stream(store):
    order = Order.load(store, "order-42")
    assert order.id == "order-42"
    order.place("ada")
    order.save(store)
    assert store.streams() == ["order-42"]
    assert Order.load(store, "order-42").id == "order-42"
    assert Order.load(store, "order-43").id == "order-43"


def test_emit_passes_metadata_and_occurred_at_to_the_stored_event(store):
    order = Order.load(store, "order-1")
    order.emit("OrderPlaced", {"customer": "ada"}, metadata={"user": "u1"}, occurred_at=at(-60))
    [record] = order.save(store)
    assert (record.metadata, record.occurred_at, record.recorded_at) == (
        {"user": "u1"},
        at(-60),
        at(0),
    )


# ------------------------------------------------------------------------ unknown events


def test_an_event_without_a_handler_raises_unknown_event_error_naming_type_and_class(placed):
    placed.append("order-1", el.Event("GiftWrapped", {"paper": "red"}))
    with pytest.raises(el.UnknownEventError) as caught:
        Order.load(placed, "order-1")
    message = str(caught.value)
    assert isinstance(caught.value, el.EventlabError)
    assert "Order has no handler for GiftWrapped events" in message
    assert "apply_GiftWrapped" in message
    assert "ignore_unknown = True" in message
    with pytest.raises(el.UnknownEventError, match="Order has no handler for GiftWrapped"):
        el.replay(placed.read_stream("order-1"), Order)
    with pytest.raises(el.UnknownEventError, match="Order has no handler for GiftWrapped"):
        placed.state_at("order-1", Order)
    # Time travel to before the unknown event is fine.
    assert Order.load(placed, "order-1", version=3).total == 11


def test_an_event_type_that_is_no_python_name_gets_a_fix_that_works(store):
    store.append("order-1", el.Event("order.placed", {}))
    with pytest.raises(el.UnknownEventError) as caught:
        Order.load(store, "order-1")
    message = str(caught.value)
    assert "Order has no handler for order.placed events" in message
    assert "apply_order.placed" not in message
    assert "'order.placed' is not a Python name" in message
    assert "function reducer" in message and "ignore_unknown = True" in message
    assert LenientOrder.load(store, "order-1").version == 1


@pytest.mark.parametrize("stream_id", ["", "  ", None, 123, ["order-1"]])
def test_load_with_a_bad_stream_id_raises_invalid_event_error(placed, stream_id):
    with pytest.raises(el.InvalidEventError, match="stream_id must be a non-empty string"):
        Order.load(placed, stream_id)


def test_emitting_an_event_without_a_handler_raises_and_queues_nothing(store):
    order = Order.load(store, "order-1")
    with pytest.raises(el.UnknownEventError, match="Order has no handler for GiftWrapped"):
        order.emit("GiftWrapped", {})
    assert (order.pending_events, order.version) == ([], 0)


def test_ignore_unknown_skips_events_without_a_handler(placed):
    placed.append("order-1", el.Event("GiftWrapped", {"paper": "red"}))
    placed.append("order-1", el.Event("OrderShipped"))
    order = LenientOrder.load(placed, "order-1")
    assert state(order) == ("order-1", 5, "shipped", "ada", {"apple": 2, "pear": 1}, 11)
    assert el.replay(placed.read_stream("order-1"), LenientOrder).status == "shipped"
    order.emit("GiftWrapped", {"paper": "blue"})
    assert (order.version, [e.type for e in order.pending_events]) == (6, ["GiftWrapped"])
    order.save(placed)
    assert placed.version("order-1") == 6


# ------------------------------------------------------------------------------ errors


class Fragile(Order):
    def apply_OrderShipped(self, event):
        raise RuntimeError("the courier is on strike")


def test_a_handler_that_raises_during_replay_gives_replay_error(placed, snapshot):
    placed.append("other-1", el.Event("Noise"))
    placed.append("order-1", el.Event("OrderShipped"))
    before = snapshot(placed)
    with pytest.raises(el.ReplayError) as caught:
        Fragile.load(placed, "order-1")
    error = caught.value
    assert (error.stream_id, error.version, error.position, error.event_type) == (
        "order-1",
        4,
        5,
        "OrderShipped",
    )
    assert isinstance(error.__cause__, RuntimeError)
    assert str(error.__cause__) == "the courier is on strike"
    message = str(error)
    for part in ("Fragile", "OrderShipped", "'order-1'", "version 4", "position 5", "strike"):
        assert part in message
    with pytest.raises(el.ReplayError):
        el.replay(placed.read_stream("order-1"), Fragile)
    assert Fragile.load(placed, "order-1", version=3).total == 11
    before.assert_same(placed)


# -------------------------------------------------------------------------- time travel


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (0, ("order-1", 0, "new", None, {}, 0)),
        (1, ("order-1", 1, "placed", "ada", {}, 0)),
        (2, ("order-1", 2, "placed", "ada", {"apple": 2}, 6)),
        (3, ("order-1", 3, "placed", "ada", {"apple": 2, "pear": 1}, 11)),
        (None, ("order-1", 3, "placed", "ada", {"apple": 2, "pear": 1}, 11)),
    ],
)
def test_load_at_a_version_is_the_state_after_the_first_n_events(placed, version, expected):
    assert state(Order.load(placed, "order-1", version=version)) == expected
    assert state(placed.state_at("order-1", Order, version=version)) == expected


def test_load_beyond_the_end_raises_version_not_found_with_the_current_version(placed):
    with pytest.raises(el.VersionNotFoundError) as caught:
        Order.load(placed, "order-1", version=4)
    assert (caught.value.stream_id, caught.value.requested, caught.value.current) == (
        "order-1",
        4,
        3,
    )
    with pytest.raises(el.VersionNotFoundError) as caught:
        Order.load(placed, "order-2", version=1)
    assert caught.value.current == 0


@pytest.mark.parametrize(
    ("kwargs", "version", "lines"),
    [
        ({"at": START - US}, 0, {}),
        ({"at": at(0)}, 1, {}),
        ({"at": at(1)}, 2, {"apple": 2}),
        ({"at": at(2) - US}, 2, {"apple": 2}),
        ({"at": at(2)}, 3, {"apple": 2, "pear": 1}),
        ({"known_at": START - US}, 0, {}),
        ({"known_at": at(1)}, 2, {"apple": 2}),
        ({"known_at": "2024-01-01T00:00:01"}, 2, {"apple": 2}),
        ({"at": datetime(2024, 1, 1, 0, 0, 1)}, 2, {"apple": 2}),
        ({"at": "2024-01-01T01:00:02+01:00"}, 3, {"apple": 2, "pear": 1}),
    ],
)
def test_load_at_a_business_or_knowledge_time(placed, kwargs, version, lines):
    # The fixture's events were recorded (and occurred) at 0 s, 1 s and 2 s.
    order = Order.load(placed, "order-1", **kwargs)
    assert (order.version, order.lines) == (version, lines)
    assert state(placed.state_at("order-1", Order, **kwargs)) == state(order)


def test_a_time_before_the_first_event_gives_a_blank_aggregate(placed):
    blank = Order.load(placed, "order-1", at=START - timedelta(days=1))
    assert state(blank) == ("order-1", 0, "new", None, {}, 0)
    blank = Order.load(placed, "order-1", known_at=START - timedelta(days=1))
    assert state(blank) == ("order-1", 0, "new", None, {}, 0)


def day(n: int) -> datetime:
    return datetime(2024, 3, n, tzinfo=UTC)


@pytest.fixture
def corrected():
    """order-1: placed day 1, 2 apples day 2, 1 pear day 3; on day 10 a line that occurred day 2."""
    clock = el.SimulatedClock(day(1), step=timedelta(days=1))
    with el.EventStore(clock=clock) as store:
        order = Order.load(store, "order-1")
        order.place("ada")
        order.save(store)
        order.add_line("apple", 2, 3)
        order.save(store)
        order.add_line("pear", 1, 5)
        order.save(store)
        clock.advance(day(10) - clock.current)
        late = Order.load(store, "order-1")
        late.emit("LineAdded", {"sku": "fig", "qty": 4, "price": 1}, occurred_at=day(2))
        late.save(store)
        yield store


@pytest.mark.parametrize(
    ("at_", "known_at", "version", "lines"),
    [
        (None, None, 4, {"apple": 2, "pear": 1, "fig": 4}),
        (day(2), None, 4, {"apple": 2, "fig": 4}),  # the late line occurred on day 2
        (day(2), day(5), 2, {"apple": 2}),  # ... but on day 5 nobody knew about it
        (day(2), day(10), 4, {"apple": 2, "fig": 4}),
        (None, day(5), 3, {"apple": 2, "pear": 1}),
        (day(1), None, 1, {}),
    ],
)
def test_the_late_correction_with_an_aggregate(corrected, at_, known_at, version, lines):
    order = Order.load(corrected, "order-1", at=at_, known_at=known_at)
    assert (order.version, order.lines) == (version, lines)
    functional = corrected.state_at("order-1", Order, at=at_, known_at=known_at)
    assert state(functional) == state(order)


def test_loading_never_writes(placed, snapshot):
    placed.revert("order-1", to_version=2)
    before = snapshot(placed)
    for kwargs in ({}, {"version": 1}, {"version": 0}, {"at": at(1)}, {"known_at": at(1)}):
        Order.load(placed, "order-1", **kwargs)
        Order.load(placed, "order-9", **({} if "version" in kwargs else kwargs))
    el.replay(placed.read_stream("order-1"), Order)
    with pytest.raises(el.VersionNotFoundError):
        Order.load(placed, "order-1", version=5)
    before.assert_same(placed)
    assert placed.head == 4


# -------------------------------------------------------------------------------- revert


def test_load_after_a_revert_gives_the_state_at_the_target_version(placed):
    placed.revert("order-1", to_version=1, reason="wrong items")
    order = Order.load(placed, "order-1")
    assert state(order) == ("order-1", 4, "placed", "ada", {}, 0)
    assert [(v, t) for _, v, t, _ in stored(placed, "order-1")] == [
        (1, "OrderPlaced"),
        (2, "LineAdded"),
        (3, "LineAdded"),
        (4, "Reverted"),
    ]


def test_replay_of_a_reverted_stream_equals_load(placed):
    placed.revert("order-1", to_version=1)
    replayed = el.replay(placed.read_stream("order-1"), Order)
    assert (replayed.lines, replayed.total) == ({}, 0)
    # The aggregate stands at the stream's version, so it can be saved.
    assert state(replayed) == state(Order.load(placed, "order-1"))


def test_replay_of_a_stream_reverted_to_zero_keeps_the_aggregate_id(placed):
    placed.revert("order-1", to_version=0)
    replayed = el.replay(placed.read_stream("order-1"), Order)
    assert state(replayed) == ("order-1", 4, "new", None, {}, 0)


def test_save_after_a_revert_builds_on_the_reverted_state(placed):
    placed.revert("order-1", to_version=2)
    order = Order.load(placed, "order-1")
    assert (order.version, order.lines) == (4, {"apple": 2})
    order.add_line("kiwi", 3, 1)
    recorded = order.save(placed)
    assert [(r.version, r.type) for r in recorded] == [(5, "LineAdded")]
    assert Order.load(placed, "order-1").lines == {"apple": 2, "kiwi": 3}
    assert Order.load(placed, "order-1", version=3).lines == {"apple": 2, "pear": 1}
    assert Order.load(placed, "order-1", version=4).lines == {"apple": 2}


def test_reverting_the_revert_restores_the_aggregate(placed):
    placed.revert("order-1", to_version=0)
    assert Order.load(placed, "order-1").status == "new"
    placed.revert("order-1", to_version=3)
    order = Order.load(placed, "order-1")
    assert state(order) == ("order-1", 5, "placed", "ada", {"apple": 2, "pear": 1}, 11)
    states = [state(Order.load(placed, "order-1", version=k))[2:] for k in range(6)]
    assert states == [
        ("new", None, {}, 0),
        ("placed", "ada", {}, 0),
        ("placed", "ada", {"apple": 2}, 6),
        ("placed", "ada", {"apple": 2, "pear": 1}, 11),
        ("new", None, {}, 0),
        ("placed", "ada", {"apple": 2, "pear": 1}, 11),
    ]


def test_an_aggregate_without_a_reverted_handler_never_sees_reverted_events(placed):
    class Strict(Order):
        def apply_Reverted(self, event):
            raise AssertionError("a Reverted event reached the aggregate")

    placed.revert("order-1", to_version=1)
    assert Strict.load(placed, "order-1").lines == {}
    assert Order.load(placed, "order-1").version == 4  # no handler needed


def test_an_aggregate_loaded_as_of_a_past_time_refuses_to_save():
    # A late correction (recorded last, occurred in between) makes a business-time load
    # skip a middle event while still ending at the current version.
    store = el.EventStore(clock=el.SimulatedClock("2024-03-01"))
    store.append("t-1", [el.Event("Added", {"n": 1}, occurred_at="2024-03-04")])
    store.append("t-1", [el.Event("Added", {"n": 2}, occurred_at="2024-03-06")])
    store.append("t-1", [el.Event("Added", {"n": 4}, occurred_at="2024-03-05")])

    class Tally(el.Aggregate):
        def __init__(self, id):
            super().__init__(id)
            self.total = 0

        def apply_Added(self, event):
            self.total += event.data["n"]

    past = Tally.load(store, "t-1", at="2024-03-05T12:00")
    assert (past.total, past.version) == (5, 3)
    past.emit("Added", {"n": 100})
    with pytest.raises(el.EventlabError, match="loaded as of the past .*at=2024-03-05T12:00"):
        past.save(store)
    assert store.version("t-1") == 3
    today = Tally.load(store, "t-1")
    today.emit("Added", {"n": 100})
    today.save(store)
    assert Tally.load(store, "t-1").total == 107
