"""el.plots: what each plot draws (positions, colours, labels), its options and its errors."""

from __future__ import annotations

import sys
import types
from datetime import UTC, datetime, timedelta

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

import eventlab as el  # noqa: E402
from eventlab.plots.process import _layout  # noqa: E402
from eventlab.plots.saga import CATEGORIES, TIMELINE_COLUMNS  # noqa: E402

T0 = datetime(2024, 5, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _figures(monkeypatch):
    """No plot may call plt.show(); every figure is closed after the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a plot called plt.show()")

    monkeypatch.setattr(plt, "show", refuse)
    yield
    plt.close("all")


@pytest.fixture
def fake_analytics(monkeypatch):
    """Stands in for eventlab.analytics: records each call and returns a canned frame."""
    calls = []
    module = types.ModuleType("eventlab.analytics")

    def recorder(name):
        def function(source, *args, **kwargs):
            calls.append((name, source, args, kwargs))
            return module.results[name]

        return function

    for name in ("event_rate", "stream_durations", "directly_follows"):
        setattr(module, name, recorder(name))
    module.results = {}
    module.calls = calls
    monkeypatch.setitem(sys.modules, "eventlab.analytics", module)
    monkeypatch.setattr(el, "analytics", module, raising=False)
    return module


def drawn(ax) -> None:
    """Render the figure (arrow clipping, text layout and legends run only at draw time)."""
    ax.figure.canvas.draw()


def times_of(values) -> list[datetime]:
    return [mdates.num2date(v) for v in values]


def shop(clock_step: timedelta = timedelta(seconds=1)) -> el.EventStore:
    store = el.EventStore(clock=el.SimulatedClock(T0, step=clock_step))
    store.append("order-1", [el.Event("OrderPlaced", {}), el.Event("OrderPaid", {})])
    store.append("payment-1", [el.Event("PaymentTaken", {})])
    store.append("order-2", [el.Event("OrderPlaced", {})])
    return store


def scatter_points(ax) -> dict[str, list[tuple[datetime, float]]]:
    """Each legend label's points as (time, y)."""
    points = {}
    for collection in ax.collections:
        offsets = collection.get_offsets()
        points[collection.get_label()] = [
            (mdates.num2date(x), float(y)) for x, y in np.asarray(offsets)
        ]
    return points


# ---------------------------------------------------------------------- event_timeline


def test_event_timeline_draws_a_tick_per_event_on_its_service_lane():
    store = shop()
    ax = el.plots.event_timeline(store)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["order", "payment"]
    assert scatter_points(ax) == {
        "OrderPlaced": [(T0, 0.0), (T0 + timedelta(seconds=3), 0.0)],
        "OrderPaid": [(T0 + timedelta(seconds=1), 0.0)],
        "PaymentTaken": [(T0 + timedelta(seconds=2), 1.0)],
    }
    # Types by frequency, then name, each with its own colour.
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [
        "OrderPlaced",
        "OrderPaid",
        "PaymentTaken",
    ]
    colours = {c.get_label(): tuple(c.get_facecolor()[0]) for c in ax.collections}
    assert len(set(colours.values())) == 3
    assert ax.get_title() == "4 events in 2 services"
    drawn(ax)


def test_event_timeline_on_stream_lanes_orders_lanes_by_first_event():
    store = shop()
    store.append("order-0", [el.Event("OrderPlaced", {})])
    ax = el.plots.event_timeline(store, lanes="stream")
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["order-1", "payment-1", "order-2", "order-0"]
    assert ax.get_ylim() == (3.5, -0.5)  # the first lane on top


def test_event_timeline_reads_a_frame_or_parquet_like_the_store(tmp_path):
    store = shop()
    expected = scatter_points(el.plots.event_timeline(store, lanes="stream"))
    frame = store.events()
    assert scatter_points(el.plots.event_timeline(frame, lanes="stream")) == expected
    directory = store.export_parquet(tmp_path / "lake")
    assert scatter_points(el.plots.event_timeline(directory, lanes="stream")) == expected
    # Only the columns it needs: a frame without payloads will do.
    slim = frame[["stream_id", "type", "occurred_at"]]
    assert scatter_points(el.plots.event_timeline(slim, lanes="stream")) == expected


def test_event_timeline_naive_frame_times_are_utc():
    frame = pd.DataFrame(
        {"stream_id": ["a-1"], "type": ["X"], "occurred_at": [datetime(2024, 5, 1, 12)]}
    )
    ax = el.plots.event_timeline(frame)
    assert scatter_points(ax) == {"X": [(datetime(2024, 5, 1, 12, tzinfo=UTC), 0.0)]}


def test_event_timeline_filters_and_clock():
    store = shop()
    store.append("order-1", [el.Event("OrderShipped", {}, occurred_at=T0 - timedelta(days=1))])
    ax = el.plots.event_timeline(store, types=["OrderPlaced", "OrderShipped"], streams="order-1")
    assert scatter_points(ax) == {
        "OrderPlaced": [(T0, 0.0)],
        "OrderShipped": [(T0 - timedelta(days=1), 0.0)],
    }
    # Knowledge time puts the late event where the store learned of it.
    ax = el.plots.event_timeline(store, types=["OrderShipped"], time="recorded_at")
    assert scatter_points(ax) == {"OrderShipped": [(T0 + timedelta(seconds=4), 0.0)]}
    assert ax.get_xlabel() == "recorded_at (UTC)"
    # start inclusive, end exclusive
    ax = el.plots.event_timeline(
        store, start=T0 + timedelta(seconds=1), end="2024-05-01T00:00:03Z", lanes="stream"
    )
    assert scatter_points(ax) == {
        "OrderPaid": [(T0 + timedelta(seconds=1), 0.0)],
        "PaymentTaken": [(T0 + timedelta(seconds=2), 1.0)],
    }
    ax = el.plots.event_timeline(store, streams=["payment-1", "order-2"], lanes="stream")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["payment-1", "order-2"]


def test_event_timeline_lanes_by_any_column():
    store = el.EventStore(clock=el.SimulatedClock(T0))
    store.append("order-1", [el.Event("A", {}, metadata={"correlation_id": "c1"})])
    store.append("order-2", [el.Event("B", {})])
    ax = el.plots.event_timeline(store, lanes="correlation_id")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["c1", "(none)"]
    assert ax.get_title() == "2 events in 2 correlation_id values"


def many_streams(counts: list[int]) -> el.EventStore:
    store = el.EventStore(clock=el.SimulatedClock(T0))
    for index, count in enumerate(counts):
        store.append(f"s-{index:02d}", [el.Event("E", {})] * count)
    return store


def test_event_timeline_keeps_the_busiest_lanes():
    store = many_streams([1, 5, 2, 5, 3, 1])
    ax = el.plots.event_timeline(store, lanes="stream", max_lanes=3)
    # s-01 and s-03 (5 each), s-04 (3); shown in order of their first event.
    assert [t.get_text() for t in ax.get_yticklabels()] == ["s-01", "s-03", "s-04"]
    assert len(scatter_points(ax)["E"]) == 13
    assert ax.get_title() == "13 events in 3 of 6 streams (busiest)"


def test_event_timeline_first_and_random_samples():
    store = many_streams([1, 5, 2, 5, 3, 1])
    ax = el.plots.event_timeline(store, lanes="stream", max_lanes=2, sample="first")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["s-00", "s-01"]
    picks = [
        [
            t.get_text()
            for t in el.plots.event_timeline(
                store, lanes="stream", max_lanes=3, sample="random", seed=seed
            ).get_yticklabels()
        ]
        for seed in (7, 7, 8, 9, 10)
    ]
    assert picks[0] == picks[1]  # a seed gives the same lanes every time
    assert len({tuple(p) for p in picks}) > 1  # and other seeds others
    assert all(len(set(p)) == 3 and set(p) <= {f"s-{i:02d}" for i in range(6)} for p in picks)


def test_event_timeline_counts_per_bucket_beyond_max_events():
    store = el.EventStore(clock=el.SimulatedClock(T0))
    store.append(
        "a-1", [el.Event("X", {}, occurred_at=T0 + timedelta(seconds=s)) for s in (0, 5, 9)]
    )
    store.append("a-1", [el.Event("Y", {}, occurred_at=T0 + timedelta(seconds=20))])
    store.append("a-1", [el.Event("X", {}, occurred_at=T0 + timedelta(minutes=10))])
    ax = el.plots.event_timeline(store, max_events=4, bins=10)
    # 10 minutes in 10 bins: one-minute buckets, a square at each bucket's middle.
    assert ax.get_title() == "5 events in 1 services, counted per 1 min"
    points = scatter_points(ax)
    middle = timedelta(seconds=30)
    assert [p[0] for p in points["X"]] == [T0 + middle, T0 + timedelta(minutes=10) + middle]
    assert [p[0] for p in points["Y"]] == [T0 + middle]
    # Each type on its own row inside the lane, squares growing with the count.
    assert points["X"][0][1] == points["X"][1][1] == -0.3
    assert points["Y"][0][1] == 0.3
    sizes = {c.get_label(): list(c.get_sizes()) for c in ax.collections}
    assert sizes == {"X": [6 + 60, 6 + 20], "Y": [6 + 20]}
    drawn(ax)


def test_event_timeline_groups_types_beyond_twenty_in_grey():
    store = el.EventStore(clock=el.SimulatedClock(T0))
    store.append("a-1", [el.Event(f"T{i:02d}", {}) for i in range(23)])
    ax = el.plots.event_timeline(store)
    labels = [c.get_label() for c in ax.collections]
    assert labels == [f"T{i:02d}" for i in range(20)] + ["3 other types"]
    assert to_rgba(ax.collections[-1].get_edgecolor()[0]) == to_rgba("#9e9e9e")
    assert len(ax.collections[-1].get_offsets()) == 3


def test_event_timeline_draws_into_a_given_axes_and_handles_no_events():
    figure, (left, right) = plt.subplots(1, 2)
    assert el.plots.event_timeline(shop(), ax=right) is right
    assert len(left.collections) == 0
    ax = el.plots.event_timeline(shop(), types=["Nothing"])
    assert ax.get_title() == "no events match"
    assert len(ax.collections) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sample": "biggest"}, "sample must be one of ['busiest', 'first', 'random']"),
        ({"lanes": "two words"}, "lanes must be 'service', 'stream' or a column name"),
        ({"lanes": "missing_column"}, "cannot select lanes 'missing_column'"),
        ({"max_lanes": 0}, "max_lanes must be a positive int, got 0"),
        ({"time": "happened_at"}, "time must be 'occurred_at' or 'recorded_at', got 'happened_at'"),
        ({"types": ["OrderPlaced", 7]}, "types must be strings, got ['OrderPlaced', 7]"),
        ({"streams": [None]}, "streams must be strings, got [None]"),
        ({"start": "yesterday"}, "cannot read 'yesterday' as a timestamp"),
    ],
)
def test_event_timeline_rejects_bad_options(kwargs, message):
    with pytest.raises(el.PlotError if "timestamp" not in message else el.EventlabError) as info:
        el.plots.event_timeline(shop(), **kwargs)
    assert message in str(info.value)


def test_event_timeline_names_missing_frame_columns():
    with pytest.raises(el.MissingColumnsError, match=r"needs the column\(s\) \['type'\]"):
        el.plots.event_timeline(pd.DataFrame({"stream_id": ["a"], "occurred_at": [T0]}))
    with pytest.raises(el.PlotError, match="expected an el.EventStore"):
        el.plots.event_timeline(42)


# ---------------------------------------------------------------------- event_rate


def rate_frame() -> pd.DataFrame:
    hours = pd.to_datetime(
        ["2024-05-01T00:00Z", "2024-05-01T00:00Z", "2024-05-01T01:00Z", "2024-05-01T03:00Z"],
        utc=True,
    )
    return pd.DataFrame({"time": hours, "type": ["A", "B", "A", "B"], "events": [3, 2, 5, 1]})


def test_event_rate_steps_per_group_with_missing_buckets_as_zero():
    ax = el.plots.event_rate(rate_frame())
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert sorted(lines) == ["A", "B"]
    # A bucket per hour (02:00 filled with 0), and the last level drawn across its hour.
    assert list(lines["A"].get_ydata()) == [3, 5, 0, 0, 0]
    assert list(lines["B"].get_ydata()) == [2, 0, 0, 1, 1]
    assert times_of(mdates.date2num(lines["A"].get_xdata())) == [
        T0 + timedelta(hours=h) for h in range(5)
    ]
    assert lines["A"].get_drawstyle() == "steps-post"
    assert ax.get_ylabel() == "events per 1 h"
    assert ax.get_legend().get_title().get_text() == "type"
    drawn(ax)


def test_event_rate_without_groups_and_with_a_given_freq():
    frame = rate_frame().groupby("time", as_index=False)["events"].sum()
    ax = el.plots.event_rate(frame, freq="30min")
    [line] = ax.get_lines()
    assert list(line.get_ydata()) == [5, 0, 5, 0, 0, 0, 1, 1]
    assert ax.get_ylabel() == "events per 30 min"
    assert ax.get_legend() is None


def test_event_rate_sums_small_groups_into_other_and_stacks_areas():
    frame = pd.DataFrame(
        {
            "time": pd.to_datetime(["2024-05-01T00:00Z"] * 4, utc=True),
            "stream_id": ["a", "b", "c", "d"],
            "events": [5, 1, 4, 2],
        }
    )
    table, group, step = el.plots.rates.rate_table(frame, None, None, top=3)
    assert group == "stream_id" and step == pd.Timedelta(hours=1)
    assert list(table.columns) == ["a", "c", "other"]
    assert table.iloc[0].tolist() == [5, 4, 3]
    ax = el.plots.event_rate(frame, kind="area", top=3)
    assert [c.get_label() for c in ax.collections] == ["a", "c", "other"]
    # The bands stack: the top band's upper edge is the total.
    top_band = ax.collections[-1].get_paths()[0].vertices
    assert top_band[:, 1].max() == 12


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda f: el.plots.event_rate(f, kind="bars"), el.PlotError, "kind must be one of"),
        (lambda f: el.plots.event_rate(f, top=0), el.PlotError, "top must be a positive int"),
        (lambda f: el.plots.event_rate(f, types=["A"]), el.PlotError, "filters ['types'] apply"),
        (lambda f: el.plots.event_rate(f, freq="1M"), el.PlotError, "not a fixed bucket width"),
        (
            lambda f: el.plots.event_rate(f.assign(extra=1)),
            el.PlotError,
            "several group columns ['type', 'extra']",
        ),
        (
            lambda f: el.plots.event_rate(f.drop(columns="events")),
            el.MissingColumnsError,
            "event_rate needs the column(s) ['events']",
        ),
    ],
)
def test_event_rate_rejects_bad_input(call, error, message):
    with pytest.raises(error) as info:
        call(rate_frame())
    assert message in str(info.value)


def test_event_rate_of_a_store_computes_through_analytics(fake_analytics):
    fake_analytics.results["event_rate"] = rate_frame()
    store = shop()
    ax = el.plots.event_rate(store, by="type", types=["A"])
    assert fake_analytics.calls == [
        ("event_rate", store, (), {"freq": "1h", "by": "type", "types": ["A"]})
    ]
    assert sorted(line.get_label() for line in ax.get_lines()) == ["A", "B"]


@pytest.mark.parametrize("by", ["type", None])
def test_event_rate_of_a_store_draws_empty_hours_as_zero(by):
    # Counted per hour by default: the hours between 00:00, 02:00 and 05:00 hold no
    # events, and must be drawn as 0 (not bridged by a guessed 2-hour width).
    store = el.EventStore()
    for hour in (0, 0, 0, 2, 5):
        store.append("s1", [el.Event("A", {}, occurred_at=T0 + timedelta(hours=hour))])
    ax = el.plots.event_rate(store, by=by)
    [line] = ax.get_lines()
    assert list(line.get_ydata()) == [3, 0, 1, 0, 0, 1, 1]
    assert times_of(mdates.date2num(line.get_xdata())) == [
        T0 + timedelta(hours=h) for h in range(7)
    ]
    assert ax.get_ylabel() == "events per 1 h"


# ---------------------------------------------------------------------- durations


def test_durations_histogram_with_percentile_lines():
    series = pd.Series(pd.to_timedelta([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], unit="min"))
    ax = el.plots.durations(series, bins=5)
    heights = [p.get_height() for p in ax.patches]
    assert heights == [2, 2, 2, 2, 2]
    lines = ax.get_lines()
    expected = np.percentile(np.arange(1, 11), [50, 90, 99])
    assert [line.get_xdata()[0] for line in lines] == pytest.approx(expected)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["count", "p50 = 5.5 min", "p90 = 9.1 min", "p99 = 9.91 min"]
    assert ax.get_xlabel() == "duration (min)"
    assert ax.get_title() == "10 durations"
    drawn(ax)


def test_durations_of_a_stream_durations_frame_leave_out_unfinished():
    frame = pd.DataFrame(
        {"stream_id": ["a", "b", "c"], "duration": pd.to_timedelta([30, None, 90], unit="s")}
    )
    ax = el.plots.durations(frame, percentiles=[50], unit="s")
    assert ax.get_title() == "2 durations (1 left out: unfinished)"
    assert ax.get_lines()[0].get_xdata()[0] == 60


def test_durations_take_seconds_and_choose_a_unit():
    assert el.plots.durations(pd.Series([0.2, 0.4])).get_xlabel() == "duration (ms)"
    assert el.plots.durations(pd.Series([30.0, 90.0])).get_xlabel() == "duration (s)"
    assert el.plots.durations(pd.Series([3 * 3600.0])).get_xlabel() == "duration (h)"
    assert el.plots.durations(pd.Series([5 * 86400.0])).get_xlabel() == "duration (d)"


def test_durations_on_a_log_axis_leave_out_zeros():
    ax = el.plots.durations(pd.Series([0.0, 1.0, 10.0, 100.0]), log=True, bins=2, unit="s")
    assert ax.get_xscale() == "log"
    assert ax.get_title() == "3 durations (1 left out: unfinished or zero)"
    edges = [p.get_x() for p in ax.patches]
    assert edges == pytest.approx([1.0, 10.0])


def test_durations_with_nothing_to_show():
    ax = el.plots.durations(pd.Series(pd.to_timedelta([None, None])))
    assert ax.get_title() == "no durations to show"


@pytest.mark.parametrize(
    ("source", "kwargs", "error", "message"),
    [
        (pd.Series([1.0]), {"unit": "weeks"}, el.PlotError, "unit must be one of"),
        (pd.Series(["soon"]), {}, el.PlotError, "durations must be Timedeltas or numbers"),
        (pd.DataFrame({"x": [1]}), {}, el.MissingColumnsError, "['duration']"),
        (pd.Series([1.0]), {"start_type": "A"}, el.PlotError, "options ['start_type'] apply"),
    ],
)
def test_durations_reject_bad_input(source, kwargs, error, message):
    with pytest.raises(error) as info:
        el.plots.durations(source, **kwargs)
    assert message in str(info.value)


def test_durations_of_a_store_compute_through_analytics(fake_analytics):
    fake_analytics.results["stream_durations"] = pd.DataFrame(
        {"duration": pd.to_timedelta([1, 3], unit="s")}
    )
    store = shop()
    ax = el.plots.durations(store, percentiles=[50], start_type="OrderPlaced")
    assert fake_analytics.calls == [("stream_durations", store, (), {"start_type": "OrderPlaced"})]
    assert ax.get_lines()[0].get_xdata()[0] == 2


# ---------------------------------------------------------------------- process_map


def dfg(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["source", "target", "count"])


def boxes(ax) -> dict[str, tuple[float, float]]:
    return {
        p.get_gid(): (p.get_x() + p.get_width() / 2, p.get_y() + p.get_height() / 2)
        for p in ax.patches
        if isinstance(p, FancyBboxPatch)
    }


def arrows(ax) -> dict[str, FancyArrowPatch]:
    return {p.get_gid(): p for p in ax.patches if isinstance(p, FancyArrowPatch)}


LOOPY = [("A", "B", 10), ("B", "C", 8), ("C", "B", 3), ("C", "D", 7), ("A", "D", 1), ("D", "D", 2)]


def test_process_layout_layers_by_longest_path_after_removing_back_edges():
    layout = el.plots.process_layout(dfg(LOOPY))
    assert layout.to_dict("list") == {
        "activity": ["A", "B", "C", "D"],
        "layer": [0, 1, 2, 3],
        "slot": [0, 0, 0, 0],
    }


def test_process_layout_orders_layers_to_avoid_crossings():
    # Seen in the order S, P, Q, Q2, P2: left as they come, Q2 would sit left of P2 while
    # Q sits right of P, and the two edges would cross.
    edges = [("S", "P", 10), ("S", "Q", 9), ("Q", "Q2", 8), ("P", "P2", 7)]
    layout = el.plots.process_layout(edges).set_index("activity")
    assert layout.loc[["P", "Q"], "slot"].tolist() == [0, 1]
    assert layout.loc[["P2", "Q2"], "slot"].tolist() == [0, 1]


def test_process_layout_of_a_pure_cycle_starts_somewhere():
    layout = el.plots.process_layout([("X", "Y", 5), ("Y", "X", 4), ("Y", "Z", 2)])
    assert layout.to_dict("list") == {
        "activity": ["X", "Y", "Z"],
        "layer": [0, 1, 2],
        "slot": [0, 0, 0],
    }


def test_process_map_draws_boxes_in_layers_and_labelled_arrows():
    ax = el.plots.process_map(dfg(LOOPY))
    centres = boxes(ax)
    assert sorted(centres) == ["A", "B", "C", "D"]
    ys = [centres[name][1] for name in "ABCD"]
    assert ys == sorted(ys, reverse=True)  # top to bottom, a layer each
    assert len({centres[name][0] for name in "ABCD"}) == 1
    drawn_arrows = arrows(ax)
    assert sorted(drawn_arrows) == ["A -> B", "A -> D", "B -> C", "C -> B", "C -> D", "D -> D"]
    # Straight to the next layer; bowed when going back up or skipping layers.
    rad = {gid: arrow.get_connectionstyle().rad for gid, arrow in drawn_arrows.items()}
    assert rad["A -> B"] == rad["C -> D"] == 0.0
    assert rad["C -> B"] == rad["A -> D"] == 0.35
    assert rad["B -> C"] == 0.15  # the twin of C -> B bows the other way
    # Thicker for more frequent transitions, each labelled with its count.
    widths = {gid: arrow.get_linewidth() for gid, arrow in drawn_arrows.items()}
    assert widths["A -> B"] > widths["B -> C"] > widths["A -> D"]
    texts = [t.get_text() for t in ax.texts]
    assert sorted(texts) == sorted(["A", "B", "C", "D", "10", "8", "3", "7", "1", "2"])
    assert ax.get_title() == "4 activities, 6 of 6 transitions"
    # The start activity is shaded differently.
    fills = {p.get_gid(): p.get_facecolor() for p in ax.patches if isinstance(p, FancyBboxPatch)}
    assert fills["A"] != fills["B"] == fills["C"] == fills["D"]
    drawn(ax)


def test_process_map_left_to_right():
    ax = el.plots.process_map(dfg(LOOPY), direction="LR")
    centres = boxes(ax)
    xs = [centres[name][0] for name in "ABCD"]
    assert xs == sorted(xs) and len(set(xs)) == 4
    drawn(ax)


def test_process_map_thins_rare_transitions():
    ax = el.plots.process_map(dfg(LOOPY), min_count=3)
    assert sorted(arrows(ax)) == ["A -> B", "B -> C", "C -> B", "C -> D"]
    assert ax.get_title() == "4 activities, 4 of 6 transitions (seen 3+ times)"
    ax = el.plots.process_map(dfg(LOOPY), top=2)
    assert sorted(arrows(ax)) == ["A -> B", "B -> C"]
    assert sorted(boxes(ax)) == ["A", "B", "C"]
    ax = el.plots.process_map(dfg(LOOPY), min_count=100)
    assert ax.get_title() == "no transitions seen 100 times or more"
    assert len(ax.patches) == 0


def test_process_map_adds_up_repeated_rows_and_formats_counts():
    ax = el.plots.process_map(dfg([("A", "B", 1000), ("A", "B", 234)]))
    assert "1,234" in [t.get_text() for t in ax.texts]


def test_process_map_fits_a_given_axes_without_resizing_its_figure():
    figure, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
    assert el.plots.process_map(dfg(LOOPY), ax=right) is right
    assert tuple(figure.get_size_inches()) == (8, 3)
    drawn(right)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"direction": "up"}, el.PlotError, "direction must be one of ['TB', 'LR']"),
        ({"top": 0}, el.PlotError, "top must be at least 1"),
        ({"min_count": 1.5}, el.PlotError, "min_count must be an int"),
        ({"types": ["A"]}, el.PlotError, "filters ['types'] apply"),
    ],
)
def test_process_map_rejects_bad_options(kwargs, error, message):
    with pytest.raises(error) as info:
        el.plots.process_map(dfg(LOOPY), **kwargs)
    assert message in str(info.value)


def test_process_map_names_missing_columns():
    with pytest.raises(el.MissingColumnsError, match=r"\['count'\]"):
        el.plots.process_map(pd.DataFrame({"source": ["A"], "target": ["B"]}))


def test_process_map_of_a_store_computes_through_analytics(fake_analytics):
    fake_analytics.results["directly_follows"] = dfg(LOOPY)
    store = shop()
    ax = el.plots.process_map(store, streams="order-*")
    assert fake_analytics.calls == [("directly_follows", store, (), {"streams": "order-*"})]
    assert len(arrows(ax)) == 6


# ---------------------------------------------------------------------- plots of a real store


def orders_log() -> el.EventStore:
    """Three orders and a mail, at known business times (minutes after T0)."""
    store = el.EventStore(clock=el.SimulatedClock(T0 + timedelta(days=1)))
    histories = {
        "order-1": [("Placed", 10), ("Paid", 40), ("Shipped", 130)],
        "order-2": [("Placed", 20), ("Cancelled", 80)],
        "mail-1": [("Sent", 30)],
        "order-3": [("Placed", 90), ("Paid", 110), ("Shipped", 230)],
    }
    for stream, steps in histories.items():
        store.append(
            stream,
            [el.Event(kind, {}, occurred_at=T0 + timedelta(minutes=m)) for kind, m in steps],
        )
    return store


@pytest.fixture(params=["store", "parquet"])
def orders_source(request, tmp_path):
    """The orders log as a store, or as the Parquet files it exports."""
    store = orders_log()
    if request.param == "store":
        return store
    return store.export_parquet(tmp_path / "parquet")


def test_event_rate_of_a_real_store_draws_what_analytics_counts(orders_source):
    ax = el.plots.event_rate(orders_source, by="type", streams="order-*")
    hours = [T0 + timedelta(hours=h) for h in range(5)]  # four buckets and the last one's end
    levels = {
        line.get_label(): list(line.get_ydata()[:-1]) for line in ax.get_lines()
    }  # the last point repeats the last level
    assert levels == {
        "Cancelled": [0, 1, 0, 0],
        "Paid": [1, 1, 0, 0],
        "Placed": [2, 1, 0, 0],
        "Shipped": [0, 0, 1, 1],
    }
    for line in ax.get_lines():
        assert times_of(mdates.date2num(line.get_xdata())) == hours
    # The same numbers as the analysis: every (hour, type) it counts, and zeros elsewhere.
    counted = el.analytics.event_rate(orders_source, "1h", by="type", streams="order-*")
    for time, kind, events in counted.itertuples(index=False):
        assert levels[kind][hours.index(time.to_pydatetime())] == events
    assert sum(map(sum, levels.values())) == counted["events"].sum() == 8
    assert ax.get_ylabel() == "events per 1 h"
    assert ax.get_legend().get_title().get_text() == "type"
    drawn(ax)


def test_event_rate_of_a_real_store_in_total_and_per_half_hour(orders_source):
    ax = el.plots.event_rate(orders_source)
    (line,) = ax.get_lines()
    assert line.get_label() == "events"
    assert list(line.get_ydata()) == [4, 3, 1, 1, 1]  # the mail counts too
    ax = el.plots.event_rate(orders_source, "30min", types=["Placed"])
    (line,) = ax.get_lines()
    assert list(line.get_ydata()) == [2, 0, 0, 1, 1]  # 00:00, 00:30 (none), 01:00, 01:30
    assert times_of(mdates.date2num(line.get_xdata()))[0] == T0
    assert ax.get_ylabel() == "events per 30 min"


def test_durations_of_a_real_store_from_one_type_to_another(orders_source):
    ax = el.plots.durations(
        orders_source, bins=2, percentiles=[50], start_type="Placed", end_type="Shipped"
    )
    # order-1 took 120 min, order-3 140 min; order-2 never shipped.
    frame = el.analytics.stream_durations(orders_source, "Placed", "Shipped")
    assert frame["stream_id"].tolist() == ["order-1", "order-3"]
    assert ax.get_xlabel() == "duration (h)"
    assert [p.get_height() for p in ax.patches] == [1, 1]
    assert ax.patches[0].get_x() == pytest.approx(2.0)
    assert ax.get_lines()[0].get_xdata()[0] == pytest.approx(130 / 60)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["count", "p50 = 2.17 h"]
    assert ax.get_title() == "2 durations"


def test_durations_of_a_real_store_first_to_last_event(orders_source):
    ax = el.plots.durations(orders_source, percentiles=[50, 100], unit="min", streams="order-*")
    frame = el.analytics.stream_durations(orders_source, streams="order-*")
    minutes = frame["duration"].dt.total_seconds() / 60
    assert minutes.tolist() == [120, 60, 140]
    assert [line.get_xdata()[0] for line in ax.get_lines()] == [120, 140]
    assert sum(p.get_height() for p in ax.patches) == 3
    assert ax.get_title() == "3 durations"


def test_process_map_of_a_real_store_draws_the_directly_follows_graph(orders_source):
    ax = el.plots.process_map(orders_source, streams="order-*")
    follows = el.analytics.directly_follows(orders_source, streams="order-*")
    assert list(follows[["source", "target", "count"]].itertuples(index=False, name=None)) == [
        ("Paid", "Shipped", 2),
        ("Placed", "Paid", 2),
        ("Placed", "Cancelled", 1),
    ]
    assert sorted(arrows(ax)) == sorted(
        f"{s} -> {t}" for s, t in zip(follows.source, follows.target, strict=True)
    )
    assert sorted(boxes(ax)) == ["Cancelled", "Paid", "Placed", "Shipped"]
    labels = sorted(t.get_text() for t in ax.texts if t.get_text().isdigit())
    assert labels == ["1", "2", "2"]
    # Placed starts the map; Paid and Cancelled follow it; Shipped comes last.
    layout = el.plots.process_layout(follows)
    assert dict(zip(layout.activity, layout.layer, strict=True)) == {
        "Placed": 0,
        "Paid": 1,
        "Cancelled": 1,
        "Shipped": 2,
    }
    placed, paid, shipped = (boxes(ax)[name][1] for name in ("Placed", "Paid", "Shipped"))
    assert placed > paid > shipped  # top to bottom
    assert ax.get_title() == "4 activities, 3 of 3 transitions"
    drawn(ax)


def test_process_map_of_a_real_store_keeps_filters_for_the_analysis(orders_source):
    ax = el.plots.process_map(orders_source, types=["Placed", "Shipped", "Sent"])
    # With Paid filtered out, Shipped directly follows Placed; the mail has no pair.
    assert sorted(arrows(ax)) == ["Placed -> Shipped"]
    assert [t.get_text() for t in ax.texts if t.get_text().isdigit()] == ["2"]


# ---------------------------------------------------------------------- state_evolution


def account(state, event):
    state = dict(state or {})
    if event.type == "Opened":
        state.update(owner={"name": event.data["owner"]}, status="open", balance=0)
    elif event.type == "Deposited":
        state["balance"] += event.data["amount"]
    elif event.type == "Frozen":
        state["status"] = "frozen"
    return state


def account_store(clock_step=timedelta(seconds=1)) -> el.EventStore:
    store = el.EventStore(clock=el.SimulatedClock(T0, step=clock_step))
    store.append(
        "acct-1",
        [
            el.Event("Opened", {"owner": "ann"}),
            el.Event("Deposited", {"amount": 10}),
            el.Event("Frozen", {}),
            el.Event("Deposited", {"amount": 5}),
        ],
    )
    return store


def test_state_series_by_version():
    series = el.plots.state_series(account_store(), "acct-1", account, ["balance", "status"])
    assert series.to_dict("list") == {
        "version": [1, 2, 3, 4],
        "balance": [0, 10, 10, 15],
        "status": ["open", "open", "frozen", "frozen"],
    }


def test_state_series_reads_nested_fields():
    series = el.plots.state_series(account_store(), "acct-1", account, "owner.name")
    assert series["owner.name"].tolist() == ["ann"] * 4


def test_state_series_by_knowledge_time_keeps_the_last_state_of_each_instant():
    store = account_store(clock_step=timedelta(0))  # every event recorded at the same instant
    store.clock.advance(timedelta(minutes=1))
    store.append("acct-1", [el.Event("Deposited", {"amount": 1})])
    series = el.plots.state_series(store, "acct-1", account, "balance", axis="known_at")
    assert series.to_dict("list") == {
        "recorded_at": [pd.Timestamp(T0), pd.Timestamp(T0 + timedelta(minutes=1))],
        "balance": [15, 16],
    }


def test_state_series_by_business_time_replays_as_of_each_time_when_events_arrive_late():
    store = account_store()
    # A deposit that happened before the freeze, recorded last.
    store.append(
        "acct-1", [el.Event("Deposited", {"amount": 100}, occurred_at=T0 + timedelta(seconds=1.5))]
    )
    series = el.plots.state_series(store, "acct-1", account, "balance", axis="at")
    moments = [T0 + timedelta(seconds=s) for s in (0, 1, 1.5, 2, 3)]
    assert series["occurred_at"].tolist() == [pd.Timestamp(m) for m in moments]
    assert series["balance"].tolist() == [0, 10, 110, 110, 115]
    for moment, balance in zip(moments, series["balance"], strict=True):
        assert store.state_at("acct-1", account, at=moment)["balance"] == balance


def test_state_series_by_business_time_in_order_matches_versions():
    series = el.plots.state_series(account_store(), "acct-1", account, "balance", axis="at")
    assert series["balance"].tolist() == [0, 10, 10, 15]
    assert series["occurred_at"].tolist() == [
        pd.Timestamp(T0 + timedelta(seconds=s)) for s in range(4)
    ]


class Account(el.Aggregate):
    def __init__(self, id):
        super().__init__(id)
        self.balance = 0

    def apply_Opened(self, event):
        pass

    def apply_Deposited(self, event):
        self.balance += event.data["amount"]

    def apply_Frozen(self, event):
        pass


def test_state_evolution_of_a_number_is_steps():
    ax = el.plots.state_evolution(account_store(), "acct-1", Account, "balance")
    [line] = ax.get_lines()
    assert list(line.get_xdata()) == [1, 2, 3, 4]
    assert list(line.get_ydata()) == [0, 10, 10, 15]
    assert line.get_drawstyle() == "steps-post"
    assert ax.get_title() == "acct-1: balance by version"
    drawn(ax)


def test_state_evolution_of_text_lists_its_values_on_the_y_axis():
    ax = el.plots.state_evolution(account_store(), "acct-1", account, "status", axis="known_at")
    [line] = ax.get_lines()
    assert list(line.get_ydata()) == [0, 0, 1, 1]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["open", "frozen"]
    assert times_of(mdates.date2num(line.get_xdata())) == [
        T0 + timedelta(seconds=s) for s in range(4)
    ]
    assert ax.get_xlabel() == "knowledge time (recorded_at, UTC)"
    drawn(ax)


def test_state_evolution_of_several_numbers_has_a_legend():
    def reducer(state, event):
        amount = event.data.get("amount", 0)
        return {"in": state["in"] + amount, "count": state["count"] + 1}

    ax = el.plots.state_evolution(
        account_store(), "acct-1", reducer, ["in", "count"], initial={"in": 0, "count": 0}
    )
    assert [line.get_label() for line in ax.get_lines()] == ["in", "count"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["in", "count"]


@pytest.mark.parametrize(
    ("stream", "field", "kwargs", "message"),
    [
        ("acct-1", "saldo", {}, "the state of 'acct-1' has no field 'saldo'; it has"),
        ("acct-9", "balance", {}, "stream 'acct-9' has no events"),
        (
            "acct-1",
            "balance",
            {"axis": "when"},
            "axis must be one of ['version', 'at', 'known_at']",
        ),
        ("acct-1", ["balance", "status"], {}, "field(s) ['status'] are not numbers"),
        ("acct-1", [], {}, "give at least one field"),
    ],
)
def test_state_evolution_rejects_what_it_cannot_plot(stream, field, kwargs, message):
    with pytest.raises(el.PlotError) as info:
        el.plots.state_evolution(account_store(), stream, account, field, **kwargs)
    assert message in str(info.value)


def test_state_evolution_rejects_a_field_holding_lists():
    def reducer(state, event):
        return {"types": [*state["types"], event.type]}

    with pytest.raises(el.PlotError, match="field 'types' holds lists"):
        el.plots.state_evolution(account_store(), "acct-1", reducer, "types", initial={"types": []})


# ---------------------------------------------------------------------- saga_gantt


def timeline(rows) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=TIMELINE_COLUMNS)
    for column in ("started", "finished"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


SAGAS = [
    ("T1", "reserve", "action", 1, at(0), at(5), "succeeded"),
    ("T1", "charge", "action", 1, at(5), at(8), "failed"),
    ("T1", "charge", "action", 2, at(10), at(20), "timed_out"),
    ("T1", "reserve", "compensation", 1, at(21), at(23), "compensated"),
    ("T2", "reserve", "action", 1, at(2), at(4), "succeeded"),
    ("T2", "charge", "action", 1, at(4), None, None),
    ("T3", "ship", "action", 1, at(1), at(2), "failed"),
]


def test_gantt_categories_tell_retries_failures_and_compensations_apart():
    assert el.plots.gantt_categories(timeline(SAGAS)).tolist() == [
        "succeeded",
        "retried",
        "timed out",
        "compensation",
        "succeeded",
        "running",
        "failed",
    ]


def test_gantt_categories_read_outcomes_loosely():
    rows = [
        ("T", "a", "action", 1, at(0), at(1), "Timeout"),
        ("T", "b", "ACTION", 1, at(0), at(1), "OK"),
        ("T", "c", "compensation", 1, at(0), at(1), "COMPENSATED"),
        ("T", "d", "compensation", 1, at(0), at(1), "error"),
        ("T", "e", "action", 1, at(0), None, float("nan")),
        ("T", "f", "action", 1, at(0), at(1), "exploded"),
    ]
    assert el.plots.gantt_categories(timeline(rows)).tolist() == [
        "timed out",
        "succeeded",
        "compensation",
        "compensation failed",
        "running",
        "failed",
    ]


def bars(ax) -> dict[str, Rectangle]:
    return {p.get_gid(): p for p in ax.patches if isinstance(p, Rectangle) and p.get_gid()}


def test_saga_gantt_draws_a_segment_per_attempt_in_its_category_colour():
    ax = el.plots.saga_gantt(timeline(SAGAS))
    assert [t.get_text() for t in ax.get_yticklabels()] == ["T1", "T3", "T2"]  # by first start
    segments = bars(ax)
    expected = {
        "T1/reserve/action/1": ("succeeded", 0, 5, 0),
        "T1/charge/action/1": ("retried", 5, 8, 0),
        "T1/charge/action/2": ("timed out", 10, 20, 0),
        "T1/reserve/compensation/1": ("compensation", 21, 23, 0),
        "T2/reserve/action/1": ("succeeded", 2, 4, 2),
        "T2/charge/action/1": ("running", 4, 23, 2),  # running until the latest time
        "T3/ship/action/1": ("failed", 1, 2, 1),
    }
    assert sorted(segments) == sorted(expected)
    for gid, (category, start, end, row) in expected.items():
        bar = segments[gid]
        assert bar.get_facecolor() == to_rgba(CATEGORIES[category]), gid
        assert mdates.num2date(bar.get_x()) == T0 + timedelta(seconds=start), gid
        assert bar.get_width() * 86400 == pytest.approx(end - start), gid
        assert bar.get_y() + bar.get_height() / 2 == row, gid
    assert segments["T2/charge/action/1"].get_hatch() == "//"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["succeeded", "retried", "failed", "timed out", "compensation", "running"]
    # Step names on the bars, attempts after the first numbered.
    assert "charge #2" in [t.get_text() for t in ax.texts]
    assert ax.get_title() == "3 saga(s), 7 step attempt(s)"
    drawn(ax)


def test_saga_gantt_of_one_saga_has_a_row_per_step():
    one = timeline(SAGAS).query("transaction_id == 'T1'")
    ax = el.plots.saga_gantt(one)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["reserve", "charge"]
    rows = {gid: bar.get_y() + bar.get_height() / 2 for gid, bar in bars(ax).items()}
    assert rows == {
        "T1/reserve/action/1": 0,
        "T1/charge/action/1": 1,
        "T1/charge/action/2": 1,
        "T1/reserve/compensation/1": 0,
    }
    ax = el.plots.saga_gantt(timeline(SAGAS[4:6]), lanes="step")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["reserve", "charge"]
    ax = el.plots.saga_gantt(timeline(SAGAS), lanes="step")
    assert [t.get_text() for t in ax.get_yticklabels()][:3] == [
        "T1 · reserve",
        "T3 · ship",
        "T2 · reserve",
    ]


def test_saga_gantt_running_attempts_end_now_and_instant_ones_stay_visible():
    rows = [
        ("T", "a", "action", 1, at(0), at(0), "succeeded"),
        ("T", "b", "action", 1, at(10), None, None),
    ]
    ax = el.plots.saga_gantt(timeline(rows), now=T0 + timedelta(seconds=30))
    segments = bars(ax)
    assert segments["T/b/action/1"].get_width() * 86400 == pytest.approx(20)
    assert segments["T/a/action/1"].get_width() * 86400 == pytest.approx(30 * 0.004)


def test_saga_gantt_of_no_steps():
    ax = el.plots.saga_gantt(timeline([]))
    assert ax.get_title() == "no steps yet"


def test_saga_gantt_rejects_bad_input():
    with pytest.raises(el.MissingColumnsError, match=r"\['outcome'\]"):
        el.plots.saga_gantt(timeline(SAGAS).drop(columns="outcome"))
    bad = timeline(SAGAS).assign(kind="undo")
    with pytest.raises(
        el.PlotError, match=r"kind must be 'action' or 'compensation', got \['undo'\]"
    ):
        el.plots.saga_gantt(bad)
    with pytest.raises(el.PlotError, match="lanes must be 'transaction', 'step' or None"):
        el.plots.saga_gantt(timeline(SAGAS), lanes="saga")


def test_plots_are_public_and_documented():
    for name in el.plots.__all__:
        value = getattr(el.plots, name)
        if callable(value):
            assert value.__doc__, name
    assert "plots" in el.__all__ and "widgets" in el.__all__


# ---------------------------------------------------------------------- properties


PROPERTIES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

graphs = st.lists(
    st.tuples(st.sampled_from("ABCDEFG"), st.sampled_from("ABCDEFG"), st.integers(1, 50)),
    min_size=1,
    max_size=15,
)


def reachable(edges: set[tuple[str, str]], start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        for s, t in edges:
            if s == node and t not in seen:
                seen.add(t)
                todo.append(t)
    return False


@PROPERTIES
@given(graphs)
def test_process_layout_puts_every_forward_edge_downwards(edges):
    layers, slots, back = _layout(edges)
    assert set(layers) == {a for e in edges for a in e[:2]}
    for layer in set(layers.values()):
        members = [n for n in layers if layers[n] == layer]
        assert sorted(slots[n] for n in members) == list(range(len(members)))
    forward = {(s, t) for s, t, _ in edges if s != t and (s, t) not in back}
    for s, t in forward:
        assert layers[t] > layers[s]
    # A back edge closes a cycle: its target leads back to its source.
    for s, t in back:
        assert (s, t) in {(a, b) for a, b, _ in edges} and s != t
        assert reachable(forward, t, s)
    # Longest path: every activity not at the top has a forward edge from the layer above.
    for node, layer in layers.items():
        if layer > 0:
            assert any(layers[s] == layer - 1 for s, t in forward if t == node)


@PROPERTIES
@given(
    st.lists(
        st.tuples(st.integers(0, 12), st.sampled_from("abcdefgh"), st.integers(1, 9)),
        min_size=1,
        max_size=30,
    ),
    st.integers(1, 5),
)
def test_rate_table_keeps_every_event(rows, top):
    frame = pd.DataFrame(
        {
            "time": [T0 + timedelta(hours=h) for h, _, _ in rows],
            "type": [g for _, g, _ in rows],
            "events": [n for _, _, n in rows],
        }
    )
    table, group, step = el.plots.rates.rate_table(frame, "1h", None, top)
    assert group == "type" and step == pd.Timedelta(hours=1)
    assert len(table.columns) <= top
    assert int(table.to_numpy().sum()) == sum(n for _, _, n in rows)
    hours = [h for h, _, _ in rows]
    assert len(table) == max(hours) - min(hours) + 1  # every hour between, gaps as zeros
    per_hour = frame.groupby("time")["events"].sum()
    assert table.sum(axis=1)[per_hour.index].tolist() == per_hour.tolist()
