"""The event bus: publish after commit, ordering, filters, catch-up, failure isolation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eventlab as el


def ev(type_: str, **data) -> el.Event:
    return el.Event(type_, data)


@pytest.fixture
def bus_store(clock):
    bus = el.EventBus()
    with el.EventStore(clock=clock, bus=bus) as store:
        yield bus, store


def collector(into: list):
    return lambda event: into.append((event.position, event.stream_id, event.type))


def test_store_publishes_committed_events_in_position_order(bus_store):
    bus, store = bus_store
    seen: list = []
    bus.subscribe(collector(seen))
    store.append("order-1", [ev("Placed"), ev("Paid")])
    with store.transaction():
        store.append("order-2", [ev("Placed")])
        assert seen == [(1, "order-1", "Placed"), (2, "order-1", "Paid")]  # not yet committed
        store.append("order-1", [ev("Shipped")])
    assert seen == [
        (1, "order-1", "Placed"),
        (2, "order-1", "Paid"),
        (3, "order-2", "Placed"),
        (4, "order-1", "Shipped"),
    ]


def test_handlers_receive_recorded_events(bus_store):
    bus, store = bus_store
    seen: list = []
    bus.subscribe(seen.append)
    recorded = store.append("order-1", [ev("Placed", total=3)])
    assert seen == recorded
    assert isinstance(seen[0], el.RecordedEvent) and seen[0].data == {"total": 3}


def test_rolled_back_transaction_publishes_nothing(bus_store):
    bus, store = bus_store
    seen: list = []
    bus.subscribe(collector(seen))
    with pytest.raises(RuntimeError), store.transaction():
        store.append("order-1", [ev("Placed")])
        raise RuntimeError("abort")
    with store.transaction():
        with pytest.raises(RuntimeError), store.transaction():
            store.append("order-2", [ev("Placed")])
            raise RuntimeError("inner abort")
        store.append("order-3", [ev("Placed")])
    assert seen == [(1, "order-3", "Placed")]


def test_rejected_append_publishes_nothing(bus_store):
    bus, store = bus_store
    seen: list = []
    bus.subscribe(collector(seen))
    store.append("order-1", [ev("Placed")])
    with pytest.raises(el.ConcurrencyError):
        store.append("order-1", [ev("Placed")], expected_version=0)
    assert seen == [(1, "order-1", "Placed")]


def test_filters_by_type_and_stream_prefix(bus_store):
    bus, store = bus_store
    by_type: list = []
    by_stream: list = []
    both: list = []
    bus.subscribe(collector(by_type), types=["Paid", "Shipped"], name="types")
    bus.subscribe(collector(by_stream), streams="order-", name="orders")
    bus.subscribe(collector(both), types="Paid", streams=["user-", "order-"], name="both")
    store.append("order-1", [ev("Placed"), ev("Paid")])
    store.append("user-1", [ev("Registered"), ev("Paid")])
    store.append("orderline-1", [ev("Shipped")])
    assert by_type == [(2, "order-1", "Paid"), (4, "user-1", "Paid"), (5, "orderline-1", "Shipped")]
    # A prefix is a prefix: "order-" does not match "orderline-1".
    assert by_stream == [(1, "order-1", "Placed"), (2, "order-1", "Paid")]
    assert both == [(2, "order-1", "Paid"), (4, "user-1", "Paid")]


def test_store_bus_is_created_on_first_use(clock):
    with el.EventStore(clock=clock) as store:
        seen: list = []
        store.bus.subscribe(collector(seen))
        store.append("a-1", [ev("X")])
        assert store.bus is store.bus
        assert store.bus.store is store
        assert seen == [(1, "a-1", "X")]


def test_failing_handler_is_isolated_recorded_and_resumed_by_retry(bus_store):
    bus, store = bus_store
    good: list = []
    flaky: list = []
    broken = {"on": True}

    def handler(event):
        if broken["on"] and event.type == "Paid":
            raise ValueError(f"cannot handle {event.stream_id}")
        flaky.append((event.position, event.type))

    bus.subscribe(collector(good), name="good")
    bus.subscribe(handler, name="flaky")
    store.append("order-1", [ev("Placed"), ev("Paid"), ev("Shipped")])
    store.append("order-2", [ev("Placed")])
    assert [p for p, *_ in good] == [1, 2, 3, 4]
    assert flaky == [(1, "Placed")]  # not called again after failing
    failures = bus.failures()
    assert failures[["subscription", "position", "stream_id", "version", "type", "error"]].to_dict(
        "records"
    ) == [
        {
            "subscription": "flaky",
            "position": 2,
            "stream_id": "order-1",
            "version": 2,
            "type": "Paid",
            "error": "ValueError: cannot handle order-1",
        }
    ]
    assert "ValueError" in failures["traceback"][0]
    assert bus.subscriptions().set_index("name")["state"].to_dict() == {
        "good": "live",
        "flaky": "failed",
    }
    broken["on"] = False
    assert bus.retry("flaky") == 1
    assert flaky == [(1, "Placed"), (2, "Paid"), (3, "Shipped"), (4, "Placed")]
    assert bus.failures()["retried"].tolist() == [True]
    store.append("order-3", [ev("Placed")])
    assert flaky[-1] == (5, "Placed")
    assert [p for p, *_ in good] == [1, 2, 3, 4, 5]


def test_retry_on_a_bus_without_a_store_replays_the_backlog():
    bus = el.EventBus()
    seen: list = []
    broken = {"on": True}

    def handler(event):
        if broken["on"]:
            raise RuntimeError("down")
        seen.append(event.position)

    bus.subscribe(handler, name="h")
    with el.EventStore() as other:
        records = other.append("s-1", [ev("A"), ev("B"), ev("C")])
    bus.publish(records[:1])
    bus.publish(records[1:])
    broken["on"] = False
    bus.retry()
    assert seen == [1, 2, 3]


def test_retry_while_the_store_is_closed_is_refused_and_works_after_reopening(store_path):
    """The events a failed subscription missed are only in its store: retrying while
    it is closed would resume after the failing event and skip them for good."""
    bus = el.EventBus()
    seen: list = []
    broken = {"on": True}

    def handler(event):
        if broken["on"] and event.position == 1:
            raise RuntimeError("down")
        seen.append(event.position)

    bus.subscribe(handler, name="h")
    with el.EventStore(store_path, bus=bus) as store:
        store.append("s-1", [ev("A"), ev("B"), ev("C")])
    broken["on"] = False
    with pytest.raises(
        el.EventlabError,
        match=r"cannot retry \['h'\] while their store is closed: .* Open it again with "
        r"el\.EventStore\(path, bus=bus\), then retry\(\); nothing was retried",
    ):
        bus.retry()
    assert bus.subscriptions()[["name", "position", "state"]].values.tolist() == [
        ["h", 0, "failed"]
    ]
    assert bus.failures()["retried"].tolist() == [False]
    with el.EventStore(store_path, bus=bus) as store:
        assert bus.retry() == 1
        assert seen == [1, 2, 3]
        store.append("s-1", [ev("D")])
        assert seen == [1, 2, 3, 4]


def test_catch_up_subscription_gets_history_then_live_without_gap_or_duplicate(bus_store):
    bus, store = bus_store
    for i in range(5):
        store.append(f"order-{i}", [ev("Placed"), ev("Paid")])
    seen: list = []
    bus.subscribe(collector(seen), from_position=3, types="Paid", name="late")
    assert [p for p, *_ in seen] == [4, 6, 8, 10]
    store.append("order-9", [ev("Placed"), ev("Paid")])
    assert [p for p, *_ in seen] == [4, 6, 8, 10, 12]


def test_catch_up_switch_over_when_the_handler_itself_appends(bus_store):
    """Events committed during the catch-up (by the handler) arrive once, in order."""
    bus, store = bus_store
    store.append("order-1", [ev("Placed"), ev("Placed")])
    seen: list = []

    def react(event):
        seen.append(event.position)
        if event.type == "Placed":
            store.append("audit-1", [ev("Noted", about=event.position)])

    bus.subscribe(react, from_position=0, name="reactor")
    # 1, 2 are history; 3 and 4 are the Noted events the handler appended meanwhile.
    assert seen == [1, 2, 3, 4]
    store.append("order-2", [ev("Placed")])
    assert seen == [1, 2, 3, 4, 5, 6]
    assert store.head == 6


def test_nested_publishing_keeps_position_order_for_every_subscriber(bus_store):
    bus, store = bus_store
    first: list = []
    second: list = []

    def reactor(event):
        first.append(event.position)
        if event.type == "Placed":
            store.append("billing-1", [ev("Invoiced")])

    bus.subscribe(reactor, name="reactor")
    bus.subscribe(lambda e: second.append(e.position), name="observer")
    store.append("order-1", [ev("Placed"), ev("Paid")])
    assert first == [1, 2, 3]
    assert second == [1, 2, 3]


def test_bulk_appends_are_published_too(bus_store):
    bus, store = bus_store
    seen: list = []
    bus.subscribe(collector(seen), types="B")
    store.append_frame(
        __import__("pandas").DataFrame(
            {"stream_id": ["s-1", "s-1", "s-2"], "type": ["A", "B", "B"], "data": [{}, {}, {}]}
        )
    )
    assert seen == [(2, "s-1", "B"), (3, "s-2", "B")]
    store.append("s-3", [ev("B")])
    assert seen[-1] == (4, "s-3", "B")


def test_bad_subscriptions_are_refused(bus_store):
    bus, _ = bus_store
    bus.subscribe(print, name="p")
    with pytest.raises(el.EventlabError, match="already exists"):
        bus.subscribe(print, name="p")
    with pytest.raises(el.EventlabError, match="callable"):
        bus.subscribe("not a function")
    with pytest.raises(el.EventlabError, match="types must hold non-empty strings"):
        bus.subscribe(print, types=[""], name="q")
    with pytest.raises(el.EventlabError, match="from_position must be 0 or more"):
        bus.subscribe(print, from_position=-1, name="r")
    with pytest.raises(el.EventlabError, match="no subscription named 'zz'"):
        bus.unsubscribe("zz")
    with pytest.raises(el.EventlabError, match="no store"):
        el.EventBus().subscribe(print, from_position=0)
    with pytest.raises(el.EventlabError, match="a bus serves one store"):
        el.EventStore(bus=bus)


def test_unsubscribe_stops_delivery(bus_store):
    bus, store = bus_store
    seen: list = []
    subscription = bus.subscribe(collector(seen))
    store.append("a-1", [ev("X")])
    bus.unsubscribe(subscription)
    store.append("a-1", [ev("Y")])
    assert seen == [(1, "a-1", "X")]


@settings(max_examples=40, deadline=None)
@given(
    plan=st.lists(
        st.tuples(st.sampled_from(["a-1", "b-1", "a-2"]), st.integers(1, 3), st.booleans()),
        min_size=1,
        max_size=12,
    ),
    join_at=st.integers(0, 12),
    start=st.integers(0, 20),
)
def test_catch_up_at_any_point_sees_exactly_the_committed_log(plan, join_at, start):
    """Whenever a catch-up subscriber joins, it sees every committed event after
    ``start`` exactly once, in order; rolled-back ones never. A start beyond the
    head at joining time is refused (it would skip live events)."""
    bus = el.EventBus()
    with el.EventStore(bus=bus) as store:
        seen: list[int] = []
        first = start  # the position after which the subscriber sees everything

        def join() -> None:
            nonlocal first
            if start > store.head:
                with pytest.raises(el.EventlabError, match="beyond the store's head"):
                    bus.subscribe(lambda e: seen.append(e.position), from_position=start)
                assert bus.subscriptions().empty
                first = store.head  # the fix the message suggests: start at the head
            bus.subscribe(lambda e: seen.append(e.position), from_position=first, name="s")

        for step, (stream, count, commit) in enumerate(plan):
            if step == join_at:
                join()
            try:
                with store.transaction():
                    store.append(stream, [ev("E")] * count)
                    if not commit:
                        raise RuntimeError
            except RuntimeError:
                pass
        if join_at >= len(plan):
            join()
        assert seen == list(range(first + 1, store.head + 1))
        assert [e.position for e in store.read_all()] == list(range(1, store.head + 1))


def test_reactions_to_one_commit_commit_together_and_a_failing_one_is_undone(
    bus_store, monkeypatch
):
    bus, store = bus_store
    commits: list[int] = []
    real_commit = store._commit
    monkeypatch.setattr(
        store, "_commit", lambda tx: (commits.append(len(tx.rows)), real_commit(tx))
    )

    def invoice(event):
        store.append(f"invoice-{event.stream_id}", [ev("InvoiceCreated")])

    def broken(event):
        store.append(f"audit-{event.stream_id}", [ev("Audited")])
        if event.stream_id == "order-2":
            raise RuntimeError("audit service down")

    bus.subscribe(invoice, name="billing", types="OrderSubmitted")
    bus.subscribe(broken, name="audit", types="OrderSubmitted")
    with store.transaction():
        for n in (1, 2, 3):
            store.append(f"order-{n}", [ev("OrderSubmitted")])
    # The three orders, then one commit for every reaction to them (the reactions'
    # own delivery opens a transaction too, which stays empty and writes nothing).
    assert [rows for rows in commits if rows] == [3, 4]
    assert [store.version(f"invoice-order-{n}") for n in (1, 2, 3)] == [1, 1, 1]
    # The audit handler failed on order-2: its append there was undone, and the
    # failed subscription received nothing more (until retried).
    assert [store.version(f"audit-order-{n}") for n in (1, 2, 3)] == [1, 0, 0]
    assert list(bus.failures()["position"]) == [2]


def test_catch_up_from_beyond_the_head_is_refused_and_registers_nothing(bus_store):
    bus, store = bus_store
    store.append("order-1", [ev("Placed")])
    seen: list = []
    with pytest.raises(
        el.EventlabError, match=r"from_position=10 is beyond the store's head \(1\)"
    ):
        bus.subscribe(collector(seen), from_position=10, name="s")
    assert bus.subscriptions().empty
    store.append("order-2", [ev("Placed")])
    assert seen == []
    # The head itself is a valid start: live events only, none skipped.
    bus.subscribe(collector(seen), from_position=store.head, name="s")
    store.append("order-3", [ev("Placed")])
    assert seen == [(3, "order-3", "Placed")]


def test_catch_up_position_may_be_a_numpy_integer(bus_store):
    """A position read from a DataFrame (e.g. bus.failures()) is a numpy integer."""
    np = pytest.importorskip("numpy")
    bus, store = bus_store
    store.append("order-1", [ev("Placed"), ev("Paid")])
    seen: list = []
    subscription = bus.subscribe(collector(seen), from_position=np.int64(1), name="s")
    assert seen == [(2, "order-1", "Paid")]
    assert type(subscription.position) is int


def test_unsubscribing_itself_during_catch_up_stops_delivery_at_once(bus_store):
    bus, store = bus_store
    store.append("order-1", [ev("Placed", n=i) for i in range(5)])
    seen: list = []

    def first_only(event):
        seen.append(event.position)
        if len(seen) == 1:
            bus.unsubscribe("first")

    subscription = bus.subscribe(first_only, from_position=0, name="first")
    assert seen == [1]
    assert subscription.state == "unsubscribed"
    assert bus.subscriptions().empty
    store.append("order-2", [ev("Placed")])
    assert seen == [1]


def test_unsubscribing_another_subscription_from_a_handler_stops_it_at_once(bus_store):
    """Once unsubscribe() returns, the subscription receives nothing more, even the
    event being dispatched or the rest of a catch-up it was due to run."""
    bus, store = bus_store
    store.append("order-1", [ev("Placed"), ev("Paid")])
    stopper: list = []
    victim: list = []

    def stop_the_other(event):
        stopper.append(event.position)
        if event.position == 3 and "victim" in bus._subscriptions:
            bus.unsubscribe("victim")

    bus.subscribe(stop_the_other, name="stopper")
    bus.subscribe(collector(victim), name="victim")
    store.append("order-2", [ev("Placed")])  # position 3: the stopper runs first
    assert stopper == [3]
    assert victim == []

    # Both catching up after a bulk import: the first one's handler removes the second
    # before its catch-up starts.
    caught: list = []

    def stop_late(event):
        caught.append(event.position)
        if "late" in bus._subscriptions:
            bus.unsubscribe("late")

    bus.unsubscribe("stopper")
    bus.subscribe(stop_late, from_position=0, name="early")
    assert caught == [1, 2, 3]
    late: list = []
    bus.subscribe(collector(late), name="late")
    import pandas as pd

    store.append_frame(pd.DataFrame({"stream_id": ["s-1"], "type": ["A"], "data": [{}]}))
    assert caught == [1, 2, 3, 4]
    assert late == []
    assert list(bus.subscriptions()["name"]) == ["early"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"types": 5}, r"types must be an event type \(str\) or a list of them, got 5 \(int\)"),
        ({"types": ["A", 5]}, r"types must hold non-empty strings, but 5 \(int\) is not"),
        ({"types": []}, r"types is empty.*types=None"),
        ({"types": [""]}, r"types must hold non-empty strings, but '' \(str\) is not"),
        ({"streams": 5}, r"streams must be a stream prefix \(str\) or a list of them, got 5"),
        ({"streams": ["order-", None]}, r"streams must hold non-empty strings, but None"),
        ({"streams": ""}, r"streams must hold non-empty strings.*streams=None"),
        ({"name": 5}, r"name must be a non-empty string naming the subscription, got 5 \(int\)"),
        ({"name": ""}, r"name must be a non-empty string"),
        ({"from_position": -1}, r"from_position must be 0 or more, got -1; use 0 for the whole"),
        ({"from_position": "3"}, r"from_position must be an int position, got '3' \(str\)"),
        ({"from_position": True}, r"from_position must be an int position, got True \(bool\)"),
        ({"from_position": 1.5}, r"from_position must be an int position, got 1.5 \(float\)"),
    ],
)
def test_bad_subscribe_arguments_name_the_argument_and_the_fix(bus_store, kwargs, match):
    bus, store = bus_store
    store.append("order-1", [ev("Placed")])
    with pytest.raises(el.EventlabError, match=match):
        bus.subscribe(print, **kwargs)
    assert bus.subscriptions().empty


def test_a_non_callable_handler_is_refused_with_the_fix(bus_store):
    bus, _ = bus_store
    with pytest.raises(
        el.EventlabError, match=r"handler must be a callable taking one event.*got 'x' \(str\)"
    ):
        bus.subscribe("x", name="s")
    assert bus.subscriptions().empty


def test_a_single_string_is_one_type_or_one_prefix_not_its_characters(bus_store):
    bus, store = bus_store
    seen: list = []
    bus.subscribe(collector(seen), types="OrderPlaced", streams="order-", name="s")
    assert bus.subscriptions()[["types", "streams"]].to_dict("records") == [
        {"types": ["OrderPlaced"], "streams": ["order-"]}
    ]
    store.append("order-1", [ev("OrderPlaced"), ev("O")])
    store.append("o-1", [ev("OrderPlaced")])
    assert seen == [(1, "order-1", "OrderPlaced")]


_FILTERS = [
    {},
    {"types": "A"},
    {"types": ["A", "B"]},
    {"types": "C", "streams": "x-"},
    {"streams": ["y-", "x-1"]},
]


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(
                st.just("append"),
                st.sampled_from(["x-1", "x-2", "y-1"]),
                st.lists(st.sampled_from("ABC"), min_size=1, max_size=3),
            ),
            st.tuples(st.just("join"), st.integers(0, len(_FILTERS) - 1), st.booleans()),
            st.tuples(st.just("fail"), st.integers(0, 9), st.booleans()),
            st.tuples(st.just("retry"), st.just(0), st.just(False)),
            st.tuples(st.just("leave"), st.integers(0, 9), st.just(False)),
        ),
        max_size=25,
    )
)
def test_every_subscription_gets_exactly_its_events_and_sees_the_head(steps):
    """Against a model: each subscription receives, in order and once, the committed
    events its types and streams take, after it joined (or from the start when it
    catches up), the event it failed on again after retry(); whatever it takes, a
    live subscription's position is the head once a commit's delivery is over."""
    bus = el.EventBus()
    with el.EventStore(bus=bus) as store:
        subs: list[dict] = []  # name, filter, start, got, failing, left

        def handler(sub: dict):
            def handle(event: el.RecordedEvent) -> None:
                if sub["failing"]:
                    sub["failing"] = False
                    raise RuntimeError("flaky")
                sub["got"].append(event.position)

            return handle

        for kind, arg, flag in steps:
            if kind == "append":
                store.append(arg, [ev(t) for t in flag])
            elif kind == "join":
                sub = {"name": f"s{len(subs)}", "filter": _FILTERS[arg], "got": [], "left": False}
                sub["failing"], sub["start"] = False, 0 if flag else store.head
                subs.append(sub)
                start = {"from_position": 0} if flag else {}
                bus.subscribe(handler(sub), name=sub["name"], **_FILTERS[arg], **start)
            elif kind == "fail" and arg < len(subs):
                subs[arg]["failing"] = True
            elif kind == "retry":
                bus.retry()
            elif kind == "leave" and arg < len(subs) and not subs[arg]["left"]:
                subs[arg]["left"] = True
                bus.unsubscribe(subs[arg]["name"])
            states = bus.subscriptions().set_index("name")
            for sub in subs:
                if not sub["left"] and states.loc[sub["name"], "state"] == "live":
                    assert states.loc[sub["name"], "position"] == store.head
        bus.retry()
        log = list(store.read_all())
        for sub in subs:
            if sub["left"]:
                continue
            wanted = _matcher(sub["filter"])
            expected = [e.position for e in log if e.position > sub["start"] and wanted(e)]
            assert sub["got"] == expected


def _matcher(spec: dict):
    """Whether an event passes a filter of _FILTERS, as the bus should decide it."""
    types = spec.get("types")
    types = {types} if isinstance(types, str) else types
    streams = spec.get("streams")
    streams = (streams,) if isinstance(streams, str) else tuple(streams or ())
    return lambda e: (
        (types is None or e.type in types) and (not streams or e.stream_id.startswith(streams))
    )
