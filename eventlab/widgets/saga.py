"""A saga stepper: a saga's events one by one beside its Gantt chart so far.

Sagas keep their state as events in the stream ``saga-<transaction id>`` (see
:mod:`eventlab.saga.state`); :func:`el.saga.timeline_from_events
<eventlab.saga.timeline_from_events>` turns them into the one-row-per-attempt
timeline that :func:`el.plots.saga_gantt <eventlab.plots.saga_gantt>` draws.
"""

from __future__ import annotations

import io
from html import escape
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import PlotError, SagaError
from ..plots.saga import saga_gantt
from ..saga.timeline import saga_events as _saga_events
from ..saga.timeline import timeline_from_events
from ._html import CHANGED, event_html, table, value_text

if TYPE_CHECKING:
    import ipywidgets

    from ..events import RecordedEvent
    from ..store import EventStore


def saga_events(store: EventStore, transaction_id: str) -> list[RecordedEvent]:
    """The events of one saga (stream ``saga-<transaction_id>``), in order."""
    try:
        return _saga_events(store, transaction_id)
    except SagaError as exc:
        raise PlotError(str(exc)) from None


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
