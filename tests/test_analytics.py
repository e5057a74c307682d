"""el.analytics: exact answers on a small log, the real logs against plain Python and pm4py."""

from __future__ import annotations

import itertools
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import real_logs

import eventlab as el
from eventlab import analytics

T = pd.Timestamp("2024-05-01T00:00:00Z")
H = pd.Timedelta(hours=1)
M = pd.Timedelta(minutes=1)

# (stream, type, occurred_at offset), appended in this order: s1's D comes last but
# happened before its C; s3's two Bs happened at the same time.
LOG = [
    ("s1", "A", 0 * M),
    ("s2", "A", 10 * M),
    ("s1", "B", 1 * H),
    ("s2", "C", 20 * M),
    ("s3", "A", 0 * M),
    ("s3", "B", 30 * M),
    ("s3", "B", 30 * M),
    ("s1", "C", 3 * H),
    ("s3", "C", 2 * H),
    ("s4", "B", 5 * H),
    ("s1", "D", 2 * H),
]


@pytest.fixture
def log(store) -> el.EventStore:
    for stream, kind, offset in LOG:
        store.append(stream, el.Event(kind, {}, occurred_at=(T + offset).to_pydatetime()))
    return store


@pytest.fixture
def lake(log, tmp_path):
    """The same log as Parquet files."""
    return log.export_parquet(tmp_path / "lake", partition_by="type")


def test_summary(log):
    row = analytics.summary(log).iloc[0]
    assert (row["events"], row["streams"], row["types"]) == (11, 4, 4)
    assert (row["first"], row["last"], row["span"]) == (T, T + 5 * H, 5 * H)


def test_variants_follow_business_time_then_position(log):
    frame = analytics.variants(log)
    assert frame.to_dict("list") == {
        "variant": [("A", "B", "B", "C"), ("A", "B", "D", "C"), ("A", "C"), ("B",)],
        "length": [4, 4, 2, 1],
        "count": [1, 1, 1, 1],
        "share": [0.25] * 4,
    }
    by_knowledge = analytics.variants(log, time="recorded_at")["variant"].tolist()
    assert ("A", "B", "C", "D") in by_knowledge  # recorded in append order


def test_directly_follows(log):
    frame = analytics.directly_follows(log)
    assert frame.to_dict("list") == {
        "source": ["A", "A", "B", "B", "B", "D"],
        "target": ["B", "C", "B", "C", "D", "C"],
        "count": [2, 1, 1, 1, 1, 1],
        "mean_duration": [45 * M, 10 * M, 0 * M, 90 * M, H, H],
        "median_duration": [45 * M, 10 * M, 0 * M, 90 * M, H, H],
    }
    assert frame["mean_duration"].dtype == "timedelta64[ns]"


def test_stream_durations(log):
    frame = analytics.stream_durations(log)
    assert frame.to_dict("list") == {
        "stream_id": ["s1", "s2", "s3", "s4"],
        "start": [T, T + 10 * M, T, T + 5 * H],
        "end": [T + 3 * H, T + 20 * M, T + 2 * H, T + 5 * H],
        "duration": [3 * H, 10 * M, 2 * H, 0 * H],
        "events": [4, 2, 4, 1],
    }


@pytest.mark.parametrize(
    "start_type, end_type, expected",
    [
        ("B", "C", {"s1": (H, 3 * H, 3), "s3": (30 * M, 2 * H, 3)}),
        ("B", None, {"s1": (H, 3 * H, 3), "s3": (30 * M, 2 * H, 3), "s4": (5 * H, 5 * H, 1)}),
        (None, "C", {"s1": (0 * H, 3 * H, 4), "s2": (10 * M, 20 * M, 2), "s3": (0 * H, 2 * H, 4)}),
        ("B", "B", {"s3": (30 * M, 30 * M, 2)}),  # the next B, at the same time
        ("D", "A", {}),
    ],
)
def test_stream_durations_between_types(log, start_type, end_type, expected):
    frame = analytics.stream_durations(log, start_type, end_type)
    got = {
        row.stream_id: (row.start - T, row.end - T, row.events)
        for row in frame.itertuples(index=False)
    }
    assert got == expected
    assert (frame["duration"] == frame["end"] - frame["start"]).all()


def test_funnel(log):
    frame = analytics.funnel(log, ["A", "B", "C"])
    assert frame["step"].tolist() == ["A", "B", "C"]
    assert frame["streams"].tolist() == [3, 2, 2]
    assert frame["share_of_first"].tolist() == pytest.approx([1, 2 / 3, 2 / 3])
    assert frame["share_of_previous"].tolist() == pytest.approx([1, 2 / 3, 1])
    reversed_ = analytics.funnel(log, ["B", "A"])
    assert reversed_["streams"].tolist() == [3, 0]
    assert reversed_["share_of_previous"].tolist() == [1.0, 0.0]
    assert analytics.funnel(log, ["Z", "A"])["share_of_first"].isna().all()


def test_event_rate(log):
    frame = analytics.event_rate(log, "1h")
    assert frame["time"].tolist() == [T + k * H for k in range(6)]
    assert frame["events"].tolist() == [6, 1, 2, 1, 0, 1]  # the empty hour is there
    by_type = analytics.event_rate(log, "1h", by="type")
    assert list(by_type.itertuples(index=False, name=None)) == [
        (T, "A", 3),
        (T, "B", 2),
        (T, "C", 1),
        (T + H, "B", 1),
        (T + 2 * H, "C", 1),
        (T + 2 * H, "D", 1),
        (T + 3 * H, "C", 1),
        (T + 5 * H, "B", 1),
    ]
    assert analytics.event_rate(log, timedelta(hours=6))["events"].tolist() == [11]
    assert analytics.event_rate(log, "1 month")["events"].tolist() == [11]


def test_filters(log):
    assert analytics.summary(log, streams=["s1"]).loc[0, "events"] == 4
    assert analytics.summary(log, streams="s1*").loc[0, "events"] == 4
    assert analytics.summary(log, streams="s*").loc[0, "events"] == 11
    assert analytics.summary(log, streams="s1").loc[0, "events"] == 4
    window = analytics.summary(log, start=T + 30 * M, end=(T + 2 * H).isoformat())
    assert window.loc[0, "events"] == 3  # start included, end excluded
    frame = analytics.directly_follows(log, types=["A", "B"])
    assert list(zip(frame["source"], frame["target"], frame["count"], strict=True)) == [
        ("A", "B", 2),
        ("B", "B", 1),
    ]
    assert analytics.variants(log, types="A")["count"].tolist() == [3]


def test_parquet_gives_the_same_answers(log, lake):
    for name, call in [
        ("summary", lambda s: analytics.summary(s)),
        ("variants", lambda s: analytics.variants(s)),
        ("directly_follows", lambda s: analytics.directly_follows(s)),
        ("stream_durations", lambda s: analytics.stream_durations(s, "A", "C")),
        ("funnel", lambda s: analytics.funnel(s, ["A", "B"])),
        ("event_rate", lambda s: analytics.event_rate(s, "30min", by="stream_id")),
    ]:
        pd.testing.assert_frame_equal(call(lake), call(log), obj=name)
    pd.testing.assert_frame_equal(
        analytics.summary(str(lake / "**" / "*.parquet")), analytics.summary(log)
    )


def test_long_durations_are_exact_to_the_nanosecond(store):
    # Past about 104 days, microseconds * 1000 in float64 is off by a few nanoseconds.
    long = pd.Timedelta(days=1000)
    us = pd.Timedelta(microseconds=1)
    for stream, gap in (("c1", long + us), ("c2", long + 2 * us)):
        store.append(
            stream,
            [
                el.Event("A", {}, occurred_at=T.to_pydatetime()),
                el.Event("B", {}, occurred_at=(T + gap).to_pydatetime()),
            ],
        )
    durations = analytics.stream_durations(store)
    assert durations["duration"].tolist() == [long + us, long + 2 * us]
    assert (durations["duration"] == durations["end"] - durations["start"]).all()
    assert analytics.summary(store).loc[0, "span"] == long + 2 * us
    follows = analytics.directly_follows(store).iloc[0]
    # The median falls between two microseconds: 1.5 us is kept as 1500 ns.
    half = pd.Timedelta(nanoseconds=1500)
    assert (follows["mean_duration"], follows["median_duration"]) == (long + half, long + half)


def test_empty_sources(store):
    assert analytics.summary(store).loc[0, "events"] == 0
    for frame in (
        analytics.variants(store),
        analytics.directly_follows(store),
        analytics.stream_durations(store),
        analytics.event_rate(store),
    ):
        assert frame.empty


def test_bad_arguments(log, tmp_path):
    with pytest.raises(el.EventlabError, match="source must be an el.EventStore or the path"):
        analytics.summary(42)
    with pytest.raises(el.ParquetError, match="no Parquet files"):
        analytics.summary(tmp_path / "nothing")
    with pytest.raises(el.EventlabError, match="time must be 'occurred_at' or 'recorded_at'"):
        analytics.summary(log, time="now")
    with pytest.raises(el.EventlabError, match="freq must be a bucket width"):
        analytics.event_rate(log, "often")
    with pytest.raises(el.EventlabError, match="freq must be a positive width"):
        analytics.event_rate(log, "0h")
    with pytest.raises(el.EventlabError, match="by must be one of"):
        analytics.event_rate(log, by="data")
    with pytest.raises(el.EventlabError, match="steps must be a non-empty list"):
        analytics.funnel(log, "A")
    with pytest.raises(el.EventlabError, match="types must be strings"):
        analytics.summary(log, types=[1])


# ---------------------------------------------------------------------- trace


def test_trace_is_the_causal_tree_of_commands_and_events(clock):
    with el.EventStore(clock=clock) as store:
        commands = el.CommandStore(store)
        commands.add(el.Command("PlaceOrder", {}, command_id="c1", correlation_id="tx"))
        store.append(
            "order-1",
            [
                el.Event(
                    "OrderPlaced", {}, metadata={"causation_id": "c1", "correlation_id": "tx"}
                ),
                el.Event("ItemAdded", {}, metadata={"causation_id": "c1", "correlation_id": "tx"}),
            ],
        )
        placed, added = (e.event_id for e in store.read_stream("order-1"))
        clock.advance(timedelta(minutes=1))
        commands.add(
            el.Command(
                "ReserveStock",
                {},
                command_id="c2",
                correlation_id="tx",
                context={"causation_id": added},
            )
        )
        store.append(
            "stock-1",
            el.Event("StockReserved", {}, metadata={"causation_id": "c2", "correlation_id": "tx"}),
        )
        store.append(
            "mail-1",
            el.Event("MailSent", {}, metadata={"causation_id": placed, "correlation_id": "tx"}),
        )
        store.append("other", el.Event("Noise", {}, metadata={"correlation_id": "other"}))
        frame = analytics.trace(store, "tx")
        assert frame[["id", "kind", "type", "depth"]].values.tolist() == [
            ["c1", "command", "PlaceOrder", 0],
            [placed, "event", "OrderPlaced", 1],
            [frame["id"][2], "event", "MailSent", 2],
            [added, "event", "ItemAdded", 1],
            ["c2", "command", "ReserveStock", 2],
            [frame["id"][5], "event", "StockReserved", 3],
        ]
        assert frame["causation_id"].tolist()[1:] == ["c1", placed, "c1", added, "c2"]
        assert frame["stream_id"].tolist()[1:3] == ["order-1", "mail-1"]
        assert analytics.trace(store, "nothing").empty


# The chain a shipped order's submission causes through the shop's reactions.
SHIPPED_CHAIN = [
    ("command", "SubmitOrder", 0),
    ("event", "OrderSubmitted", 1),
    ("command", "ChargePayment", 2),
    ("event", "InvoiceIssued", 3),
    ("event", "PaymentCharged", 3),
    ("command", "MarkOrderPaid", 4),
    ("event", "OrderPaid", 5),
    ("command", "CreateShipment", 6),
    ("event", "ShipmentCreated", 7),
    ("command", "MarkOrderShipped", 8),
    ("event", "OrderShipped", 9),
]


def test_trace_follows_the_shops_reactions_through_caused_by():
    # The shop's reactions put the causing event's id in the command's context
    # as "caused_by"; the trace links them like a "causation_id".
    with el.EventStore(clock=el.SimulatedClock("2024-03-04", step=timedelta(0))) as store:
        el.shop.simulate(store, orders=5, seed=1, failure_rate=0)
        orders = store.sql("SELECT DISTINCT correlation_id FROM commands ORDER BY 1")
        orders = [o for o in orders["correlation_id"] if o.startswith("order-")]
        assert len(orders) == 5
        for order in orders:
            frame = analytics.trace(store, order)
            rows = list(frame[["kind", "type", "depth"]].itertuples(index=False, name=None))
            submitted = rows.index(("command", "SubmitOrder", 0))
            assert rows[submitted : submitted + len(SHIPPED_CHAIN)] == SHIPPED_CHAIN
            by_id = frame.set_index("id")
            chain = frame.iloc[submitted + 1 : submitted + len(SHIPPED_CHAIN)]
            for _, row in chain.iterrows():
                assert by_id.loc[row["causation_id"], "depth"] == row["depth"] - 1
            # Only what the customer did starts a tree: placing, adding, submitting.
            roots = frame[frame["depth"] == 0]
            assert set(roots["type"]) <= {"PlaceOrder", "AddItem", "SubmitOrder"}
            assert set(roots["kind"]) == {"command"}


# ---------------------------------------------------------------------- commands and sagas


def test_command_stats(clock):
    with el.EventStore(clock=clock) as store:
        assert analytics.command_stats(store).empty  # no command store yet
        commands = el.CommandStore(store)
        runs = [  # (id, type, run minutes, final status, attempts)
            ("p1", "Pay", 1, "succeeded", 1),
            ("p2", "Pay", 3, "succeeded", 2),
            ("p3", "Pay", 2, "dead", 3),
            ("s1", "Ship", 10, "succeeded", 1),
        ]
        for command_id, kind, minutes, status, attempts in runs:
            commands.add(el.Command(kind, {}, command_id=command_id))
            clock.advance(timedelta(minutes=1))  # a minute queued
            commands.set_status(command_id, "running", attempts=attempts)
            clock.advance(timedelta(minutes=minutes))
            commands.set_status(command_id, status)
        commands.add(el.Command("Ship", {}, command_id="s2"))
        frame = analytics.command_stats(store).set_index("type")
        assert frame.loc[
            "Pay", ["commands", "succeeded", "dead", "queued", "retried"]
        ].tolist() == [3, 2, 1, 0, 2]
        assert frame.loc["Ship", ["commands", "succeeded", "queued"]].tolist() == [2, 1, 1]
        assert frame.loc["Pay", "attempts_mean"] == 2.0
        assert frame.loc["Pay", "p50_duration"] == pd.Timedelta(minutes=2)
        assert frame.loc["Pay", "p95_duration"] == pd.Timedelta(minutes=2.9)
        assert frame.loc["Pay", "p50_latency"] == pd.Timedelta(minutes=3)
        assert frame.loc["Ship", "p50_duration"] == pd.Timedelta(minutes=10)


def _saga(store, transaction, name, types, start, step=timedelta(minutes=1)):
    """Append a saga's events a step apart; each StepRequested asks for a new step."""
    at, steps = start, 0
    for kind in types:
        steps += kind == "StepRequested"
        data = {"saga": name} if kind == "SagaStarted" else {"step": f"step-{steps}"}
        store.append(
            f"saga-{transaction}",
            el.Event(kind, data, occurred_at=at, metadata={"correlation_id": transaction}),
        )
        at += step


def test_saga_stats(store):
    assert list(analytics.saga_stats(store).columns) == list(analytics._SAGA_COLUMNS)
    assert analytics.saga_stats(store).empty
    start = datetime(2024, 5, 1, tzinfo=UTC)
    ok = ["SagaStarted", "StepRequested", "StepSucceeded", "StepRequested", "StepSucceeded"]
    _saga(store, "t1", "order", [*ok, "SagaCompleted"], start)  # 5 min, 2 steps
    _saga(store, "t2", "order", [*ok[:3], "SagaCompleted"], start, timedelta(minutes=2))  # 6 min
    aborted = [
        "SagaStarted", "StepRequested", "StepSucceeded", "StepRequested", "StepFailed",
        "StepRetried", "StepTimedOut", "CompensationRequested", "StepCompensated", "SagaAborted",
    ]  # fmt: skip
    _saga(store, "t3", "order", aborted, start)  # 9 min, 2 steps, compensated
    _saga(store, "t4", "order", ["SagaStarted", "StepRequested"], start)  # running
    _saga(store, "t5", "order", aborted[:8], start)  # compensating
    _saga(store, "t6", "order", [*aborted[:8], "SagaStuck"], start)  # stuck
    _saga(store, "t7", "refund", ["SagaStarted", "SagaCompleted"], start)
    store.append("order-1", el.Event("SagaStarted", {"saga": "not a saga stream"}))
    frame = analytics.saga_stats(store).set_index("saga")
    order = frame.loc["order"]
    assert order[
        ["sagas", "running", "compensating", "completed", "aborted", "stuck"]
    ].tolist() == [6, 1, 1, 2, 1, 1]
    assert order["steps_mean"] == (2 + 1 + 2 + 1 + 2 + 2) / 6
    assert order[["retries", "timeouts", "compensated"]].tolist() == [3, 3, 3]
    assert order["compensation_rate"] == 0.5
    assert order["p50_duration"] == pd.Timedelta(minutes=6)  # of 5, 6 and 9 minutes
    assert order["p95_duration"] == pd.Timedelta(minutes=8.7)
    assert frame.loc["refund", ["sagas", "completed"]].tolist() == [1, 1]


def test_saga_stats_of_real_sagas_agree_with_saga_status(clock):
    """Sagas run by el.SagaCoordinator: the states counted are the ones saga_status gives."""
    with el.EventStore(clock=clock) as store:
        executor = el.CommandExecutor(store)

        @executor.handler("Reserve")
        def reserve(command, ctx):
            return {"stock": [el.Event("Reserved", {})]}

        @executor.handler("Charge")
        def charge(command, ctx):
            if command.payload["card"] == "bad":
                raise el.CommandRejected("card declined")
            return {"payments": [el.Event("Charged", {})]}

        @executor.handler("Release")
        def release(command, ctx):
            return {"stock": [el.Event("Released", {})]}

        saga = el.Saga(
            "checkout", [el.Step("reserve", "Reserve", "Release"), el.Step("charge", "Charge")]
        )
        coordinator = el.SagaCoordinator(store, el.CommandScheduler(store, executor))
        for n, card in enumerate(["ok", "bad", "ok", "bad", "bad"]):
            coordinator.start(saga, {"card": card}, transaction_id=f"t{n}")
        coordinator.run()
        status = el.saga_status(store)
        stats = analytics.saga_stats(store).set_index("saga").loc["checkout"]
        for state in ("running", "compensating", "completed", "aborted", "stuck"):
            assert stats[state] == (status["state"] == state).sum(), state
        assert stats[["sagas", "completed", "aborted", "compensated"]].tolist() == [5, 2, 3, 3]
        assert stats["steps_mean"] == 2.0


def test_plots_of_a_store_compute_through_analytics(log):
    """el.plots draws from what el.analytics returns (the plots' own tests fake it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert el.plots.process_map(log) is not None
    assert el.plots.event_rate(log, freq="1h", by="type") is not None
    assert el.plots.durations(log) is not None
    plt.close("all")


# ---------------------------------------------------------------------- real logs


@pytest.fixture(scope="module")
def real_stores():
    stores = {}
    for name in (real_logs.HELPDESK, real_logs.BPIC2012, real_logs.RECEIPT):
        store = el.EventStore()
        if name == real_logs.RECEIPT:
            store.import_csv(real_logs.path(name), **real_logs.RECEIPT_COLUMNS)
        else:
            store.import_xes(real_logs.path(name))
        stores[name] = store
    yield stores
    for store in stores.values():
        store.close()


def python_streams(store) -> dict[str, list[tuple[int, str]]]:
    """Each stream's (time in µs, type) in business-time order, ties by position: plain Python."""
    rows = store.sql(
        "SELECT stream_id, type, epoch_us(occurred_at) AS t, position FROM events"
    ).itertuples(index=False)
    streams: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for stream_id, kind, t, position in rows:
        streams[stream_id].append((t, position, kind))
    return {s: [(t, kind) for t, _, kind in sorted(events)] for s, events in streams.items()}


LOGS = [real_logs.HELPDESK, real_logs.BPIC2012, real_logs.RECEIPT]


@pytest.mark.parametrize("name", LOGS)
def test_real_logs_against_plain_python(real_stores, name):
    store = real_stores[name]
    streams = python_streams(store)
    gaps = defaultdict(list)
    for events in streams.values():
        for (t1, a), (t2, b) in itertools.pairwise(events):
            gaps[a, b].append(t2 - t1)
    follows = analytics.directly_follows(store)
    assert {(r.source, r.target): r.count for r in follows.itertuples()} == {
        pair: len(g) for pair, g in gaps.items()
    }
    for row in follows.itertuples():
        g = gaps[row.source, row.target]
        assert row.mean_duration / pd.Timedelta(microseconds=1) == pytest.approx(
            statistics.fmean(g), abs=1
        )
        assert row.median_duration / pd.Timedelta(microseconds=1) == statistics.median(g)
    variants = analytics.variants(store)
    expected = Counter(tuple(kind for _, kind in events) for events in streams.values())
    assert dict(zip(variants["variant"], variants["count"], strict=True)) == expected
    assert variants["share"].sum() == pytest.approx(1)
    durations = analytics.stream_durations(store)
    assert {
        r.stream_id: (r.duration / pd.Timedelta(microseconds=1), r.events)
        for r in durations.itertuples()
    } == {s: (events[-1][0] - events[0][0], len(events)) for s, events in streams.items()}
    assert analytics.summary(store).loc[0, "events"] == real_logs.SIZES[name][0]


@pytest.mark.parametrize("name", LOGS)
def test_real_logs_against_pm4py(real_stores, pm4py_logs, name):
    """pm4py reads the file itself and orders a case's events by time (stably: ties keep
    file order, as eventlab's position does)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pm4py
        from pm4py.statistics.traces.generic.pandas import case_statistics

    store, frame = real_stores[name], pm4py_logs(name)
    follows = analytics.directly_follows(store)
    dfg, _, _ = pm4py.discover_dfg(frame)
    assert {(r.source, r.target): r.count for r in follows.itertuples()} == dfg
    performance, _, _ = pm4py.discover_performance_dfg(frame)
    for row in follows.itertuples():
        theirs = performance[row.source, row.target]
        assert row.mean_duration.total_seconds() == pytest.approx(theirs["mean"], abs=1e-3)
        assert row.median_duration.total_seconds() == pytest.approx(theirs["median"], abs=1e-3)
    variants = analytics.variants(store)
    assert dict(zip(variants["variant"], variants["count"], strict=True)) == pm4py.get_variants(
        frame
    )
    cases = case_statistics.get_cases_description(frame)
    durations = analytics.stream_durations(store)
    assert len(durations) == len(cases)
    for row in durations.itertuples():
        assert row.duration.total_seconds() == pytest.approx(
            cases[row.stream_id]["caseDuration"], abs=1e-3
        )


def test_analytics_of_bpic2012_via_parquet(real_stores, tmp_path):
    store = real_stores[real_logs.BPIC2012]
    lake = store.export_parquet(tmp_path / "lake")
    pd.testing.assert_frame_equal(analytics.variants(lake), analytics.variants(store))
    funnel = analytics.funnel(lake, ["A_SUBMITTED", "A_PREACCEPTED", "A_ACCEPTED", "A_APPROVED"])
    assert funnel["streams"].tolist() == [13087, 7367, 5113, 2246]


def test_directly_follows_codes_many_types_by_a_join(log, lake, monkeypatch):
    """Beyond _CODES_BY_LIST types, type codes come from a joined table: same answers."""
    expected = analytics.directly_follows(log)
    monkeypatch.setattr(analytics, "_CODES_BY_LIST", 1)
    pd.testing.assert_frame_equal(analytics.directly_follows(log), expected)
    pd.testing.assert_frame_equal(analytics.directly_follows(lake), expected)
    filtered = analytics.directly_follows(log, types=["A", "B"])
    assert filtered["count"].tolist() == [2, 1]
