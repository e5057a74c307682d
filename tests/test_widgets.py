"""el.widgets: the pure functions behind each widget, and each widget driven headlessly."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import matplotlib

matplotlib.use("Agg")

import ipywidgets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import eventlab as el  # noqa: E402
from eventlab.widgets._html import CHANGED  # noqa: E402

T0 = datetime(2024, 5, 1, tzinfo=UTC)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _no_open_figures():
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before, "a widget left a pyplot figure open"


def account(state, event):
    state = dict(state or {})
    if event.type == "Opened":
        state.update(owner=event.data["owner"], balance=0)
    elif event.type == "Deposited":
        state["balance"] += event.data["amount"]
    return state


def account_store() -> el.EventStore:
    """acct-1: opened, +10, +5; then a +100 recorded last that happened before the +5."""
    store = el.EventStore(clock=el.SimulatedClock(T0))
    store.append(
        "acct-1",
        [
            el.Event("Opened", {"owner": "ann"}),
            el.Event("Deposited", {"amount": 10}),
            el.Event("Deposited", {"amount": 5}),
        ],
    )
    store.append("other-1", [el.Event("Opened", {"owner": "bob"})])
    store.append(
        "acct-1", [el.Event("Deposited", {"amount": 100}, occurred_at=T0 + timedelta(seconds=1.5))]
    )
    return store


def highlighted(html: str) -> list[str]:
    """The first cell of every highlighted table row."""
    rows = re.findall(rf'<tr style="{CHANGED}"><td[^>]*>(.*?)</td>', html)
    return rows


def cells(html: str) -> list[str]:
    return re.findall(r"<td[^>]*>(.*?)</td>", html, re.S)


# ---------------------------------------------------------------------- time travel


def test_time_travel_points_on_each_axis():
    store = account_store()
    assert el.widgets.time_travel_points(store, "acct-1") == [0, 1, 2, 3, 4]
    seconds = [0, 1, 1.5, 2]
    assert el.widgets.time_travel_points(store, "acct-1", "at") == [None] + [
        pd.Timestamp(T0 + timedelta(seconds=s)) for s in seconds
    ]
    assert el.widgets.time_travel_points(store, "acct-1", "known_at") == [None] + [
        pd.Timestamp(T0 + timedelta(seconds=s)) for s in (0, 1, 2, 4)
    ]


def test_time_travel_view_by_version():
    store = account_store()
    view = el.widgets.time_travel_view(store, "acct-1", account, 3)
    assert view["label"] == "version 3 of 4"
    assert view["state"] == {"owner": "ann", "balance": 15}
    assert view["previous"] == {"owner": "ann", "balance": 10}
    assert view["diff"].to_dict("records") == [
        {"path": "balance", "before": 10, "after": 15, "kind": "changed"}
    ]
    assert view["changed"] == ["balance"]
    assert [e.version for e in view["events"]] == [3]
    assert highlighted(view["html"]["state"]) == ["balance"]
    first = el.widgets.time_travel_view(store, "acct-1", account, 0)
    assert first["label"] == "before the first event"
    assert first["state"] is None and first["diff"].empty and first["events"] == []
    assert "no state" in first["html"]["state"] and "no change" in first["html"]["diff"]


def test_time_travel_view_by_business_time_sees_the_late_event_where_it_happened():
    store = account_store()
    view = el.widgets.time_travel_view(store, "acct-1", account, 3, axis="at")
    assert view["label"] == "business time 2024-05-01T00:00:01.500000Z (stop 3 of 4)"
    assert view["state"] == {"owner": "ann", "balance": 110}
    assert view["previous"] == {"owner": "ann", "balance": 10}
    assert [e.version for e in view["events"]] == [4]


def test_time_travel_view_by_knowledge_time_shows_what_was_believed():
    store = account_store()
    view = el.widgets.time_travel_view(store, "acct-1", account, 3, axis="known_at")
    assert view["state"] == {"owner": "ann", "balance": 15}  # the +100 was not known yet
    last = el.widgets.time_travel_view(store, "acct-1", account, 4, axis="known_at")
    assert last["state"] == {"owner": "ann", "balance": 115}
    assert last["diff"]["after"].tolist() == [115]


class Account(el.Aggregate):
    def __init__(self, id):
        super().__init__(id)
        self.owner = None
        self.balance = 0

    def apply_Opened(self, event):
        self.owner = event.data["owner"]

    def apply_Deposited(self, event):
        self.balance += event.data["amount"]


def test_time_travel_view_of_an_aggregate():
    view = el.widgets.time_travel_view(account_store(), "acct-1", Account, 1)
    assert view["changed"] == ["owner"]
    assert view["diff"].to_dict("records") == [
        {"path": "owner", "before": None, "after": "ann", "kind": "changed"}
    ]


@pytest.mark.parametrize(
    ("stream", "position", "axis", "message"),
    [
        ("acct-1", 5, "version", "position 5 is off the slider: 'acct-1' has stops 0 to 4"),
        ("acct-1", -1, "version", "position -1 is off the slider"),
        ("acct-1", True, "version", "position must be an int, got True"),
        ("acct-1", 1, "valid_at", "axis must be 'version', 'at' (business time) or 'known_at'"),
        ("acct-9", 0, "version", "stream 'acct-9' has no events"),
    ],
)
def test_time_travel_view_rejects_bad_positions(stream, position, axis, message):
    with pytest.raises(el.PlotError) as info:
        el.widgets.time_travel_view(account_store(), stream, account, position, axis=axis)
    assert message in str(info.value)


def test_time_travel_widget_follows_its_slider_and_axis():
    widget = el.widgets.time_travel(account_store(), "acct-1", account)
    assert isinstance(widget, ipywidgets.VBox)
    assert (widget.slider.min, widget.slider.max, widget.slider.value) == (0, 4, 4)
    assert "version 4 of 4" in widget.header.value
    assert cells(widget.state_view.value) == ["owner", "&#x27;ann&#x27;", "balance", "115"]
    widget.slider.value = 2
    assert "version 2 of 4" in widget.header.value
    assert cells(widget.state_view.value) == ["owner", "&#x27;ann&#x27;", "balance", "10"]
    assert highlighted(widget.state_view.value) == ["balance"]
    assert cells(widget.diff_view.value) == ["balance", "0", "10", "changed"]
    assert "Deposited" in widget.events_view.value
    widget.axis.value = "at"
    assert widget.slider.value == 4 and "business time" in widget.header.value
    widget.slider.value = 3
    assert cells(widget.state_view.value)[-1] == "110"
    widget.slider.value = 0
    assert "before the first event" in widget.header.value
    assert "no state" in widget.state_view.value
    widget.axis.value = "known_at"
    assert "knowledge time 2024-05-01T00:00:04Z (stop 4 of 4)" in widget.header.value


# ---------------------------------------------------------------------- event browser


def test_browse_events_filters_and_pages():
    store = account_store()
    page = el.widgets.browse_events(store, page_size=2)
    assert (page["total"], page["page"], page["pages"]) == (5, 0, 3)
    assert page["events"]["position"].tolist() == [1, 2]
    assert list(page["events"].columns) == el.widgets.browser.PAGE_COLUMNS
    assert page["events"]["data"].tolist() == ['{"owner":"ann"}', '{"amount":10}']
    last = el.widgets.browse_events(store, page=2, page_size=2)
    assert last["events"]["position"].tolist() == [5]
    found = el.widgets.browse_events(store, types="Opened", streams="other-*")
    assert found["events"]["position"].tolist() == [4]
    found = el.widgets.browse_events(store, streams=["acct-1"], types=["Deposited"])
    assert found["events"]["position"].tolist() == [2, 3, 5]


def test_browse_events_by_either_clock():
    store = account_store()
    window = {"start": T0 + timedelta(seconds=1), "end": "2024-05-01T00:00:02Z"}
    business = el.widgets.browse_events(store, **window)
    assert business["events"]["position"].tolist() == [2, 5]  # the +100 happened at 1.5 s
    knowledge = el.widgets.browse_events(store, time="recorded_at", **window)
    assert knowledge["events"]["position"].tolist() == [2]


def test_browse_events_rejects_bad_pages_and_times():
    store = account_store()
    with pytest.raises(el.PlotError, match=r"page 3 is past the end: 5 matching events make 3"):
        el.widgets.browse_events(store, page=3, page_size=2)
    with pytest.raises(el.PlotError, match="page_size must be an int of at least 1"):
        el.widgets.browse_events(store, page_size=0)
    with pytest.raises(el.EventlabError, match="cannot read 'soon' as a timestamp"):
        el.widgets.browse_events(store, start="soon")
    empty = el.widgets.browse_events(store, types=["Nothing"])
    assert (empty["total"], empty["pages"], len(empty["events"])) == (0, 1, 0)


def test_event_detail():
    store = account_store()
    assert el.widgets.event_detail(store, 5).data == {"amount": 100}
    for position in (0, 6):
        with pytest.raises(el.PlotError, match=rf"no event at position {position}; .* \(5\)"):
            el.widgets.event_detail(store, position)


def test_event_browser_widget_pages_filters_and_opens_events():
    widget = el.widgets.event_browser(account_store(), page_size=2)
    assert widget.types.options == ("Deposited", "Opened")
    assert "5 events match; showing 1-2, page 1 of 3" in widget.status.value
    assert widget.selected.value == 1
    assert highlighted(widget.table.value) == ["1"]
    assert "&quot;owner&quot;: &quot;ann&quot;" in widget.detail.value
    widget.next.click()
    assert widget.page.value == 2
    assert "showing 3-4, page 2 of 3" in widget.status.value
    assert [value for _, value in widget.selected.options] == [3, 4]
    widget.selected.value = 4
    assert highlighted(widget.table.value) == ["4"]
    assert "other-1 v1" in widget.detail.value
    widget.next.click()
    widget.next.click()  # already on the last page
    assert widget.page.value == 3
    widget.previous.click()
    assert widget.page.value == 2
    # A filter goes back to the first page.
    widget.types.value = ("Deposited",)
    assert widget.page.value == 1
    assert "3 events match; showing 1-2, page 1 of 2" in widget.status.value
    widget.stream.value = "other-*"
    assert "no events match" in widget.status.value and widget.detail.value == ""
    widget.stream.value = "acct-*"
    widget.clock.value = "recorded_at"
    widget.start.value = "2024-05-01T00:00:03Z"
    assert [value for _, value in widget.selected.options] == [5]
    widget.end.value = "whenever"
    assert "cannot read &#x27;whenever&#x27; as a timestamp" in widget.status.value
    assert widget.table.value == "" and widget.selected.options == ()
    widget.end.value = ""
    assert [value for _, value in widget.selected.options] == [5]


# ---------------------------------------------------------------------- projection debugger


def test_projection_steps_of_a_reducer():
    steps = el.widgets.projection_steps(account_store(), account, "acct-1")
    assert [(s["index"], s["event"].type) for s in steps] == [
        (1, "Opened"),
        (2, "Deposited"),
        (3, "Deposited"),
        (4, "Deposited"),
    ]
    assert [s["after"] for s in steps] == [
        {"owner": "ann", "balance": 0},
        {"owner": "ann", "balance": 10},
        {"owner": "ann", "balance": 15},
        {"owner": "ann", "balance": 115},
    ]
    assert steps[0]["before"] is None
    assert steps[0]["changed"] == ["owner", "balance"]
    assert steps[3]["diff"].to_dict("records") == [
        {"path": "balance", "before": 15, "after": 115, "kind": "changed"}
    ]
    assert all(s["handled"] and s["error"] is None for s in steps)


def test_projection_steps_keep_each_state_even_when_the_reducer_mutates_it():
    def in_place(state, event):
        state["seen"].append(event.type)
        return state

    steps = el.widgets.projection_steps(account_store(), in_place, "acct-1", initial={"seen": []})
    assert [s["before"]["seen"] for s in steps] == [
        [],
        ["Opened"],
        ["Opened", "Deposited"],
        ["Opened", "Deposited", "Deposited"],
    ]
    assert steps[1]["diff"]["kind"].tolist() == ["added"]


def test_projection_steps_stop_at_a_failing_event():
    def fragile(state, event):
        if event.data.get("amount") == 5:
            raise ValueError("five is unlucky")
        return account(state, event)

    steps = el.widgets.projection_steps(account_store(), fragile, "acct-1")
    assert len(steps) == 3
    assert steps[2]["error"] == "ValueError: five is unlucky"
    assert steps[2]["after"] == steps[2]["before"] == {"owner": "ann", "balance": 10}


def test_projection_steps_of_an_aggregate_mark_unhandled_types():
    class Lenient(Account):
        ignore_unknown = True

    store = account_store()
    store.append("acct-1", [el.Event("Audited", {})])
    steps = el.widgets.projection_steps(store, Lenient, "acct-1")
    assert [s["handled"] for s in steps] == [True, True, True, True, False]
    assert steps[-1]["changed"] == [] and steps[-1]["after"].balance == 115
    strict = el.widgets.projection_steps(store, Account, "acct-1")
    assert "UnknownEventError" in strict[-1]["error"]


def test_projection_steps_follow_a_revert():
    store = account_store()
    store.revert("acct-1", 2)
    steps = el.widgets.projection_steps(store, account, "acct-1")
    assert steps[-1]["event"].type == "Reverted"
    assert steps[-1]["after"] == {"owner": "ann", "balance": 10}
    assert steps[-1]["diff"]["after"].tolist() == [10]


class Balances(el.Projection):
    name = "balances"
    schema = {"account": "VARCHAR", "owner": "VARCHAR", "balance": "INTEGER"}

    def on_Opened(self, event):
        self.upsert(event.stream_id, owner=event.data["owner"], balance=0)

    def on_Deposited(self, event):
        row = self.get(event.stream_id)
        self.upsert(event.stream_id, balance=row["balance"] + event.data["amount"])


def test_projection_steps_of_a_projection_show_its_rows_and_write_nothing(snapshot):
    store = account_store()
    store.append("acct-1", [el.Event("Closed", {})])
    before = snapshot(store)
    projection = Balances()
    steps = el.widgets.projection_steps(store, projection, "acct-1")
    before.assert_same(store)
    assert store.sql("SELECT count(*) AS n FROM duckdb_tables() WHERE table_name = 'balances'")[
        "n"
    ].tolist() == [0]
    assert steps[0]["before"] == {}
    assert steps[0]["after"] == {"acct-1": {"account": "acct-1", "owner": "ann", "balance": 0}}
    assert steps[3]["after"]["acct-1"]["balance"] == 115
    assert steps[3]["changed"] == ["acct-1.balance"]
    assert [s["handled"] for s in steps] == [True, True, True, True, False]
    # The projection is left as it was: outside a runner its handlers may not write.
    with pytest.raises(el.ProjectionError, match="changes rows only while a ProjectionRunner"):
        projection.upsert("x", balance=1)
    runner = el.ProjectionRunner(store, [projection])
    runner.catch_up()
    assert store.sql("SELECT balance FROM balances WHERE account = 'acct-1'")[
        "balance"
    ].tolist() == [115]


def test_projection_steps_keep_each_step_rows_when_a_handler_changes_a_value_in_place():
    class Tags(el.Projection):
        name = "tags"
        schema = {"account": "VARCHAR", "types": "VARCHAR[]"}

        def on_Opened(self, event):
            self.upsert(event.stream_id, types=[event.type])

        def on_Deposited(self, event):
            types = self.get(event.stream_id)["types"]
            types.append(event.type)  # the same list object, changed in place
            self.upsert(event.stream_id, types=types)

    steps = el.widgets.projection_steps(account_store(), Tags(), "acct-1")
    assert [len(s["after"]["acct-1"]["types"]) for s in steps] == [1, 2, 3, 4]
    assert steps[1]["changed"] == ["acct-1.types"]


def test_projection_steps_report_a_handler_error():
    class Broken(Balances):
        def on_Deposited(self, event):
            self.upsert(event.stream_id, interest=1)

    steps = el.widgets.projection_steps(account_store(), Broken(), "acct-1")
    assert len(steps) == 2
    assert steps[1]["error"].startswith("ProjectionError: upsert into 'balances' got unknown")


def test_projection_steps_reject_what_cannot_be_stepped():
    store = account_store()
    sql = el.SqlProjection("totals", "SELECT count(*) AS n FROM events")
    with pytest.raises(el.PlotError, match="one SQL query over the whole log"):
        el.widgets.projection_steps(store, sql, "acct-1")
    with pytest.raises(el.PlotError, match=r"pass an instance of Balances \(e.g. Balances\(\)\)"):
        el.widgets.projection_steps(store, Balances, "acct-1")
    with pytest.raises(el.PlotError, match="stream 'acct-9' has no events"):
        el.widgets.projection_steps(store, account, "acct-9")
    with pytest.raises(el.EventlabError, match="a reducer is a function"):
        el.widgets.projection_steps(store, 42, "acct-1")


def test_projection_debugger_widget_steps_through_events():
    widget = el.widgets.projection_debugger(account_store(), Balances(), "acct-1")
    assert (widget.slider.min, widget.slider.max, widget.slider.value) == (1, 4, 1)
    assert "step 1 of 4" in widget.header.value
    assert "no state" in widget.before_view.value
    widget.next.click()
    assert widget.slider.value == 2
    assert "event 2: Deposited" in widget.event_view.value
    assert highlighted(widget.after_view.value) == ["acct-1.balance"]
    assert highlighted(widget.before_view.value) == ["acct-1.balance"]
    assert cells(widget.diff_view.value) == ["[&#x27;acct-1&#x27;].balance", "0", "10", "changed"]
    widget.slider.value = 4
    widget.next.click()
    assert widget.slider.value == 4
    widget.previous.click()
    assert "step 3 of 4" in widget.header.value


def test_projection_debugger_widget_explains_unhandled_and_failing_events():
    store = account_store()
    store.append("acct-1", [el.Event("Closed", {})])
    widget = el.widgets.projection_debugger(store, account, "acct-1")
    widget.slider.value = 5
    assert "no change" in widget.diff_view.value

    def fragile(state, event):
        if event.type == "Closed":
            raise KeyError("closed")
        return account(state, event)

    widget = el.widgets.projection_debugger(store, fragile, "acct-1")
    widget.slider.value = 5
    assert "applying this event raised KeyError" in widget.header.value
    widget = el.widgets.projection_debugger(store, Balances(), "acct-1")
    widget.slider.value = 5
    assert "nothing handles Closed: the state is unchanged" in widget.header.value


# ---------------------------------------------------------------------- saga stepper


def saga_store() -> el.EventStore:
    store = el.EventStore(clock=el.SimulatedClock(T0))
    E = el.Event
    store.append(
        "saga-T1",
        [
            E("SagaStarted", {}),
            E("StepRequested", {"step": "reserve", "attempt": 1}),
            E("StepSucceeded", {"step": "reserve", "attempt": 1}),
            E("StepRequested", {"step": "charge", "attempt": 1}),
            E("StepFailed", {"step": "charge", "attempt": 1, "error": "card declined"}),
            E("StepRetried", {"step": "charge", "attempt": 2}),
            E("StepRequested", {"step": "charge", "attempt": 2}),
            E("StepTimedOut", {"step": "charge", "attempt": 2}),
            E("CompensationRequested", {"step": "reserve", "attempt": 1}),
            E("StepCompensated", {"step": "reserve", "attempt": 1}),
            E("SagaAborted", {}),
        ],
    )
    store.append(
        "saga-T2",
        [
            E("SagaStarted", {}),
            E("StepRequested", {"step": "reserve", "attempt": 1}),
            E("StepSucceeded", {"step": "reserve", "attempt": 1}),
            E("SagaCompleted", {}),
        ],
    )
    return store


def seconds(*values: float) -> list[pd.Timestamp]:
    return [pd.Timestamp(T0 + timedelta(seconds=v)) for v in values]


def test_saga_timeline_has_a_row_per_attempt():
    timeline = el.saga_timeline(saga_store(), "T1")
    assert list(timeline.columns) == el.plots.saga.TIMELINE_COLUMNS
    assert timeline[["step", "kind", "attempt", "outcome"]].values.tolist() == [
        ["reserve", "action", 1, "succeeded"],
        ["charge", "action", 1, "failed"],
        ["charge", "action", 2, "timed_out"],
        ["reserve", "compensation", 1, "compensated"],
    ]
    # Attempt 2 starts at its request, not at the retry decision a second earlier.
    assert timeline["started"].tolist() == seconds(1, 3, 6, 8)
    assert timeline["finished"].tolist() == seconds(2, 4, 7, 9)
    assert str(timeline["started"].dtype) == "datetime64[us, UTC]"
    assert (timeline["transaction_id"] == "T1").all()
    assert el.plots.gantt_categories(timeline).tolist() == [
        "succeeded",
        "retried",
        "timed out",
        "compensation",
    ]


def test_saga_timeline_of_every_saga():
    timeline = el.saga_timeline(saga_store())
    assert timeline[["transaction_id", "step", "attempt"]].values.tolist() == [
        ["T1", "reserve", 1],
        ["T1", "charge", 1],
        ["T1", "charge", 2],
        ["T1", "reserve", 1],
        ["T2", "reserve", 1],
    ]


def recorded(stream: str, events: list[tuple[str, dict]]) -> list:
    store = el.EventStore(clock=el.SimulatedClock(T0))
    return store.append(stream, [el.Event(kind, data) for kind, data in events])


def test_timeline_from_events_without_attempt_numbers():
    events = recorded(
        "saga-X",
        [
            ("StepRequested", {"step": "pay"}),
            ("StepFailed", {"step": "pay"}),
            ("StepRetried", {"step": "pay"}),  # opens attempt 2 ...
            ("StepRequested", {"step": "pay"}),  # ... which this request starts
            ("StepSucceeded", {"step": "pay"}),
            ("StepRequested", {"step": "ship"}),
        ],
    )
    timeline = el.saga.timeline_from_events(events)
    assert timeline[["step", "attempt", "outcome"]].values.tolist() == [
        ["pay", 1, "failed"],
        ["pay", 2, "succeeded"],
        ["ship", 1, None],
    ]
    assert timeline["started"].tolist() == seconds(0, 3, 5)
    assert timeline["finished"].isna().tolist() == [False, False, True]


def test_timeline_from_events_retry_as_start_and_ends_without_starts():
    events = recorded(
        "saga-Y",
        [
            ("StepFailed", {"step": "pay", "attempt": 1}),  # no request seen
            ("StepRetried", {"step": "pay", "attempt": 2}),  # the retry is the start
            ("StepSucceeded", {"step": "pay", "attempt": 2}),
            ("CompensationRequested", {"step": "pay"}),
            ("StepFailed", {"step": "pay", "kind": "compensation"}),
        ],
    )
    timeline = el.saga.timeline_from_events(events)
    assert timeline[["kind", "attempt", "started", "finished", "outcome"]].values.tolist() == [
        ["action", 1, *seconds(0, 0), "failed"],
        ["action", 2, *seconds(1, 2), "succeeded"],
        ["compensation", 1, *seconds(3, 4), "failed"],
    ]
    assert el.plots.gantt_categories(timeline).tolist() == [
        "retried",
        "succeeded",
        "compensation failed",
    ]


def test_timeline_from_no_step_events_is_empty_with_the_columns():
    timeline = el.saga.timeline_from_events(recorded("saga-Z", [("SagaStarted", {})]))
    assert timeline.empty and list(timeline.columns) == el.plots.saga.TIMELINE_COLUMNS


def test_saga_step_view_shows_the_saga_so_far():
    store = saga_store()
    view = el.widgets.saga_step_view(store, "T1", 6)
    assert view["event"].type == "StepRetried"
    assert view["timeline"][["step", "attempt", "outcome"]].values.tolist() == [
        ["reserve", 1, "succeeded"],
        ["charge", 1, "failed"],
        ["charge", 2, None],
    ]
    assert highlighted(view["events_html"]) == ["6"]
    assert view["events_html"].count('style="color:#aaa"') == 5  # the events still to come
    assert "StepRetried" in view["event_html"]
    assert view["png"].startswith(PNG)
    assert el.widgets.saga_step_view(store, "saga-T1", 6)["event"] == view["event"]


def test_saga_step_view_rejects_unknown_sagas_and_steps():
    store = saga_store()
    with pytest.raises(
        el.PlotError, match=r"no saga events for transaction 'T9' \(looked in stream 'saga-T9'\)"
    ):
        el.widgets.saga_step_view(store, "T9", 1)
    with pytest.raises(el.PlotError, match="step must be an int from 1 to 4, got 5"):
        el.widgets.saga_step_view(store, "T2", 5)


def test_saga_stepper_widget_moves_through_the_events():
    widget = el.widgets.saga_stepper(saga_store(), "T1")
    assert (widget.slider.min, widget.slider.max, widget.slider.value) == (1, 11, 1)
    assert widget.chart.format == "png" and bytes(widget.chart.value).startswith(PNG)
    first_chart = bytes(widget.chart.value)
    assert "SagaStarted" in widget.event_view.value
    widget.next.click()
    assert widget.slider.value == 2
    assert highlighted(widget.events_view.value) == ["2"]
    assert bytes(widget.chart.value) != first_chart  # the reserve step appeared
    widget.slider.value = 11
    assert "SagaAborted" in widget.event_view.value
    widget.previous.click()
    assert "StepCompensated" in widget.event_view.value


# ---------------------------------------------------------------------- properties


# A step's attempts: failures or time-outs, then maybe a success.
attempts = st.tuples(
    st.lists(st.sampled_from(["StepFailed", "StepTimedOut"]), max_size=3), st.booleans()
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(attempts, min_size=1, max_size=4),
    numbered=st.booleans(),
    announce_retries=st.booleans(),
)
def test_timeline_from_events_matches_a_saga_model(steps, numbered, announce_retries):
    """Whatever the saga did, the timeline has its attempts, in order, with their outcomes."""
    events, expected = [], []
    outcome_of = {"StepFailed": "failed", "StepTimedOut": "timed_out"}

    def emit(kind, step, attempt):
        data = {"step": step, **({"attempt": attempt} if numbered else {})}
        events.append((kind, data))

    done = []
    for index, (failures, succeeds) in enumerate(steps):
        step = f"step{index}"
        ends = [*failures, *(["StepSucceeded"] if succeeds else [])]
        for attempt, end in enumerate(ends, start=1):
            if attempt > 1 and announce_retries:
                emit("StepRetried", step, attempt)
            emit("StepRequested", step, attempt)
            emit(end, step, attempt)
            expected.append((step, "action", attempt, outcome_of.get(end, "succeeded")))
        if not succeeds:
            break
        done.append(step)
    if not steps[-1][1] or len(done) < len(steps):
        for step in reversed(done):  # an aborted saga compensates what it did
            emit("CompensationRequested", step, 1)
            emit("StepCompensated", step, 1)
            expected.append((step, "compensation", 1, "compensated"))
    timeline = el.saga.timeline_from_events(recorded("saga-P", events))
    assert [tuple(row) for row in timeline[["step", "kind", "attempt", "outcome"]].values] == (
        expected
    )
    assert (timeline["finished"] >= timeline["started"]).all()
    # Each attempt lasts from its request to its end: one simulated second.
    assert ((timeline["finished"] - timeline["started"]) == pd.Timedelta(seconds=1)).all()
