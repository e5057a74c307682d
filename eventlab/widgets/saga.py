"""A saga stepper: a saga's events one by one beside its Gantt chart so far.

Sagas keep their state as events in the stream ``saga-<transaction id>``:
``SagaStarted``, ``StepRequested``, ``StepSucceeded``, ``StepFailed``,
``StepRetried``, ``StepTimedOut``, ``CompensationRequested``,
``StepCompensated``, ``SagaCompleted``, ``SagaAborted``; step events carry
``step`` and ``attempt`` in their data. :func:`timeline_from_events` turns them
into the one-row-per-attempt timeline that :func:`el.plots.saga_gantt
<eventlab.plots.saga_gantt>` draws.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from html import escape
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import PlotError
from ..plots.saga import TIMELINE_COLUMNS, saga_gantt
from ..reading import iterate_records
from ..schema import SELECT_RECORD
from ._html import CHANGED, event_html, table, value_text

if TYPE_CHECKING:
    import ipywidgets

    from ..events import RecordedEvent
    from ..store import EventStore

SAGA_PREFIX = "saga-"
# Event type -> (kind, what it does to an attempt: "start", "retry" or an outcome).
_STEP_EVENTS = {
    "StepRequested": ("action", "start"),
    "StepRetried": ("action", "retry"),
    "StepSucceeded": ("action", "succeeded"),
    "StepFailed": ("action", "failed"),
    "StepTimedOut": ("action", "timed_out"),
    "CompensationRequested": ("compensation", "start"),
    "StepCompensated": ("compensation", "compensated"),
    "CompensationFailed": ("compensation", "failed"),
}


def timeline_from_events(events: Iterable[RecordedEvent]) -> pd.DataFrame:
    """Saga events as a timeline: one row per step attempt, in order of its start.

    An attempt starts at its ``StepRequested`` (or ``CompensationRequested``);
    a ``StepRetried`` for an attempt that no request starts marks the start
    instead. It ends at ``StepSucceeded``, ``StepFailed``, ``StepTimedOut`` or
    ``StepCompensated`` (outcomes ``"succeeded"``, ``"failed"``,
    ``"timed_out"``, ``"compensated"``); until then ``finished`` is NaT and
    ``outcome`` None. A step event without ``attempt`` belongs to the step's
    latest attempt (a start without one opens the next attempt). Times are
    ``occurred_at``.

    Returns
    -------
    pandas.DataFrame
        Columns ``transaction_id``, ``step``, ``kind``, ``attempt``,
        ``started``, ``finished``, ``outcome``, the shape ``el.saga_timeline``
        has and ``el.plots.saga_gantt`` draws.
    """
    attempts: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    latest: dict[tuple[str, str, str], int] = {}
    for event in sorted(events, key=lambda e: e.position):
        if event.type not in _STEP_EVENTS:
            continue
        kind, effect = _STEP_EVENTS[event.type]
        data = event.data
        transaction = _transaction_id(event)
        step = str(data.get("step"))
        kind = data.get("kind", kind) if event.type == "StepFailed" else kind
        lane = (transaction, step, kind)
        attempt = data.get("attempt")
        if attempt is None:
            attempt = max(1, latest.get(lane, 0) + (effect in ("start", "retry")))
            if effect == "start" and _opened_by_retry(attempts.get((*lane, attempt - 1))):
                attempt -= 1
        attempt = int(attempt)
        key = (*lane, attempt)
        latest[lane] = max(latest.get(lane, 0), attempt)
        moment = pd.Timestamp(event.occurred_at)
        row = attempts.get(key)
        if effect in ("start", "retry"):
            if row is None:
                attempts[key] = {
                    "started": moment,
                    "finished": pd.NaT,
                    "outcome": None,
                    "requested": effect == "start",
                }
            elif effect == "start" and not row["requested"] and row["outcome"] is None:
                row.update(started=moment, requested=True)  # the request is the real start
        elif row is None:  # an end without a start: a zero-length attempt
            attempts[key] = {
                "started": moment,
                "finished": moment,
                "outcome": effect,
                "requested": True,
            }
        else:
            row.update(finished=moment, outcome=effect)
    rows = [
        (transaction, step, kind, attempt, row["started"], row["finished"], row["outcome"])
        for (transaction, step, kind, attempt), row in attempts.items()
    ]
    frame = pd.DataFrame(rows, columns=TIMELINE_COLUMNS)
    frame["attempt"] = frame["attempt"].astype("int64")
    for column in ("started", "finished"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    # Built apart: pandas would read the Nones of a text column as NaN.
    frame["outcome"] = pd.Series([row[6] for row in rows], dtype=object)
    return frame.sort_values(["started", "transaction_id"], kind="stable", ignore_index=True)


def _opened_by_retry(row: dict[str, Any] | None) -> bool:
    return row is not None and not row["requested"] and row["outcome"] is None


def _transaction_id(event: RecordedEvent) -> str:
    stream = event.stream_id
    return stream[len(SAGA_PREFIX) :] if stream.startswith(SAGA_PREFIX) else stream


def saga_events(store: EventStore, transaction_id: str) -> list[RecordedEvent]:
    """The events of one saga (stream ``saga-<transaction_id>``), in order."""
    stream = (
        transaction_id if transaction_id.startswith(SAGA_PREFIX) else (SAGA_PREFIX + transaction_id)
    )
    events = store.read_stream(stream)
    if not events and not transaction_id.startswith(SAGA_PREFIX):
        events = store.read_stream(transaction_id)  # an id that already is the stream
    if not events:
        raise PlotError(
            f"no saga events for transaction {transaction_id!r} (looked in stream "
            f"{stream!r}); sagas keep their events in streams named saga-<transaction id>, "
            f"and store.streams() lists them"
        )
    return events


def saga_timeline(store: EventStore, transaction_id: str | None = None) -> pd.DataFrame:
    """The timeline of one saga, or of every saga in the store (streams ``saga-*``).

    See :func:`timeline_from_events` for the columns. (The saga module's own
    ``el.saga_timeline`` returns the same shape and supersedes this one.)
    """
    if transaction_id is not None:
        return timeline_from_events(saga_events(store, transaction_id))
    reader = (
        store._cursor()
        .sql(
            SELECT_RECORD.format(src="events")
            + " WHERE starts_with(stream_id, $1) ORDER BY position",
            params=[SAGA_PREFIX],
        )
        .to_arrow_reader(65_536)
    )
    return timeline_from_events(iterate_records(reader))


def saga_step_view(
    store: EventStore, transaction_id: str, step: int, *, events: list | None = None
) -> dict[str, Any]:
    """What the saga stepper shows after the saga's first ``step`` events.

    Returns
    -------
    dict
        ``event`` (the step-th event), ``timeline`` (of the first ``step``
        events), ``events_html`` (every event, the current one highlighted,
        later ones greyed), ``event_html`` (the current one in full) and
        ``png`` (the Gantt chart so far, PNG bytes; its time axis spans the
        whole saga so bars stay put while stepping).
    """
    if events is None:
        events = saga_events(store, transaction_id)
    if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= len(events):
        raise PlotError(f"step must be an int from 1 to {len(events)}, got {step!r}")
    current = events[step - 1]
    timeline = timeline_from_events(events[:step])
    return {
        "event": current,
        "timeline": timeline,
        "events_html": _events_table(events, step),
        "event_html": event_html(current, f"event {step} of {len(events)}: {current.type}"),
        "png": gantt_png(timeline, events, now=current.occurred_at),
    }


def _events_table(events: list, step: int) -> str:
    rows, styles = [], []
    for index, event in enumerate(events, start=1):
        data = event.data
        rows.append(
            (
                str(index),
                escape(event.type),
                value_text(data.get("step", "")) if "step" in data else "",
                str(data.get("attempt", "")),
                escape(pd.Timestamp(event.occurred_at).strftime("%H:%M:%S.%f")[:-3]),
            )
        )
        styles.append(CHANGED if index == step else ("color:#aaa" if index > step else ""))
    return table(["#", "type", "step", "attempt", "occurred_at"], rows, styles)


def gantt_png(timeline: pd.DataFrame, events: list, *, now: Any) -> bytes:
    """The Gantt chart of ``timeline`` as PNG bytes, over the time span of ``events``."""
    from matplotlib.figure import Figure

    # A bare Figure, not pyplot: nothing is left open or shown twice in a notebook.
    figure = Figure(
        figsize=(7, 0.5 * max(2, timeline["step"].nunique()) + 1.4), layout="constrained"
    )
    ax = figure.add_subplot()
    saga_gantt(timeline, ax=ax, lanes="step", now=now)
    times = [pd.Timestamp(e.occurred_at).tz_convert("UTC").tz_localize(None) for e in events]
    low, high = min(times), max(times)
    pad = (high - low) * 0.02 or pd.Timedelta(seconds=1)
    ax.set_xlim(low - pad, high + pad)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def saga_stepper(store: EventStore, transaction_id: str) -> ipywidgets.VBox:
    """A saga's events one by one beside its Gantt chart as it stood after each.

    The logic is :func:`saga_step_view`.

    Returns
    -------
    ipywidgets.VBox
        With attributes ``slider`` (IntSlider over the events, from 1),
        ``previous`` and ``next`` (Buttons), ``events_view`` and ``event_view``
        (HTML) and ``chart`` (an Image holding the PNG).
    """
    import ipywidgets as w

    events = saga_events(store, transaction_id)
    slider = w.IntSlider(min=1, max=len(events), value=1, description="event")
    previous, following = w.Button(description="◀ previous"), w.Button(description="next ▶")
    events_view, event_view = w.HTML(), w.HTML()
    chart = w.Image(format="png")
    views: dict[int, dict[str, Any]] = {}

    def render(*_: Any) -> None:
        if slider.value not in views:
            views[slider.value] = saga_step_view(store, transaction_id, slider.value, events=events)
        view = views[slider.value]
        events_view.value, event_view.value = view["events_html"], view["event_html"]
        chart.value = view["png"]

    slider.observe(render, names="value")
    previous.on_click(lambda _: setattr(slider, "value", max(slider.min, slider.value - 1)))
    following.on_click(lambda _: setattr(slider, "value", min(slider.max, slider.value + 1)))
    render()
    box = w.VBox(
        [
            w.HBox([previous, slider, following]),
            w.HBox([w.VBox([events_view, event_view]), chart]),
        ]
    )
    box.slider, box.previous, box.next = slider, previous, following
    box.events_view, box.event_view, box.chart = events_view, event_view, chart
    return box
